"""sound2image: turn sounds into pictures.

Layers, top to bottom (imports point down only: ``cli`` -> ``training``/``evaluation`` ->
``diffusion``/``transformer`` -> ``encoders``/``modules``/``metrics`` -> ``data`` -> ``audio`` ->
``outputs``/``errors`` and the other bottom modules). ``tests/test_layering.py`` reads this table, so
the table and the test cannot drift:

    1. cli webui
    2. training evaluation
    3. diffusion transformer
    4. encoders modules metrics
    5. data
    6. audio
    7. outputs errors validation hub persistence devices seeds atomic

A module may import from its own layer or a lower one, never a higher one; within a layer a module may
use its neighbours (a trainer uses the system it trains). Nothing outside ``cli`` imports ``cli``, and
``errors`` imports nothing from the package. This root module (``__version__``) is importable from any
layer.
"""

__version__ = "0.1.0"
