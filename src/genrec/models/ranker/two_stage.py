"""Two-stage recommendation: any retrieval model's top-N, re-scored by a multi-task ranker.

``kind: two_stage`` nests a retrieval model config (``retriever:``, any other kind) and a
ranker (``ranker:``, :class:`~genrec.models.ranker.net.RankerConfig`).

How it is fitted without leaking (every step uses the training split only):

1. Hold out each user's last ``holdout`` training items (users keep at least one item) and
   fit the retriever on the rest.
2. For every held-out position ``t`` of a user, take the retriever's top ``candidates``
   items for the history before ``t`` (seen items excluded) and label them: interaction =
   the candidate is the item at ``t``; like = and it was rated >= ``like_threshold``;
   rating = its rating (regression, on the positive pairs). Features come from
   :mod:`genrec.models.ranker.features`, item statistics from step 1's table.
3. Refit the retriever on the whole training split (``refit: true``; false keeps step 1's).
4. Train the ranker on the pairs, early-stopping on the run's validation metric measured on
   the whole two-stage pipeline (or, without one, on the ranker's held-out users' logloss).

Scoring: the retriever's top-``candidates`` for each history (seen items excluded) get the
ranker's score (``score_weights`` over the heads); every other item gets ``-inf``, so the
ordinary evaluator measures the pipeline with full-ranking metrics, items outside the
candidates counting as misses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import polars as pl
import torch
from pydantic import Field, field_validator
from rich.progress import track

from genrec._io import atomic_write_text
from genrec.data.interactions import Columns, Histories, Interactions
from genrec.models.base import FitContext, ModelConfig, Recommender
from genrec.models.ease import EASEConfig
from genrec.models.ranker.features import category_matrix, item_stats, pair_features
from genrec.models.ranker.net import (
    HEADS,
    RankerConfig,
    RankerData,
    RankerNet,
    head_metrics,
    train_ranker,
)
from genrec.models.ranking import rank
from genrec.models.retrievers import RETRIEVERS, AnyRetrieverConfig, load_from
from genrec.text import TextCoverageError, item_embeddings

__all__ = ["TwoStage", "TwoStageConfig"]

_log = logging.getLogger(__name__)


class TwoStageConfig(ModelConfig):
    """Retrieval model + multi-task ranker over its top ``candidates``."""

    kind: Literal["two_stage"] = "two_stage"
    retriever: AnyRetrieverConfig = Field(default_factory=EASEConfig)
    """Config of the retrieval model (any retrieval kind). The default, EASE, fits in
    seconds without a training loop; ``configs/ranker-*.yaml`` use SASRec."""
    candidates: int = Field(100, ge=1)
    """Retrieved items the ranker re-scores per user (N)."""
    holdout: int = Field(3, ge=1)
    """Last training items per user held out to make the ranker's training pairs."""
    refit: bool = True
    """Refit the retriever on the whole training split after making the pairs (false: serve
    with the retriever fitted without the held-out items)."""
    ranker: RankerConfig = Field(default_factory=RankerConfig)
    """The ranker: features, tower, heads, optimizer."""
    score_batch: int = Field(512, ge=1)
    """Users per batch when scoring (bounds the memory of the pair features)."""

    @field_validator("retriever", mode="before")
    @classmethod
    def _no_nesting(cls, v: Any) -> Any:
        # Before validation: the retriever union has no two_stage tag to report.
        kind = v.get("kind") if isinstance(v, dict) else getattr(v, "kind", None)
        if kind == "two_stage":
            raise ValueError("retriever must be a retrieval model, not another two_stage")
        return v


def _prefix_histories(train: Interactions, users: np.ndarray, lengths: np.ndarray
                      ) -> tuple[Histories, np.ndarray]:
    """Histories made of the first ``lengths[i]`` training items of ``users[i]``, and the
    flat training-row index of the item that follows each prefix."""
    counts = np.bincount(train.users, minlength=train.n_users)
    indptr_all = np.concatenate([[0], np.cumsum(counts)])
    starts = indptr_all[users]
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    offsets = np.arange(indptr[-1]) - np.repeat(indptr[:-1], lengths)
    items = train.items[np.repeat(starts, lengths) + offsets]
    return Histories(users, indptr, items, train.n_items), starts + lengths


