"""The ranking stage: multi-task towers, the Clippy-trained ranker and the two-stage model."""

from genrec.models.ranker.features import DENSE_FEATURES
from genrec.models.ranker.net import HEADS, RankerConfig, RankerNet
from genrec.models.ranker.towers import DSelectKGate, MultiTaskTower
from genrec.models.ranker.two_stage import TwoStage, TwoStageConfig

__all__ = ["DENSE_FEATURES", "HEADS", "DSelectKGate", "MultiTaskTower", "RankerConfig",
           "RankerNet", "TwoStage", "TwoStageConfig"]
