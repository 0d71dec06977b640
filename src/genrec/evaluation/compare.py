"""Compare several models under one protocol and keep what a holistic report needs.

:func:`run_comparison` is :func:`genrec.experiment.run_experiment` plus, for every model, the
per-user test metrics and top-K lists. It writes the usual ``results.json`` /
``results.md`` and a ``holistic/`` folder::

    holistic/options.json      the HolisticOptions used
    holistic/context.npz       users, history lengths, targets, training item counts, the
                               most-popular baseline's lists, the item x category matrix
                               (``cat_*``) and user-group labels (``group:<name>``)
    holistic/<model>.npz       top_items (U, K) and per-user test metrics (``m:<metric>``)

then renders the report (:func:`genrec.evaluation.report.write_report`). What needs the
dataset (item categories, user features, the popularity baseline) is saved here, so
``genrec report RUN_DIR`` needs only the run folder and can use any K up to the lists'
length.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from genrec._io import atomic_write, atomic_write_text
from genrec.config import ExperimentConfig
from genrec.data.interactions import Dataset
from genrec.evaluation.beyond import (
    average_popularity,
    category_matrix,
    intra_list_diversity,
    long_tail_share,
    novelty,
    serendipity,
)
from genrec.evaluation.evaluator import evaluate
from genrec.evaluation.fairness import user_groups
from genrec.models.pop import Popularity

__all__ = ["HolisticOptions", "run_comparison", "per_user_beyond", "save_npz", "load_npz"]

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


def _category_column(ds: Dataset, column: str | None) -> str | None:
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


def run_comparison(cfg: ExperimentConfig, options: HolisticOptions | None = None, *,
                   progress: bool = False, report: bool = True) -> dict[str, Any]:
    """Fit and evaluate every model of ``cfg``, keep per-user data, write results and report.

    Args:
        cfg: Dataset, protocol, models and output folder.
        options: Holistic analysis settings.
        progress: Show progress bars.
        report: Also write ``report.html`` and ``report.md``.

    Returns:
        The ``results.json`` content.

    Raises:
        ValueError: If ``options.k`` exceeds the largest protocol cutoff, or there are no
            models.
    """
    from genrec.experiment import fit_and_evaluate, prepare, results_document, write_results

    options = options or HolisticOptions()
    if not cfg.models:
        raise ValueError("no models to compare")
    if options.k > max(cfg.protocol.cutoffs):
        raise ValueError(f"holistic k={options.k} exceeds the largest protocol cutoff "
                         f"{max(cfg.protocol.cutoffs)}")
    out = Path(cfg.output)
    data = prepare(cfg)
    ds, sp, test_set = data.dataset, data.split, data.test_set
    counts = sp.train.item_counts()
    n_train_users = int(np.count_nonzero(np.bincount(sp.train.users, minlength=sp.n_users)))
    if cfg.protocol.candidates == "sampled":
        _log.warning("sampled candidates: top-K lists only rank sampled items, so coverage, "
                     "exposure and diversity describe the sample, not the catalogue")

    hol = out / "holistic"
    col = _category_column(ds, options.category_column)
    categories = category_matrix(ds.items, col, ds.n_items)[0] if col else None
    baseline = evaluate(Popularity().fit(sp.train), test_set, cfg.protocol,
                        item_popularity=counts, batch_size=cfg.eval_batch_size,
                        keep_top_items=True).top_items
    groups = user_groups(test_set.histories.users, test_set.histories.lengths, ds.users)
    cat_arrays = {} if categories is None else {
        "cat_indptr": categories.indptr, "cat_indices": categories.indices,
        "cat_shape": np.array(categories.shape)}
    save_npz(hol / "context.npz", users=test_set.histories.users,
             history_lengths=test_set.histories.lengths,
             target_indptr=test_set.target_indptr, target_items=test_set.target_items,
             item_counts=counts, n_train_users=np.array(n_train_users), baseline_top=baseline,
             **cat_arrays, **{f"group:{g}": v for g, v in groups.items()})
    atomic_write_text(hol / "options.json", json.dumps(
        options.model_dump() | {"category_column": col}, indent=2))

    rows = []
    for mcfg in cfg.models:
        _, row, test = fit_and_evaluate(mcfg, data, cfg, progress=progress, keep_top_items=True)
        save_npz(hol / f"{mcfg.kind}.npz", top_items=test.top_items,
                 **{f"m:{m}": v for m, v in test.per_user.items()})
        rows.append(row)
    results = results_document(cfg, data, rows,
                               holistic=options.model_dump() | {"category_column": col})
    write_results(out, results)
    if report:
        from genrec.evaluation.report import write_report

        write_report(out, options)
    return results

