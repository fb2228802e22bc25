"""Training: shared loop parts and one trainer per model.

* :mod:`~sound2image.training.checkpoints` — atomic checkpoint directories, total limit, ``latest``.
* :mod:`~sound2image.training.soundiff` — fine-tuning SounDiff (``SounDiffTrainConfig``, ``train``), with
  :mod:`~sound2image.training.objective` (the loss), :mod:`~sound2image.training.cache` (latents and
  audio embeddings computed once) and :mod:`~sound2image.training.export` (what generation loads).

Nothing heavy is imported here, so ``import sound2image.training.checkpoints`` stays cheap.
"""
