"""Training: one explicit loop, its config, checkpoints and losses."""

from genrec.training.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from genrec.training.losses import bce, bpr, sampled_softmax, softmax_cross_entropy
from genrec.training.loop import ResumeMismatchError, TrainConfig, TrainResult, train

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "ResumeMismatchError",
    "Checkpoint",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "softmax_cross_entropy",
    "sampled_softmax",
    "bpr",
    "bce",
]
