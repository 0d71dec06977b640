"""Most-popular baseline: every user gets the items with the most training interactions."""

from __future__ import annotations

from typing import Literal

import torch

from genrec.data.interactions import Histories, Interactions
from genrec.models.base import FitContext, ModelConfig, Recommender

__all__ = ["PopConfig", "Popularity"]


class PopConfig(ModelConfig):
    """Popularity has no hyperparameters."""

    kind: Literal["pop"] = "pop"


class Popularity(Recommender[PopConfig]):
    """Scores each item by its number of training interactions."""

    config_cls = PopConfig
    seed_dependent = False  # nothing is drawn at random: every seed fits the same model

    def _fit(self, train: Interactions, ctx: FitContext) -> None:
        self.counts_ = torch.from_numpy(train.item_counts()).float()  # (I,)

    def _score(self, histories: Histories) -> torch.Tensor:
        return self.counts_.expand(len(histories), -1).clone()     # (B, I)

    def _state(self) -> dict[str, torch.Tensor]:
        return {"counts": self.counts_}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.counts_ = state["counts"]
