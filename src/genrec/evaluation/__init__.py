"""Evaluation: the protocol, ranking metrics and the batched evaluator.

Holistic evaluation lives in submodules: ``beyond`` (coverage, Gini, novelty, diversity,
...), ``fairness`` (user groups, item exposure), ``stats`` (bootstrap, paired tests, Holm),
``catalogue`` / ``risks`` / ``grounding`` (generative risks), ``compare`` and ``report``
(``genrec compare`` / ``genrec report``; imported on demand, they pull in models and
matplotlib).
"""

from genrec.evaluation.catalogue import Catalogue
from genrec.evaluation.evaluator import EvalResult, evaluate
from genrec.evaluation.metrics import METRICS
from genrec.evaluation.protocol import Protocol

__all__ = ["Catalogue", "EvalResult", "METRICS", "Protocol", "evaluate"]
