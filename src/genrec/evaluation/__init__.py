"""Evaluation: the protocol, ranking metrics and the batched evaluator."""

from genrec.evaluation.evaluator import EvalResult, evaluate
from genrec.evaluation.metrics import METRICS
from genrec.evaluation.protocol import Protocol

__all__ = ["EvalResult", "METRICS", "Protocol", "evaluate"]