def _resolve_heads(rcfg: RankerConfig, has_rating: bool) -> list[str]:
    """The ranker's heads: the configured ones, or all the data supports.

    Raises:
        ValueError: If a head needs ratings the data lacks, or a weight names a head that
            is not trained.
    """
    heads = list(rcfg.heads) if rcfg.heads is not None else (
        list(HEADS) if has_rating else ["interaction"])
    if not has_rating and {"like", "rating"} & set(heads):
        raise ValueError(f"two_stage: heads {heads} need ratings, and the training data "
                         "has none; use heads: [interaction]")
    for name, weights in (("score_weights", rcfg.score_weights),
                          ("loss_weights", rcfg.loss_weights)):
        if missing := set(weights) - set(heads):
            raise ValueError(f"two_stage: {name} names heads that are not trained: "
                             f"{sorted(missing)} (heads: {heads})")
    return heads


class TwoStage(Recommender[TwoStageConfig]):
    """Retrieve top-N with ``retriever``, re-score with a multi-task ranker (see the module
    docstring for the leak-free training scheme)."""

    config_cls = TwoStageConfig

    # -- fitting -------------------------------------------------------------------------
    def _fit(self, train: Interactions, ctx: FitContext) -> None:
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        self._fit_stage_one(train, ctx)
        self._fit_ranker(ctx)

    @staticmethod
    def _checkpoints(ctx: FitContext, name: str) -> Path | None:
        """The checkpoint folder of one trained part (``name``) of this model, if any."""
        return Path(ctx.checkpoint_dir) / name if ctx.checkpoint_dir is not None else None

    def _retriever_ctx(self, ctx: FitContext, name: str) -> FitContext:
        return dataclasses.replace(ctx, checkpoint_dir=self._checkpoints(ctx, name))

    def _fit_stage_one(self, train: Interactions, ctx: FitContext) -> None:
        """Steps 1-3: the held-out retriever, the labelled pairs, the refitted retriever."""
        cfg, rcfg = self.config, self.config.ranker
        counts = np.bincount(train.users, minlength=train.n_users)
        cut = np.clip(np.minimum(cfg.holdout, counts - 1), 0, None)       # held out per user
        if not cut.any():
            raise ValueError("two_stage: no user has two training items; nothing to hold out "
                             "for the ranker's training pairs")
        pos = train.frame.select(pl.int_range(pl.len()).over(Columns.user).alias("p"))["p"]
        keep = pos.to_numpy() < (counts - cut)[train.users]
        held_table = Interactions(train.frame.filter(pl.Series(keep)), train.n_users,
                                  train.n_items)
        _log.info("two_stage: retriever on %d of %d training rows (%d held out)",
                  len(held_table), len(train), int(cut.sum()))
        retriever = RETRIEVERS[cfg.retriever.kind](cfg.retriever).fit(
            held_table, self._retriever_ctx(ctx, "retriever-holdout"))

        # side tables: categories, text, rating availability
        self.cats_, self.categories_ = category_matrix(ctx.items, train.n_items,
                                                      rcfg.max_categories)
        self.text_ = self._text(ctx)
        has_rating = Columns.rating in train.frame.columns
        self.heads_ = _resolve_heads(rcfg, has_rating)

        # examples: (user, prefix length) for every held-out position
        users = np.repeat(np.arange(train.n_users), cut)
        first = (counts - cut)[users]
        within = np.arange(len(users)) - np.repeat(np.cumsum(cut) - cut, cut)
        hist, target_row = _prefix_histories(train, users, first + within)
        target = torch.from_numpy(train.items[target_row])
        rating = (torch.from_numpy(train.frame[Columns.rating].to_numpy()[target_row]).float()
                  if has_rating else torch.full((len(users),), float("nan")))
        rng = np.random.default_rng(ctx.seed)
        uniq = np.flatnonzero(cut)
        held_users = rng.choice(uniq, size=round(rcfg.valid_users * len(uniq)),
                                replace=False)
        is_valid = torch.from_numpy(np.isin(users, held_users))

        stats = item_stats(held_table)
        parts: list[RankerData] = []
        bs = cfg.score_batch
        starts = range(0, len(users), bs)
        for lo in track(starts, description="ranker pairs", total=len(starts),
                        disable=not (ctx.progress and rcfg.progress)):
            h = hist.slice(lo, min(lo + bs, len(users)))
            cand, vals = self._retrieve(retriever, h)
            dense = pair_features(h, cand, vals, stats, self.cats_, self.text_)
            ok = cand >= 0                                              # (B, N)
            rows = torch.arange(lo, lo + len(h))[:, None].expand_as(cand)[ok]
            hit = (cand == target[lo : lo + len(h), None])[ok]
            like = hit & (rating[rows] >= rcfg.like_threshold)
            parts.append(RankerData(
                torch.from_numpy(h.users)[:, None].expand_as(cand)[ok], cand[ok], dense[ok],
                torch.stack([hit, like], 1).float(), rating[rows], is_valid[rows]))
        self.pairs_ = RankerData(*(torch.cat([getattr(p, f) for p in parts]) for f in
                                   ("users", "items", "dense", "labels", "rating", "valid")))
        n_pos = int(self.pairs_.labels[:, 0].sum())
        _log.info("two_stage: %d ranker pairs from %d held-out positions; %d positives "
                  "(retriever recall@%d %.3f)", len(self.pairs_), len(users), n_pos,
                  cfg.candidates, n_pos / max(len(users), 1))
        self.pair_recall_ = n_pos / max(len(users), 1)

        if cfg.refit:
            retriever = RETRIEVERS[cfg.retriever.kind](cfg.retriever).fit(
                train, self._retriever_ctx(ctx, "retriever"))
        self.retriever_ = retriever
        self.stats_ = item_stats(train)

    def _text(self, ctx: FitContext) -> torch.Tensor | None:
        mode = self.config.ranker.text
        if mode == "off":
            return None
        try:
            emb = torch.from_numpy(item_embeddings(ctx.items, self.n_items_,
                                                   self.config.ranker.text_config,
                                                   who="two_stage ranker (text feature)"))
        except TextCoverageError:
            if mode == "on":
                raise
            _log.info("two_stage: the items have no usable text; the ranker goes without")
            return None
        return emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def _fit_ranker(self, ctx: FitContext) -> None:
        """Step 4: train the ranker on ``pairs_``; keep its held-out metrics in
        ``ranker_metrics_`` and the NaN-restart / spike counts in ``stability_``."""
        rcfg = self.config.ranker
        train_pairs = self.pairs_.rows(~self.pairs_.valid)
        held = self.pairs_.rows(self.pairs_.valid)
        mean = train_pairs.dense.mean(0)
        std = train_pairs.dense.std(0).clamp_min(1e-6)
        pos = train_pairs.labels[:, 0] > 0
        rating_mean = float(train_pairs.rating[pos].mean()) if "rating" in self.heads_ and \
            pos.any() else 0.0
        torch.manual_seed(ctx.seed)
        self.net_ = RankerNet(self.n_users_, self.n_items_, self.cats_, self.text_, mean, std,
                              rating_mean, self.heads_, rcfg)
        if ctx.validate is not None:
            def validate() -> float:
                return float(ctx.validate(self))  # type: ignore[misc]
            metric = ctx.valid_metric
        elif len(held):
            def validate() -> float:
                return -head_metrics(self.net_, held)["interaction_logloss"]
            metric = "-interaction_logloss (held-out pairs)"
        else:
            validate, metric = None, ""  # type: ignore[assignment]
        self._cache = {}
        try:
            self.train_result_, self.stability_ = train_ranker(
                self.net_, train_pairs, rcfg, validate=validate, seed=ctx.seed,
                valid_metric=metric, checkpoint_dir=self._checkpoints(ctx, "ranker"),
                resume=ctx.resume,
                # the ranker's own config too: refit_ranker trains another ranker in one run
                identity={**ctx.identity, "ranker": rcfg.model_dump(mode="json")})
        finally:
            self._cache = None
        self.ranker_metrics_ = head_metrics(self.net_, held)
        _log.info("two_stage ranker: held-out pairs %s; %s", self.ranker_metrics_,
                  self.stability_)

    def refit_ranker(self, ranker: RankerConfig | dict[str, Any], ctx: FitContext | None = None
                     ) -> TwoStage:
        """A new two-stage model with another ranker, sharing this one's fitted retriever and
        training pairs (tune or compare rankers without refitting retrieval).

        Raises:
            ValueError: Without training pairs (a model loaded from disk, or not fitted).
        """
        if not hasattr(self, "pairs_"):
            raise ValueError("refit_ranker needs a model fitted in this process (the training "
                             "pairs are not saved)")
        cfg = self.config.model_copy(update={"ranker": RankerConfig.model_validate(
            ranker if isinstance(ranker, dict) else ranker.model_dump())})
        other = TwoStage(cfg)
        for attr in ("n_users_", "n_items_", "retriever_", "stats_", "cats_", "categories_",
                     "text_", "pairs_", "pair_recall_"):
            setattr(other, attr, getattr(self, attr))
        other.heads_ = _resolve_heads(other.config.ranker,
                                      not bool(torch.isnan(self.pairs_.rating).all()))
        other._cache = None
        other._fit_ranker(ctx or FitContext())
        return other

    # -- scoring -------------------------------------------------------------------------
    def _retrieve(self, retriever: Recommender[Any], h: Histories
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``candidates`` items ``(B, N)`` (-1: none) and their retrieval scores."""
        key = None
        if getattr(self, "_cache", None) is not None:
            d = hashlib.blake2b(digest_size=16)
            for a in (h.users, h.indptr, h.items):
                d.update(np.ascontiguousarray(a).tobytes())
            key = d.hexdigest()
            if key in self._cache:  # type: ignore[operator]
                return self._cache[key]  # type: ignore[index]
        # a copy: rank() masks in place, and a retriever may hand out a shared tensor
        scores = retriever.score(h).float().cpu().clone()
        n = min(self.config.candidates, scores.shape[1])
        out = rank(scores, h, n, exclude_seen=True)
        if key is not None:
            self._cache[key] = out  # type: ignore[index]
        return out

    def _combine(self, out: torch.Tensor) -> torch.Tensor:
        weights = self.config.ranker.score_weights
        return sum((w * out[:, self.heads_.index(h)] for h, w in weights.items()),
                   torch.zeros(len(out)))

    def _score(self, histories: Histories) -> torch.Tensor:
        net = self.net_.eval()
        out = torch.full((len(histories), self.n_items_), float("-inf"))
        bs = self.config.score_batch
        with torch.no_grad():
            for lo in range(0, len(histories), bs):
                h = histories.slice(lo, min(lo + bs, len(histories)))
                cand, vals = self._retrieve(self.retriever_, h)
                dense = pair_features(h, cand, vals, self.stats_, self.cats_, self.text_)
                ok = cand >= 0
                users = torch.from_numpy(h.users)[:, None].expand_as(cand)
                s = self._combine(net(users[ok], cand[ok], dense[ok]))
                rows = torch.arange(lo, lo + len(h))[:, None].expand_as(cand)[ok]
                out[rows, cand[ok]] = s
        return out

    # -- persistence ---------------------------------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        return {**{f"ranker.{k}": v for k, v in self.net_.state_dict().items()},
                "stats": self.stats_}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.stats_ = state["stats"]
        self.cats_ = state["ranker.cats"]
        self.text_ = state.get("ranker.text")
        self._state_for_load = state  # the net is built in load(), once heads are known

    def _save_files(self, path: Path) -> None:
        """Write the ranker (``config.json``, ``meta.json``, ``state.safetensors``,
        ``ranker.json``) and the fitted retriever in ``retriever/``."""
        super()._save_files(path)
        self.retriever_._save_files(path / "retriever")
        atomic_write_text(path / "ranker.json", json.dumps({
            "heads": self.heads_, "categories": self.categories_,
            "held_out_metrics": getattr(self, "ranker_metrics_", {}),
            "stability": getattr(self, "stability_", {})}, indent=2))

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a model written by :meth:`save` (JSON + safetensors, retriever included)."""
        path = Path(path)
        model = super().load(path)
        info = json.loads((path / "ranker.json").read_text())
        model.heads_, model.categories_ = info["heads"], info["categories"]
        model.ranker_metrics_, model.stability_ = info["held_out_metrics"], info["stability"]
        state = {k.removeprefix("ranker."): v for k, v in model._state_for_load.items()
                 if k.startswith("ranker.")}
        model.net_ = RankerNet(model.n_users_, model.n_items_, model.cats_, model.text_,
                               state["dense_mean"], state["dense_std"],
                               float(state["rating_mean"]), model.heads_, model.config.ranker)
        model.net_.load_state_dict(state)
        model.net_.eval()
        del model._state_for_load
        model.retriever_ = load_from(RETRIEVERS, path / "retriever")
        model._cache = None
        return model
