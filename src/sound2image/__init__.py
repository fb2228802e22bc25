"""sound2image: turn sounds into pictures.

Layers (imports point down only): ``cli``/``webui`` -> ``diffusion``/``transformer``/``training``
-> ``encoders``/``modules``/``metrics`` -> ``data`` -> ``audio`` -> ``errors``.
"""

__version__ = "0.1.0"
