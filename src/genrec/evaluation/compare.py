"""Compare several models under one protocol and keep what a holistic report needs.

:func:`run_comparison` is :func:`genrec.experiment.run_experiment` plus, for every model, the
per-user test metrics and top-K lists. It writes the usual ``results.json`` /
``results.md`` and a ``holistic/`` folder::

    holistic/options.json      the HolisticOptions used
    holistic/context.npz       users, history lengths, targets, training item counts, the
                               most-popular baseline's lists, the item x category matrix
                               (``cat_*``) and user-group labels (``group:<name>``)
    holistic/<model>.npz       top_items (U, K) and per-user test metrics (``m:<metric>``)

then renders the report (:func:`genrec.evaluation.report.write_report`). This module holds
the options, the per-user beyond-accuracy metrics and the ``.npz`` format. What needs the
dataset (item categories, user features, the popularity baseline) is saved here, so
``genrec report RUN_DIR`` needs only the run folder and can use any K up to the lists'
length.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from genrec._io import atomic_write
from genrec.data.interactions import Dataset
from genrec.evaluation.beyond import (
    average_popularity,
    intra_list_diversity,
    long_tail_share,
    novelty,
    serendipity,
)

__all__ = ["HolisticOptions", "category_column", "per_user_beyond", "save_npz", "load_npz"]

_log = logging.getLogger(__name__)


class HolisticOptions(BaseModel):
    """Settings of the beyond-accuracy, fairness and significance analysis."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(10, ge=1)
    """Cutoff of the beyond-accuracy and fairness metrics (at most the largest protocol
    cutoff)."""
    head_ratio: float = Field(0.2, gt=0, lt=1)
    """Share of the catalogue, by training popularity, that is head (APLT, exposure)."""
    category_column: str | None = None
    """Item column for intra-list diversity; by default ``categories``, else ``genres``."""
    n_boot: int = Field(1000, ge=10)
    """Bootstrap resamples of every interval."""
    alpha: float = Field(0.05, gt=0, lt=1)
    """Significance level (after Holm correction) and ``1 - confidence level``."""
    seed: int = 0
    """Seed of the bootstrap."""


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write arrays to ``path`` atomically (no pickled objects: strings are stored as str)."""
    clean = {k: (np.asarray(v).astype(str) if np.asarray(v).dtype == object else np.asarray(v))
             for k, v in arrays.items()}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **clean)

    atomic_write(path, write)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Read arrays written by :func:`save_npz`."""
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def category_column(ds: Dataset, column: str | None) -> str | None:
    if column is not None:
        return column
    for c in ("categories", "genres"):
        if c in ds.items.columns:
            return c
    return None


def per_user_beyond(top_items: np.ndarray, *, k: int, item_counts: np.ndarray, n_users: int,
                    head_ratio: float, target_indptr: np.ndarray, target_items: np.ndarray,
                    baseline_top: np.ndarray, categories: Any = None
                    ) -> dict[str, np.ndarray]:
    """Per-user beyond-accuracy metrics at ``k`` for one model.

    Args:
        top_items: The model's lists, shape ``(U, K')``.
        k: Cutoff.
        item_counts: Training interactions per item.
        n_users: Training users (novelty's denominator).
        head_ratio: Head share of the catalogue (APLT).
        target_indptr: Row pointers of each user's relevant items (serendipity).
        target_items: The relevant items, concatenated.
        baseline_top: Most-popular lists for the same users (serendipity's baseline).
        categories: Item x category matrix for intra-list diversity, if any.

    Returns:
        ``novelty@k``, ``avg_pop@k``, ``aplt@k``, ``serendipity@k`` and, with categories,
        ``ild@k``: one value per user each.
    """
    out = {
        f"novelty@{k}": novelty(top_items, item_counts, k, n_users),
        f"avg_pop@{k}": average_popularity(top_items, item_counts, k),
        f"aplt@{k}": long_tail_share(top_items, item_counts, k, head_ratio),
        f"serendipity@{k}": serendipity(top_items, baseline_top, target_indptr, target_items,
                                        k),
    }
    if categories is not None:
        out[f"ild@{k}"] = intra_list_diversity(top_items, k, categories=categories)
    return out
