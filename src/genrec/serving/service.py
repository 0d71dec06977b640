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
from genrec.models import ranking
from genrec.serving.ann import recommend_ann
from genrec.serving.bundle import Bundle, BundleError, load_bundle
from genrec.serving.signing import SignatureVerifier

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
        user: The dense user id the model sees. A known user carries their own id (also when
            the request appends items to their stored history); a history-only request (no
            user, or an unknown user with an explicit history) and ``similar`` carry ``-1``,
            the anonymous user: factor models fold such a user in from the history.
        history: Dense history, oldest first.
        k: Items wanted.
        exclude_seen: Drop the history's items.
        block: Boolean mask ``(I,)`` of items never returned (blocked categories and items,
            the query item of ``similar``), or None.
        allow: Boolean mask ``(I,)``: only these items may be returned (the ``categories``
            allow-list), or None for all items.
        cold_start: Answer with popularity (no history).
        reason: Why the popularity answer.
    """

    user: int
    history: np.ndarray
    k: int
    exclude_seen: bool
    block: torch.Tensor | None
    allow: torch.Tensor | None
    cold_start: bool
    reason: str | None


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


def _histories(queries: Sequence[Query], n_items: int) -> Histories:
    """The queries' users and histories as one batch."""
    lengths = np.fromiter((len(q.history) for q in queries), dtype=np.int64, count=len(queries))
    return Histories(np.fromiter((q.user for q in queries), dtype=np.int64, count=len(queries)),
                     np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                     np.concatenate([q.history for q in queries]).astype(np.int64), n_items)


def _stack(masks: Sequence[torch.Tensor | None], n_items: int, *, fill: bool
           ) -> torch.Tensor | None:
    """Per-query ``(I,)`` masks as one ``(B, I)`` mask (a missing one is all ``fill``), or
    None when no query has one."""
    if all(m is None for m in masks):
        return None
    if len(masks) == 1:
        return masks[0]
    default = torch.full((n_items,), fill, dtype=torch.bool)
    return torch.stack([default if m is None else m for m in masks])


