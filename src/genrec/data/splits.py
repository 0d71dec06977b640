"""Train / validation / test splits. A split is saved and reloadable, so two runs share it."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from genrec._io import atomic_write_text
from genrec.data.interactions import Columns, Dataset, EvalSet, Interactions

__all__ = ["SplitConfig", "Split", "split", "fingerprint"]

U, T = Columns.user, Columns.timestamp
_log = logging.getLogger(__name__)
#: A temporal split whose shares miss the configured ratios by more than this (ties at a
#: cut-off put them all on one side) logs a warning.
_SHARE_TOLERANCE = 0.05


class SplitConfig(BaseModel):
    """How to split a dataset."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["leave_one_out", "temporal", "random"] = "leave_one_out"
    """leave_one_out: per user, last = test, second last = valid, rest = train (users with
    fewer than 3 interactions stay in train). temporal: global time cut-offs. random: each
    interaction assigned at random."""
    valid_ratio: float = 0.1
    """Share of interactions (temporal, random) that goes to validation."""
    test_ratio: float = 0.1
    """Share of interactions (temporal, random) that goes to test."""
    seed: int = 42
    """Seed of the random split and of the cold-item draw."""
    cold_items: float = Field(0.0, ge=0, lt=1)
    """Cold-start protocol: this share of the catalogue (drawn uniformly with ``seed``) is
    held out of training entirely: every training interaction with those items is removed,
    so models never see them in training, while they stay valid/test targets. Results are
    then also reported separately for users whose target is a cold or a warm item."""

    @model_validator(mode="after")
    def _ratios(self) -> SplitConfig:
        if not (0 <= self.valid_ratio < 1 and 0 < self.test_ratio < 1
                and self.valid_ratio + self.test_ratio < 1):
            raise ValueError("valid_ratio and test_ratio must be in [0, 1) and sum below 1")
        return self


