"""Evaluation: score generators on a paired dataset (FID, KID, AIC, AIS, IIS with bootstrap intervals)
and render the paper's Table 1 comparison as a self-contained report.

Generation goes through the library runners (:mod:`sound2image.diffusion.runner`,
:mod:`sound2image.transformer.runner`); the metrics are in :mod:`sound2image.metrics`.
"""