class ModelService:
    """Recommendations and similar items from one bundle, on raw ids.

    Args:
        bundle: A loaded bundle.
    """

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.loaded_at = time.time()
        n = bundle.n_items
        # Inverted index category -> dense items, built once: a filter mask costs one
        # indexed assignment per category.
        cat_items: dict[str, list[int]] = {}
        for i, cats in enumerate(bundle.categories):
            for c in cats:
                cat_items.setdefault(c, []).append(i)
        self._cat_items = {c: torch.tensor(v, dtype=torch.long) for c, v in cat_items.items()}
        self._pop_scores = torch.from_numpy(bundle.popularity.astype(np.float32))  # (I,)
        self._n_items = n
        self.last_error: str | None = None
        """The error of the latest failed ranking call (None once one succeeds again)."""

    def smoke(self) -> None:
        """Answer a few real requests before this model goes live: a known user, the cold-start
        fallback and similar items.

        Raises:
            BundleError: If an answer fails, has an id outside the catalogue, a NaN score or a
                non-finite best score (e.g. weights that load but do not fit the model).
        """
        b = self.bundle
        with_history = np.flatnonzero(np.diff(b.hist_indptr) > 0)
        checks: list[tuple[str, Query]] = [("cold start", self.prepare(k=10))]
        if len(with_history):
            checks.append(("known user", self.prepare(user=b.user_ids[int(with_history[0])],
                                                      k=10)))
        if b.n_items > 1:
            checks.append(("similar items", self.prepare_similar(b.item_ids[0], k=10)))
        for label, q in checks:
            try:
                r = self.rank([q])[0]
            except Exception as e:  # noqa: BLE001 - any failure refuses the bundle
                raise BundleError(f"{b.path or b.name}: smoke test ({label}) failed: "
                                  f"{type(e).__name__}: {e}") from e
            bad = None
            # Items not excluded by the history (the item itself for similar items).
            left = b.n_items - (len(np.unique(q.history)) if q.exclude_seen or label ==
                                "similar items" else 0)
            if len(r.items) == 0 and left > 0:
                bad = "no items returned (NaN or masked scores?)"
            elif len(r.items) and (r.items.min() < 0 or r.items.max() >= b.n_items):
                bad = "item ids outside the catalogue"
            elif np.isnan(r.scores).any() or (len(r.scores) and not np.isfinite(r.scores[0])):
                bad = "non-finite scores"
            if bad:
                raise BundleError(f"{b.path or b.name}: smoke test ({label}) failed: {bad}")

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
    def _masks(self, blocked_categories: Sequence[str], blocked_items: Sequence[str],
               categories: Sequence[str] | None, extra_block: Sequence[int] = ()
               ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The ``(block, allow)`` boolean masks ``(I,)`` of a request's filters (None: no
        filter). Unknown categories and unknown blocked items are ignored."""
        block = None
        idx = [self._cat_items[c] for c in blocked_categories if c in self._cat_items]
        index = self.bundle.item_index
        # Blocking an unknown item is harmless.
        items = [index[r] for r in blocked_items if r in index]
        items.extend(int(i) for i in extra_block)
        if items:
            idx.append(torch.tensor(items, dtype=torch.long))
        if idx:
            block = torch.zeros(self._n_items, dtype=torch.bool)
            block[torch.cat(idx)] = True
        allow = None
        if categories is not None:
            allow = torch.zeros(self._n_items, dtype=torch.bool)
            keep = [self._cat_items[c] for c in categories if c in self._cat_items]
            if keep:
                allow[torch.cat(keep)] = True
        return block, allow

    def prepare(self, *, user: str | None = None, history: Sequence[str] | None = None,
                k: int = 10, exclude_seen: bool = True, blocked_categories: Sequence[str] = (),
                blocked_items: Sequence[str] = (), categories: Sequence[str] | None = None
                ) -> Query:
        """Check and convert a recommendation request (the cheap, per-request part).

        A known user is ranked under their dense id with their stored history (plus the
        explicit ``history``, appended); anyone else with a history is the anonymous user
        ``-1``, ranked from that history alone.

        Raises:
            UnknownItemError: If the explicit history has an unknown item.
        """
        extra = self.item_index(history) if history else np.zeros(0, dtype=np.int64)
        stored = np.zeros(0, dtype=np.int64)
        reason = None
        dense = None
        if user is not None:
            dense = self.known_user(user)
            if dense is None:
                reason = "unknown user"
            else:
                stored = self.bundle.history(dense)
        hist = np.concatenate([stored, extra]) if len(extra) else stored
        cold = len(hist) == 0
        block, allow = self._masks(blocked_categories, blocked_items, categories)
        return Query(-1 if dense is None else dense, hist, k, exclude_seen, block, allow, cold,
                     (reason or "empty history") if cold else None)

    def prepare_similar(self, item: str, *, k: int = 10, blocked_categories: Sequence[str] = (),
                        blocked_items: Sequence[str] = (),
                        categories: Sequence[str] | None = None) -> Query:
        """Check and convert a similar-items request: the anonymous user ``-1`` whose history
        is the one item, which is blocked.

        Raises:
            UnknownItemError: If ``item`` is not in the catalogue.
        """
        hist = self.item_index([item])
        block, allow = self._masks(blocked_categories, blocked_items, categories, hist)
        return Query(-1, hist, k, False, block, allow, False, None)

    def rank(self, queries: Sequence[Query]) -> list[Ranked]:
        """Answer prepared queries.

        Every answer comes from :meth:`Recommender.recommend
        <genrec.models.base.Recommender.recommend>` (the popularity fallback from
        :func:`genrec.models.ranking.rank`): the warm queries are scored in one model call
        per ``exclude_seen`` value, their filters passed as ``(B, I)`` masks.
        """
        out: list[Ranked | None] = [None] * len(queries)
        groups: dict[tuple[bool, bool], list[int]] = {}
        for i, q in enumerate(queries):
            groups.setdefault((q.cold_start, q.exclude_seen and not q.cold_start), []).append(i)
        for (cold, exclude_seen), rows in groups.items():
            qs = [queries[i] for i in rows]
            k = max(q.k for q in qs)
            block = _stack([q.block for q in qs], self._n_items, fill=False)
            allow = _stack([q.allow for q in qs], self._n_items, fill=True)
            h = _histories(qs, self._n_items)
            if cold:
                items_t, vals_t = ranking.rank(self._pop_scores.expand(len(qs), -1).clone(), h,
                                               k, exclude_seen=False, block=block, allow=allow)
                items, vals = items_t.numpy(), vals_t.float().numpy()
            else:
                if self.bundle.ann is not None:  # approximate top-k, same filters
                    rec = recommend_ann(
                        self.bundle.model, self.bundle.ann, h, k,  # type: ignore[arg-type]
                        exclude_seen=exclude_seen, block=block, allow=allow)
                else:
                    with torch.inference_mode():
                        rec = self.bundle.model.recommend(h, k, exclude_seen=exclude_seen,
                                                          block=block, allow=allow)
                items, vals = rec.items, rec.scores
            for j, i in enumerate(rows):
                q = queries[i]
                it, v = items[j, :q.k], vals[j, :q.k]
                keep = it >= 0  # -1: fewer items left than asked after masking
                out[i] = Ranked(it[keep], v[keep], q.cold_start, q.reason, q.history)
        return out  # type: ignore[return-value]

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
        """Items most related to ``item``: the model's recommendations for the anonymous user
        (``-1``) whose history is ``item`` alone.

        For EASE or ItemKNN that is the item-item weight row; for a sequential model the
        next-item distribution after ``item``; for a factor model the folded-in vector of the
        one-item history (BPR-MF, LightGCN: the item's own embedding). The item itself is
        never returned.

        Raises:
            UnknownItemError: If ``item`` is not in the catalogue.
        """
        return self.rank([self.prepare_similar(item, k=k, blocked_categories=blocked_categories,
                                               blocked_items=blocked_items,
                                               categories=categories)])[0]


def _live(bundle: Bundle) -> ModelService:
    """A service of ``bundle`` that passed its smoke test."""
    svc = ModelService(bundle)
    svc.smoke()
    return svc


class ModelPool:
    """Several models served side by side, each reloadable from its folder.

    Every bundle is verified (and its signature checked when ``verifier`` is given) and
    answers a smoke test before it is served, at start and on every reload.

    Args:
        sources: ``(name or None, folder)`` pairs; a None name takes the manifest's.
        verifier: Require bundles signed with this key.

    Raises:
        BundleError: If a bundle fails verification or its smoke test.
        ValueError: If two models get the same name.
    """

    def __init__(self, sources: Sequence[tuple[str | None, Path]], *,
                 verifier: SignatureVerifier | None = None) -> None:
        self._lock = threading.Lock()
        self.verifier = verifier
        self.reload_errors: dict[str, str] = {}
        """Per model, why its latest reload was refused (cleared by a successful one)."""
        services: dict[str, ModelService] = {}
        paths: dict[str, tuple[str | None, Path]] = {}
        for name, path in sources:
            svc = _live(load_bundle(path, name=name, verifier=verifier))
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
            pool._services[b.name] = _live(b)
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

    def reload(self, name: str | Sequence[str] | None = None) -> list[str]:
        """Re-read model ``name`` (several names, or all models when None) from disk and swap
        them in.

        Every bundle is loaded, verified and smoke-tested before any is swapped in, so a
        failure leaves every model as it was (and is kept in :attr:`reload_errors`).

        Returns:
            The reloaded names.

        Raises:
            UnknownModelError: If ``name`` is not served or has no folder.
            BundleError: If a bundle fails verification or its smoke test (nothing is
                swapped).
        """
        with self._lock:
            wanted = [name] if isinstance(name, str) else name
            targets = list(self._paths) if wanted is None else list(dict.fromkeys(wanted))
            for t in targets:
                if t not in self._paths:
                    raise UnknownModelError(t, list(self._paths))
            fresh: dict[str, ModelService] = {}
            for t in targets:
                given, path = self._paths[t]
                try:
                    bundle = load_bundle(path, name=given or t, verifier=self.verifier)
                    if bundle.name != t:
                        raise BundleError(f"{path}: now names its model {bundle.name!r}, "
                                          f"served as {t!r}")
                    fresh[t] = _live(bundle)
                except BundleError as e:
                    self.reload_errors[t] = str(e)
                    raise
            self._services = {n: fresh.get(n, s) for n, s in self._services.items()}
            for t in targets:
                self.reload_errors.pop(t, None)
            _log.info("reloaded %s", ", ".join(targets))
            return targets
