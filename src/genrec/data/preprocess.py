"""Preprocessing steps. Each takes a :class:`Dataset` and returns a new one, and appends to
``dataset.log`` what it kept, what it dropped and why."""

from __future__ import annotations

import dataclasses
import logging
from typing import Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict

from genrec.data.interactions import Columns, Dataset

__all__ = ["PreprocessConfig", "to_implicit", "deduplicate", "k_core", "max_history", "preprocess"]

_log = logging.getLogger(__name__)
U, I, T = Columns.user, Columns.item, Columns.timestamp


class PreprocessConfig(BaseModel):
    """Preprocessing recipe, applied in the order of the fields."""

    model_config = ConfigDict(extra="forbid")

    rating_threshold: float | None = None
    """Keep only interactions with rating >= this (implicit conversion); None keeps all."""
    dedup: Literal["first", "last", "none"] = "first"
    """For repeated (user, item) pairs keep the first or last event, or keep all."""
    min_user_interactions: int = 0
    """Iterative k-core: minimum interactions per user (0 = no filter)."""
    min_item_interactions: int = 0
    """Iterative k-core: minimum interactions per item (0 = no filter)."""
    max_history_length: int | None = None
    """Keep only each user's most recent N interactions; None keeps all."""


def _record(ds: Dataset, frame: pl.DataFrame, step: str, reason: str, **params: object) -> Dataset:
    before = len(ds.interactions)
    entry = {"step": step, "kept": frame.height, "dropped": before - frame.height,
             "reason": reason, "params": params}
    _log.info("%s: kept %d, dropped %d (%s)", step, frame.height, before - frame.height, reason)
    # A step that drops nothing still returns a new Dataset: the caller's log must not change.
    out = ds.subset(frame) if frame.height != before else dataclasses.replace(ds)
    if frame.height == 0:
        raise ValueError(f"{ds.name}: {step} dropped every interaction ({reason})")
    out.log = [*ds.log, entry]
    return out


def to_implicit(ds: Dataset, threshold: float) -> Dataset:
    """Keep interactions with ``rating >= threshold``.

    Raises:
        ValueError: If the dataset has no ratings.
    """
    frame = ds.interactions.frame
    if Columns.rating not in frame.columns:
        raise ValueError(f"{ds.name}: rating_threshold set but the dataset has no ratings")
    kept = frame.filter(pl.col(Columns.rating) >= threshold)
    return _record(ds, kept, "implicit", f"rating below {threshold}", threshold=threshold)


def deduplicate(ds: Dataset, keep: Literal["first", "last"] = "first") -> Dataset:
    """Keep one event per (user, item) pair: the earliest or the latest."""
    # One int64 key per (user, item) pair (dense ids): hashing one column is ~1.5x faster
    # than ``unique`` over two, and keeps the same rows in the same order.
    pair = pl.col(U) * ds.n_items + pl.col(I)
    first = pair.is_first_distinct() if keep == "first" else pair.is_last_distinct()
    kept = ds.interactions.frame.filter(first)
    return _record(ds, kept, "dedup", "repeated (user, item) event", keep=keep)


def k_core(ds: Dataset, min_user: int, min_item: int) -> Dataset:
    """Iteratively drop users and items with too few interactions until both bounds hold."""
    frame = ds.interactions.frame
    # Counts by bincount over a row mask (dense ids): linear per round, ~3x faster than
    # re-filtering the table with window counts.
    users, items = frame[U].to_numpy(), frame[I].to_numpy()
    keep = np.ones(frame.height, dtype=bool)
    rounds = 0
    while True:
        rounds += 1
        n = int(keep.sum())
        if min_item > 1:
            keep &= np.bincount(items[keep], minlength=ds.n_items)[items] >= min_item
        if min_user > 1:
            keep &= np.bincount(users[keep], minlength=ds.n_users)[users] >= min_user
        if int(keep.sum()) == n:
            break
    frame = frame.filter(pl.Series(keep))
    return _record(ds, frame, "k_core",
                   f"user with < {min_user} or item with < {min_item} interactions",
                   min_user=min_user, min_item=min_item, rounds=rounds)


def max_history(ds: Dataset, n: int) -> Dataset:
    """Keep each user's ``n`` most recent interactions (the table is sorted by time)."""
    frame = ds.interactions.frame
    # pl.len() is UInt32: cast before subtracting, or users with fewer than n events wrap
    # around to a huge bound and lose their whole history.
    kept = frame.filter(pl.int_range(pl.len()).over(U) >= pl.len().over(U).cast(pl.Int64) - n)
    return _record(ds, kept, "max_history", f"older than the user's last {n}", n=n)


def preprocess(ds: Dataset, cfg: PreprocessConfig) -> Dataset:
    """Apply every step of ``cfg`` that is switched on, in order."""
    if cfg.rating_threshold is not None:
        ds = to_implicit(ds, cfg.rating_threshold)
    if cfg.dedup != "none":
        ds = deduplicate(ds, cfg.dedup)
    if cfg.min_user_interactions > 1 or cfg.min_item_interactions > 1:
        ds = k_core(ds, cfg.min_user_interactions, cfg.min_item_interactions)
    if cfg.max_history_length is not None:
        ds = max_history(ds, cfg.max_history_length)
    return ds