def fingerprint(inter: Interactions) -> str:
    """A short content hash of an interaction table (detects a split/dataset mismatch)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(inter.users).tobytes())
    h.update(np.ascontiguousarray(inter.items).tobytes())
    h.update(f"{inter.n_users},{inter.n_items}".encode())
    return h.hexdigest()[:16]


@dataclass
class Split:
    """Three interaction tables over one id space.

    Attributes:
        train: Training interactions.
        valid: Validation targets (history = train).
        test: Test targets (history = train + valid).
        config: The split recipe.
        dataset_fingerprint: :func:`fingerprint` of the dataset it was made from.
        cold_items: Items held out of training (``config.cold_items``), sorted.
    """

    train: Interactions
    valid: Interactions
    test: Interactions
    config: SplitConfig = field(default_factory=SplitConfig)
    dataset_fingerprint: str = ""
    cold_items: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def n_users(self) -> int:
        """Size of the user id space."""
        return self.train.n_users

    @property
    def n_items(self) -> int:
        """Size of the item id space."""
        return self.train.n_items

    def valid_set(self) -> EvalSet:
        """Validation users: history = train, targets = valid."""
        return EvalSet.build(self.train, self.valid)

    def test_set(self) -> EvalSet:
        """Test users: history = train + valid, targets = test."""
        return EvalSet.build(self.train.concat(self.valid), self.test)

    def save(self, path: Path) -> None:
        """Write the three tables and the recipe (each file atomic)."""
        path = Path(path)
        for name in ("train", "valid", "test"):
            getattr(self, name).save(path / name)
        atomic_write_text(path / "split.json", json.dumps(
            {"config": self.config.model_dump(), "dataset_fingerprint": self.dataset_fingerprint,
             "cold_items": self.cold_items.tolist()}, indent=2))

    @classmethod
    def load(cls, path: Path, dataset: Dataset | None = None) -> Split:
        """Read a split; if ``dataset`` is given, check that the split was made from it.

        Raises:
            ValueError: If the split does not belong to ``dataset``.
        """
        path = Path(path)
        meta = json.loads((path / "split.json").read_text())
        if dataset is not None and meta["dataset_fingerprint"] != fingerprint(dataset.interactions):
            raise ValueError(f"split at {path} was made from a different dataset than "
                             f"{dataset.name!r} (fingerprint mismatch)")
        return cls(*(Interactions.load(path / n) for n in ("train", "valid", "test")),
                   SplitConfig(**meta["config"]), meta["dataset_fingerprint"],
                   np.asarray(meta.get("cold_items", []), dtype=np.int64))


def split(ds: Dataset, cfg: SplitConfig | None = None) -> Split:
    """Split ``ds`` according to ``cfg``.

    Raises:
        ValueError: For a temporal split of data that only has sequence positions, or one
            that would leave train or a part with a positive ratio empty (tied timestamps);
            for a leave-one-out split where no user has 3 interactions (nothing to test).
    """
    cfg = cfg or SplitConfig()
    inter = ds.interactions
    frame = inter.frame
    if cfg.kind == "leave_one_out":
        n = pl.len().over(U)
        from_end = n - 1 - pl.int_range(pl.len()).over(U)
        part = (pl.when(n < 3).then(0).when(from_end == 0).then(2)
                .when(from_end == 1).then(1).otherwise(0))
        labels = frame.select(part.alias("p"))["p"].to_numpy()
        if frame.height and not (labels == 2).any():
            raise ValueError(f"{ds.name}: leave-one-out needs users with at least 3 "
                             "interactions (train, validation, test), and none has; lower the "
                             "k-core or use a random or temporal split")
    elif cfg.kind == "temporal":
        if ds.order != "timestamp":
            raise ValueError(f"{ds.name}: a temporal split needs timestamps, but this dataset "
                             "only has sequence order; use leave_one_out")
        t = frame[T].to_numpy()
        t1, t2 = np.quantile(t, [1 - cfg.valid_ratio - cfg.test_ratio, 1 - cfg.test_ratio])
        labels = np.where(t >= t2, 2, np.where(t >= t1, 1, 0))
        _check_temporal(ds.name, t, labels, cfg)
    else:
        r = np.random.default_rng(cfg.seed).random(frame.height)
        labels = np.where(r < cfg.test_ratio, 2,
                          np.where(r < cfg.test_ratio + cfg.valid_ratio, 1, 0))
    cold = np.zeros(0, dtype=np.int64)
    if cfg.cold_items > 0:
        n_cold = max(1, round(cfg.cold_items * inter.n_items))
        rng = np.random.default_rng([cfg.seed, 1])  # its own stream: the split stays the same
        cold = np.sort(rng.choice(inter.n_items, n_cold, replace=False)).astype(np.int64)
        labels = np.where((labels == 0) & np.isin(inter.items, cold), -1, labels)  # -1: dropped
    parts = [Interactions(frame.filter(pl.Series(labels == k)), inter.n_users, inter.n_items)
             for k in range(3)]
    return Split(*parts, config=cfg, dataset_fingerprint=fingerprint(inter), cold_items=cold)


def _check_temporal(name: str, t: np.ndarray, labels: np.ndarray, cfg: SplitConfig) -> None:
    """Refuse a temporal split that leaves a part empty; warn when ties skew the shares.

    Interactions with one timestamp all fall on the same side of a cut-off, so ties can move
    a whole block of them into the next part.

    Raises:
        ValueError: If train, or valid/test with a positive ratio, would be empty.
    """
    wanted = np.array([1 - cfg.valid_ratio - cfg.test_ratio, cfg.valid_ratio, cfg.test_ratio])
    counts = np.bincount(labels, minlength=3)
    names = ("train", "valid", "test")
    for k in range(3):
        if counts[k] or not wanted[k]:
            continue
        # The first timestamp at or after the start of part k: its ties swallowed the part.
        start = t.min() if k == 0 else np.quantile(t, wanted[:k].sum())
        tie = t[t >= start].min()
        raise ValueError(
            f"{name}: the temporal split (valid_ratio={cfg.valid_ratio}, "
            f"test_ratio={cfg.test_ratio}) leaves {names[k]} empty: {int((t == tie).sum())} of "
            f"{len(t)} interactions share timestamp {tie}, and tied interactions cannot be "
            f"cut apart (part sizes would be train {counts[0]}, valid {counts[1]}, test "
            f"{counts[2]}). Use kind: leave_one_out or random, or other ratios")
    shares = counts / len(t)
    if np.abs(shares - wanted).max() > _SHARE_TOLERANCE:
        _log.warning("%s: tied timestamps at the temporal cut-offs give shares train %.3f, "
                     "valid %.3f, test %.3f instead of %.3f, %.3f, %.3f", name, *shares,
                     *wanted)
