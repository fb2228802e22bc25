"""Evaluation: score generators on a paired dataset (FID, KID, AIC, AIS, IIS with bootstrap intervals)
and render the paper's Table 1 comparison as a self-contained report.

>>> from sound2image.evaluation import EvaluationConfig, evaluate, parse_systems
>>> config = EvaluationConfig(data="av-digits/pairs.csv", out="report/",
...                           systems=parse_systems("transformer:runs/it/model"),
...                           classifier="runs/classifier", features="classifier:runs/classifier")
>>> results = evaluate(config)          # the results.json dict; report/report.html is written too

Generation goes through the library runners (:mod:`sound2image.diffusion.runner`,
:mod:`sound2image.transformer.runner`) into a resumable cache (:mod:`.generation`); the metrics are in
:mod:`sound2image.metrics`, their use per system in :mod:`.scoring`, the page in :mod:`.report`.
"""

from sound2image.evaluation.run import EvaluationConfig, evaluate
from sound2image.evaluation.systems import SystemSpec, paper_table1, parse_systems

__all__ = ["EvaluationConfig", "SystemSpec", "evaluate", "paper_table1", "parse_systems"]
