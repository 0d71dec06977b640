"""Answering requests with raw ids: recommendations, similar items, cold start, filters.

:class:`ModelService` wraps one :class:`~genrec.serving.bundle.Bundle` and converts raw ids at
the edge; :class:`ModelPool` holds several services side by side and reloads them from disk
without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genrec.data.interactions import Histories
from genrec.serving.bundle import Bundle, BundleError, load_bundle

__all__ = ["ModelPool", "ModelService", "Query", "Ranked", "UnknownItemError", "UnknownModelError"]

_log = logging.getLogger(__name__)


class UnknownItemError(KeyError):
    """Raw item ids that the model's catalogue does not know."""

    def __init__(self, items: Sequence[str], model: str) -> None:
        self.items = list(items)
        shown = ", ".join(repr(i) for i in self.items[:10])
        more = f" and {len(self.items) - 10} more" if len(self.items) > 10 else ""
        self.message = f"unknown item id(s) for model {model!r}: {shown}{more}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class UnknownModelError(KeyError):
    """A model name that is not served."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.message = f"unknown model {name!r}; served: {', '.join(known) or 'none'}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Query:
    """A checked request on dense ids, ready to be ranked (possibly in a batch).

    Attributes:
        history: Dense history, oldest first.
        k: Items wanted.
        exclude_seen: Drop the history's items.
        blocked_categories: Categories never returned.
        blocked_items: Raw item ids never returned.
        categories: If set, only items in one of these categories.
        cold_start: Answer with popularity (no history).
        reason: Why the popularity answer.
        exclude_item: A dense item never returned (the query item of ``similar``).
    """

    history: np.ndarray
    k: int
    exclude_seen: bool
    blocked_categories: tuple[str, ...]
    blocked_items: tuple[str, ...]
    categories: tuple[str, ...] | None
    cold_start: bool
    reason: str | None
    exclude_item: int | None


@dataclass(frozen=True)
class Ranked:
    """A ranked answer on dense ids.

    Attributes:
        items: Dense item ids, best first.
        scores: Their scores.
        cold_start: True when the answer is the popularity fallback.
        reason: Why the fallback was used (None otherwise).
        history: The dense history the answer was computed from.
    """

    items: np.ndarray
    scores: np.ndarray
    cold_start: bool
    reason: str | None
    history: np.ndarray


class ModelService:
    """Recommendations and similar items from one bundle, on raw ids.

    Args:
        bundle: A loaded bundle.
    """

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.loaded_at = time.time()
        n = bundle.n_items
        # Inverted index category -> dense items, built once: filters cost one index_fill_.
        cat_items: dict[str, list[int]] = {}
        for i, cats in enumerate(bundle.categories):
            for c in cats:
                cat_items.setdefault(c, []).append(i)
        self._cat_items = {c: torch.tensor(v, dtype=torch.long) for c, v in cat_items.items()}
        self._pop_scores = torch.from_numpy(bundle.popularity.astype(np.float32))  # (I,)
        self._n_items = n

    @property
    def name(self) -> str:
        """Name the model is served under."""
        return self.bundle.name

    def describe(self) -> dict[str, Any]:
        """What ``GET /models`` shows of this model."""
        b = self.bundle
        return {
            "name": b.name, "kind": b.model.config.kind, "dataset": b.manifest.get("dataset"),
            "n_users": b.n_users, "n_items": b.n_items,
            "config": b.model.config.model_dump(mode="json"),
            "created_at": b.manifest.get("created_at"),
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
            "path": str(b.path) if b.path else None,
            "categories": sorted(self._cat_items),
            "sample_users": b.user_ids[:50],
        }

    # -- id conversion ------------------------------------------------------------------------
    def item_index(self, raw: Sequence[str]) -> np.ndarray:
        """Dense ids of raw item ids.

        Raises:
            UnknownItemError: If any id is not in the catalogue.
        """
        idx = self.bundle.item_index
        unknown = [r for r in raw if r not in idx]
        if unknown:
            raise UnknownItemError(unknown, self.name)
        return np.fromiter((idx[r] for r in raw), dtype=np.int64, count=len(raw))

    def item_info(self, dense: Sequence[int]) -> list[dict[str, Any]]:
        """Raw id, title and categories of dense item ids."""
        b = self.bundle
        return [{"item": b.item_ids[i], "title": b.titles[i], "categories": b.categories[i]}
                for i in dense]

    def known_user(self, raw: str) -> int | None:
        """Dense id of a raw user id, or None."""
        return self.bundle.user_index.get(raw)

    # -- ranking ------------------------------------------------------------------------------
    def _block(self, scores: torch.Tensor, blocked_categories: Sequence[str],
               blocked_items: Sequence[str], categories: Sequence[str] | None) -> None:
        """Set blocked items to ``-inf`` in the ``(I,)`` score vector (in place)."""
        neg = float("-inf")
        for c in blocked_categories:
            idx = self._cat_items.get(c)
            if idx is not None:
                scores.index_fill_(0, idx, neg)
        if blocked_items:
            known = [self.bundle.item_index[r] for r in blocked_items
                     if r in self.bundle.item_index]  # blocking an unknown item is harmless
            if known:
                scores.index_fill_(0, torch.tensor(known, dtype=torch.long), neg)
        if categories is not None:
            keep = torch.zeros(self._n_items, dtype=torch.bool)
            for c in categories:
                idx = self._cat_items.get(c)
                if idx is not None:
                    keep[idx] = True
            scores.masked_fill_(~keep, neg)

    @staticmethod
    def _top(scores: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, scores.shape[0])
        top = torch.topk(scores, k)
        vals = top.values.float().numpy()
        keep = np.isfinite(vals)  # -inf: excluded or blocked; never returned
        return top.indices.numpy()[keep].astype(np.int64), vals[keep]

    def _model_scores(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """Model scores for several histories at once, shape ``(B, I)``."""
        lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
        h = Histories(np.zeros(len(histories), dtype=np.int64),
                      np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                      np.concatenate(histories).astype(np.int64), self._n_items)
        with torch.inference_mode():
            s = self.bundle.model.score(h).float()                      # (B, I)
        # A model can emit NaN (e.g. an empty history through a normaliser); NaN must not
        # outrank real scores nor reach the JSON encoder.
        return torch.nan_to_num(s, nan=float("-inf"), posinf=float("-inf"), neginf=float("-inf"))

    def prepare(self, *, user: str | None = None, history: Sequence[str] | None = None,
                k: int = 10, exclude_seen: bool = True, blocked_categories: Sequence[str] = (),
                blocked_items: Sequence[str] = (), categories: Sequence[str] | None = None
                ) -> Query:
        """Check and convert a recommendation request (the cheap, per-request part).

        Raises:
            UnknownItemError: If the explicit history has an unknown item.
        """
        extra = self.item_index(history) if history else np.zeros(0, dtype=np.int64)
        stored = np.zeros(0, dtype=np.int64)
        reason = None
        if user is not None:
            dense = self.known_user(user)
            if dense is None:
                reason = "unknown user"
            else:
                stored = self.bundle.history(dense)
        hist = np.concatenate([stored, extra]) if len(extra) else stored
        cold = len(hist) == 0
        return Query(hist, k, exclude_seen, tuple(blocked_categories), tuple(blocked_items),
                     None if categories is None else tuple(categories), cold,
                     (reason or "empty history") if cold else None, None)

    def prepare_similar(self, item: str, *, k: int = 10, blocked_categories: Sequence[str] = (),
                        blocked_items: Sequence[str] = (),
                        categories: Sequence[str] | None = None) -> Query:
        """Check and convert a similar-items request.

        Raises:
            UnknownItemError: If ``item`` is not in the catalogue.
        """
        hist = self.item_index([item])
        return Query(hist, k, False, tuple(blocked_categories), tuple(blocked_items),
                     None if categories is None else tuple(categories), False, None, int(hist[0]))

    def rank(self, queries: Sequence[Query]) -> list[Ranked]:
        """Answer prepared queries; the model scores all warm ones in one batch."""
        warm = [i for i, q in enumerate(queries) if not q.cold_start]
        scores = self._model_scores([queries[i].history for i in warm]) if warm else None
        row = {i: j for j, i in enumerate(warm)}
        out = []
        for i, q in enumerate(queries):
            s = self._pop_scores.clone() if q.cold_start else scores[row[i]]  # type: ignore[index]
            if q.exclude_seen and len(q.history):
                s.index_fill_(0, torch.from_numpy(q.history), float("-inf"))
            if q.exclude_item is not None:
                s[q.exclude_item] = float("-inf")
            self._block(s, q.blocked_categories, q.blocked_items, q.categories)
            items, vals = self._top(s, q.k)
            out.append(Ranked(items, vals, q.cold_start, q.reason, q.history))
        return out

    def recommend(self, *, user: str | None = None, history: Sequence[str] | None = None,
                  k: int = 10, exclude_seen: bool = True,
                  blocked_categories: Sequence[str] = (), blocked_items: Sequence[str] = (),
                  categories: Sequence[str] | None = None) -> Ranked:
        """Top-``k`` items for a known user, an explicit history, or both (appended).

        An unknown user without a history, or an empty history, gets the popularity answer
        with ``cold_start=True``.

        Raises:
            UnknownItemError: If the explicit history has an unknown item.
        """
        return self.rank([self.prepare(user=user, history=history, k=k,
                                       exclude_seen=exclude_seen,
                                       blocked_categories=blocked_categories,
                                       blocked_items=blocked_items, categories=categories)])[0]

    def similar(self, item: str, *, k: int = 10, blocked_categories: Sequence[str] = (),
                blocked_items: Sequence[str] = (),
                categories: Sequence[str] | None = None) -> Ranked:
        """Items most related to ``item``: the model's scores for the one-item history.

        For EASE or ItemKNN that is the item-item weight row; for a sequential model the
        next-item distribution after ``item``. The item itself is never returned.

        Raises:
            UnknownItemError: If ``item`` is not in the catalogue.
        """
        return self.rank([self.prepare_similar(item, k=k, blocked_categories=blocked_categories,
                                               blocked_items=blocked_items,
                                               categories=categories)])[0]


class ModelPool:
    """Several models served side by side, each reloadable from its folder.

    Args:
        sources: ``(name or None, folder)`` pairs; a None name takes the manifest's.

    Raises:
        BundleError: If a bundle fails verification.
        ValueError: If two models get the same name.
    """

    def __init__(self, sources: Sequence[tuple[str | None, Path]]) -> None:
        self._lock = threading.Lock()
        services: dict[str, ModelService] = {}
        paths: dict[str, tuple[str | None, Path]] = {}
        for name, path in sources:
            svc = ModelService(load_bundle(path, name=name))
            if svc.name in services:
                raise ValueError(f"two models are named {svc.name!r}: name them NAME=DIR")
            services[svc.name] = svc
            paths[svc.name] = (name, Path(path))
        self._services = services
        self._paths = paths

    @classmethod
    def from_bundles(cls, bundles: Sequence[Bundle]) -> ModelPool:
        """A pool of already loaded bundles (reload re-reads those with a path)."""
        pool = cls([])
        for b in bundles:
            if b.name in pool._services:
                raise ValueError(f"two models are named {b.name!r}")
            pool._services[b.name] = ModelService(b)
            if b.path is not None:
                pool._paths[b.name] = (b.name, b.path)
        return pool

    @property
    def names(self) -> list[str]:
        """Served model names; the first is the default."""
        return list(self._services)

    def get(self, name: str | None = None) -> ModelService:
        """The service of model ``name`` (the default model when None).

        Raises:
            UnknownModelError: If no model has that name.
        """
        services = self._services  # one read: a concurrent reload swaps the whole dict
        if name is None:
            if not services:
                raise UnknownModelError("<default>", [])
            return next(iter(services.values()))
        svc = services.get(name)
        if svc is None:
            raise UnknownModelError(name, list(services))
        return svc

    def services(self) -> list[ModelService]:
        """All services, default first."""
        return list(self._services.values())

    def reload(self, name: str | None = None) -> list[str]:
        """Re-read model ``name`` (all models when None) from disk and swap it in.

        Every bundle is loaded and verified before any is swapped in, so a failure leaves
        every model as it was.

        Returns:
            The reloaded names.

        Raises:
            UnknownModelError: If ``name`` is not served or has no folder.
            BundleError: If a bundle fails verification (nothing is swapped).
        """
        with self._lock:
            targets = list(self._paths) if name is None else [name]
            for t in targets:
                if t not in self._paths:
                    raise UnknownModelError(t, list(self._paths))
            fresh: dict[str, ModelService] = {}
            for t in targets:
                given, path = self._paths[t]
                svc = ModelService(load_bundle(path, name=given or t))
                if svc.name != t:
                    raise BundleError(f"{path}: now names its model {svc.name!r}, served as {t!r}")
                fresh[t] = svc
            self._services = {n: fresh.get(n, s) for n, s in self._services.items()}
            _log.info("reloaded %s", ", ".join(targets))
            return targets
