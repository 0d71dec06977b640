"""Training: one explicit loop, its config, checkpoints and losses."""

from genrec.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from genrec.training.losses import bce, bpr, sampled_softmax, softmax_cross_entropy
from genrec.training.loop import TrainConfig, TrainResult, train

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "softmax_cross_entropy",
    "sampled_softmax",
    "bpr",
    "bce",
]
