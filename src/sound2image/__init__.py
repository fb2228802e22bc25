"""sound2image: turn sounds into pictures.

Layers (imports point down only): ``cli`` -> ``training`` -> ``diffusion``/``transformer`` ->
``encoders``/``modules``/``metrics`` -> ``data`` -> ``audio`` -> ``outputs``/``errors``.
Within a layer a module may use its neighbours (a trainer uses the system it trains).
"""

__version__ = "0.1.0"
