"""webui layer: the web app of ``sound2image serve`` (Gradio, the ``app`` extra).

- :mod:`sound2image.webui.jobs`: a page's values -> library calls -> PNGs in a per-request temporary
  folder (no Gradio; the model cache, limits, generation, regeneration, cancelling).
- :mod:`sound2image.webui.app`: the page itself (:func:`~sound2image.webui.app.build_app`) and its
  event handlers; :func:`~sound2image.webui.app.start` serves it.
"""
