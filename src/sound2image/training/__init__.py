"""Training: shared loop parts and one trainer per model.

* :mod:`~sound2image.training.checkpoints` — atomic checkpoint directories, total limit, ``latest``; the
  resume check (changed settings are refused and named) and the NaN/Inf guard.
* :mod:`~sound2image.training.rundir` — the run directory both trainers write (``training_config.json``,
  ``split.json``, ``metrics.jsonl``, ``trainer_state.json`` ...), its read/write functions, and the one
  ``TrainResult``.
* :mod:`~sound2image.training.schedules` — learning-rate shapes and AdamW, for every trainer.
* :mod:`~sound2image.training.soundiff` — fine-tuning SounDiff (``SounDiffTrainConfig``, ``train``), a
  package of small modules, with
  :mod:`~sound2image.training.objective` (the loss), :mod:`~sound2image.training.cache` (latents and
  audio embeddings computed once) and :mod:`~sound2image.training.export` (what generation loads).
* :mod:`~sound2image.training.transformer` — training the Image Transformer (``train_transformer``).

Nothing heavy is imported here, so ``import sound2image.training.checkpoints`` stays cheap.
"""
