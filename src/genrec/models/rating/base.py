"""The base of explicit-rating models: ``predict(users, items) -> ratings``.

A rating model is also a :class:`~genrec.models.base.Recommender`: its ``score`` is the
predicted rating of every item, so it ranks items (and serves) like any other model. Users or
items outside the training id space get the baseline terms only (global mean plus whatever
biases are known), never an error.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch

from genrec.data.interactions import Columns, Histories, Interactions
from genrec.models.base import ModelConfig, NotFittedError, Recommender

__all__ = ["BestEpoch", "RatingModel", "known", "rating_triples"]

C = TypeVar("C", bound=ModelConfig)


def rating_triples(data: Interactions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(users, items, ratings)`` tensors of an interaction table with ratings.

    Raises:
        ValueError: If the table has no ``rating`` column.
    """
    frame = data.frame
    if Columns.rating not in frame.columns:
        raise ValueError("rating models need explicit ratings: the training interactions "
                         "have no 'rating' column")
    return (torch.from_numpy(frame[Columns.user].to_numpy().astype(np.int64)),
            torch.from_numpy(frame[Columns.item].to_numpy().astype(np.int64)),
            torch.from_numpy(frame[Columns.rating].to_numpy().astype(np.float32)))


def known(ids: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask of ids in [0, n), ids with the others replaced by 0)`` for safe gathers."""
    ok = (ids >= 0) & (ids < n)
    return ok, torch.where(ok, ids, torch.zeros_like(ids))


class BestEpoch:
    """Keeps the best validation epoch of a hand-written training loop (higher is better).

    ``update(epoch, score, state)`` copies ``state()`` when ``score`` improves and returns
    True when ``patience`` epochs passed without improvement (time to stop).
    """

    def __init__(self, patience: int | None) -> None:
        self.patience = patience
        self.best, self.best_epoch, self.state = -float("inf"), None, None
        self._waited = 0

    def update(self, epoch: int, score: float,
               state: Callable[[], dict[str, torch.Tensor]]) -> bool:
        if score > self.best:
            # Training updates tensors in place: keep a copy.
            self.best, self.best_epoch, self._waited = score, epoch, 0
            self.state = {k: v.detach().clone() for k, v in state().items()}
            return False
        self._waited += 1
        return self.patience is not None and self._waited >= self.patience


class RatingModel(Recommender[C]):
    """A model that predicts explicit ratings (learned attributes end in ``_``)."""

    def predict(self, users: np.ndarray | torch.Tensor, items: np.ndarray | torch.Tensor,
                *, batch_size: int = 65536) -> np.ndarray:
        """Predicted ratings of ``(users[k], items[k])`` pairs (unclipped).

        Args:
            users: Dense user ids; an unknown id (``-1``, or beyond the training space) gets
                the baseline prediction.
            items: Dense item ids, same length.
            batch_size: Pairs per chunk (bounds memory).

        Returns:
            Float32 array of the same length.

        Raises:
            NotFittedError: Before ``fit``/``load``.
            ValueError: If the two arrays differ in length.
        """
        if not hasattr(self, "n_items_"):
            raise NotFittedError(type(self).__name__)
        # A copy: arrays handed out by polars are read-only, which torch warns about.
        u, i = (x.long().reshape(-1) if isinstance(x, torch.Tensor)
                else torch.as_tensor(np.array(x, dtype=np.int64)).reshape(-1)
                for x in (users, items))
        if len(u) != len(i):
            raise ValueError(f"{len(u)} users but {len(i)} items")
        with torch.no_grad():
            out = [self._predict(u[s:s + batch_size], i[s:s + batch_size]).float().cpu()
                   for s in range(0, len(u), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)

    @abstractmethod
    def _predict(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Predictions for aligned id tensors ``(N,)`` -> ``(N,)``."""

    def _score(self, histories: Histories) -> torch.Tensor:
        # Every item of every user, as one block of pairs: (B * I,) -> (B, I).
        n = self.n_items_
        users = torch.as_tensor(histories.users, dtype=torch.long).repeat_interleave(n)
        items = torch.arange(n).repeat(len(histories))
        return torch.from_numpy(self.predict(users, items)).reshape(len(histories), n)
