"""The one model interface every genrec model implements.

A model stores only its validated config in ``__init__``; ``fit`` learns attributes whose
names end in ``_``; ``score`` returns a dense ``(B, n_items)`` block; ``recommend`` is written
once, here, for every model; ``save``/``load`` use JSON + safetensors, never pickle.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, Self, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from safetensors.torch import load, save_file

from genrec._io import atomic_write, atomic_write_text
from genrec.data.interactions import EvalSet, Histories, Interactions

__all__ = ["ModelConfig", "Recommender", "RecList", "NotFittedError"]

_log = logging.getLogger(__name__)


class NotFittedError(RuntimeError):
    """Raised when a model is used before ``fit`` (or ``load``)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} is not fitted: call fit() or load() first")


class ModelConfig(BaseModel):
    """Base of every model config: validated, no unknown keys."""

    model_config = ConfigDict(extra="forbid")
    kind: str


@dataclass(frozen=True)
class RecList:
    """Top-k recommendations for a batch of users.

    Attributes:
        users: Dense user ids, shape ``(B,)``.
        items: Recommended item ids, best first, shape ``(B, k)``; ``-1`` where fewer than
            ``k`` items could be recommended.
        scores: Their scores, shape ``(B, k)``.
    """

    users: np.ndarray
    items: np.ndarray
    scores: np.ndarray

    @classmethod
    def top_k(cls, users: np.ndarray, scores: torch.Tensor, k: int) -> RecList:
        """The ``k`` best columns of ``scores`` (``-inf`` columns are never returned)."""
        k = min(k, scores.shape[1])
        top = torch.topk(scores, k, dim=1)
        items = top.indices.cpu().numpy().astype(np.int64)
        vals = top.values.float().cpu().numpy()
        items[~np.isfinite(vals)] = -1
        return cls(np.asarray(users), items, vals)


C = TypeVar("C", bound=ModelConfig)


class Recommender(ABC, Generic[C]):
    """Base class of every model.

    Args:
        config: A validated config; defaults to ``config_cls()``.
        **overrides: Fields that replace those of ``config``.
    """

    config_cls: ClassVar[type[ModelConfig]]

    def __init__(self, config: C | None = None, **overrides: Any) -> None:
        merged = (config or self.config_cls()).model_dump() | overrides
        self.config: C = self.config_cls.model_validate(merged)  # type: ignore[assignment]

    # -- learning ---------------------------------------------------------------------------
    def fit(self, train: Interactions, valid: EvalSet | None = None) -> Self:
        """Learn from ``train``; models that early-stop use ``valid``.

        Returns:
            ``self``.
        """
        self.n_users_ = train.n_users
        self.n_items_ = train.n_items
        self._fit(train, valid)
        return self

    @abstractmethod
    def _fit(self, train: Interactions, valid: EvalSet | None) -> None: ...

    # -- inference --------------------------------------------------------------------------
    def score(self, histories: Histories, items: np.ndarray | None = None) -> torch.Tensor:
        """Score items for a batch of users.

        Args:
            histories: The users and their histories.
            items: Item ids to score; all items when None.

        Returns:
            Float tensor ``(B, n_items)`` or ``(B, len(items))``; higher is better.

        Raises:
            NotFittedError: Before ``fit``/``load``.
            ValueError: If the histories use another item id space.
        """
        if not hasattr(self, "n_items_"):
            raise NotFittedError(type(self).__name__)
        if histories.n_items != self.n_items_:
            raise ValueError(f"histories have {histories.n_items} items, model has {self.n_items_}")
        scores = self._score(histories)
        return scores if items is None else scores[:, torch.as_tensor(items, dtype=torch.long)]

    @abstractmethod
    def _score(self, histories: Histories) -> torch.Tensor: ...

    def recommend(self, histories: Histories, k: int = 10, *, exclude_seen: bool = True) -> RecList:
        """Top-``k`` items per user, best first, optionally excluding items already seen."""
        scores = self.score(histories)
        if exclude_seen:
            scores = histories.mask_seen(scores)
        return RecList.top_k(histories.users, scores, k)

    # -- persistence ------------------------------------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        """Learned tensors to save (override in models with learned state)."""
        return {}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`_state` returned."""

    def save(self, path: Path) -> None:
        """Write ``config.json``, ``meta.json`` and ``state.safetensors`` into ``path``."""
        if not hasattr(self, "n_items_"):
            raise NotFittedError(type(self).__name__)
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self._state().items()}
        atomic_write(path / "state.safetensors", lambda p: save_file(state, str(p)))
        atomic_write_text(path / "meta.json", json.dumps(
            {"n_users_": self.n_users_, "n_items_": self.n_items_}))
        atomic_write_text(path / "config.json", self.config.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a model written by :meth:`save` (no code is executed: JSON + safetensors)."""
        path = Path(path)
        model = cls(cls.config_cls.model_validate_json((path / "config.json").read_text()))
        meta = json.loads((path / "meta.json").read_text())
        model.n_users_, model.n_items_ = meta["n_users_"], meta["n_items_"]
        # Read into memory rather than memory-map: a file truncated later (e.g. while served)
        # must not be able to crash the process with SIGBUS.
        model._load_state(load((path / "state.safetensors").read_bytes()))
        return model

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items() if k != "kind")
        return f"{type(self).__name__}({params})"
