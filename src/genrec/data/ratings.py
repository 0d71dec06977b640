"""Rating-prediction splits: explicit ratings held out as (user, item, rating) triples.

Two protocols:

- ``official``: the GroupLens ML-100K folds ``u1``..``u5`` (``uN.base`` / ``uN.test``, a
  5-fold partition of ``u.data`` made by GroupLens), read as files and mapped onto the
  dataset's dense ids, so every paper's "ML-100K u1-u5" number is comparable.
- ``random``: a seeded random hold-out of a fraction of the ratings of any rated dataset.

Both keep the id space of the full dataset (a test user or item may be unseen in training;
models then fall back to their baseline terms).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from genrec.data.interactions import Columns, Dataset, Interactions

__all__ = ["RatingSplit", "holdout", "official_folds", "random_rating_split"]

_log = logging.getLogger(__name__)
U, I, R, T = Columns.user, Columns.item, Columns.rating, Columns.timestamp


@dataclass(frozen=True)
class RatingSplit:
    """One train / test partition of the explicit ratings.

    Attributes:
        name: ``u1``..``u5`` for the official folds, ``seed<k>`` for a random split.
        train: Training ratings (``rating`` column present).
        test: Test ratings on the same id space.
    """

    name: str
    train: Interactions
    test: Interactions


def _require_ratings(ds: Dataset) -> None:
    if R not in ds.interactions.frame.columns:
        raise ValueError(f"{ds.name}: rating prediction needs explicit ratings, and this "
                         "dataset has none (implicit feedback only)")


def _read_fold_file(path: Path, ds: Dataset) -> pl.DataFrame:
    """``user \\t item \\t rating \\t timestamp`` with raw ids -> dense ids of ``ds``."""
    if not path.is_file():
        raise FileNotFoundError(f"official rating fold {path} not found")
    raw = pl.read_csv(path, separator="\t", has_header=False,
                      new_columns=[U, I, R, T], schema_overrides=[pl.String, pl.String,
                                                                  pl.Float32, pl.Int64])
    users = ds.user_map.to_index(raw[U])
    items = ds.item_map.to_index(raw[I])
    unknown = int(((users < 0) | (items < 0)).sum())
    if unknown:
        raise ValueError(f"{path}: {unknown} ratings of users or items the dataset does not "
                         "have (was it preprocessed or k-cored? the official folds need the "
                         "full dataset)")
    return raw.with_columns(pl.Series(U, users), pl.Series(I, items))


def official_folds(ds: Dataset, folder: str | Path,
                   folds: tuple[str, ...] = ("u1", "u2", "u3", "u4", "u5")) -> list[RatingSplit]:
    """The GroupLens ML-100K rating folds, on the dense ids of ``ds``.

    Args:
        ds: The ML-100K dataset (read from the same ``u.data``).
        folder: Folder holding ``u1.base``, ``u1.test``, ... (``ml-100k/raw``).
        folds: Fold names (``ua`` / ``ub`` also exist: 10 test ratings per user).

    Returns:
        One split per fold, in order.

    Raises:
        FileNotFoundError: If a fold file is missing.
        ValueError: If the dataset has no ratings or lacks ids the folds use.
    """
    _require_ratings(ds)
    folder = Path(folder)
    out = []
    for name in folds:
        base = _read_fold_file(folder / f"{name}.base", ds)
        test = _read_fold_file(folder / f"{name}.test", ds)
        out.append(RatingSplit(name, Interactions(base, ds.n_users, ds.n_items),
                               Interactions(test, ds.n_users, ds.n_items)))
    return out


def _partition(frame: pl.DataFrame, ratio: float, seed: int) -> tuple[pl.DataFrame,
                                                                       pl.DataFrame]:
    rng = np.random.default_rng(seed)
    n_test = int(round(frame.height * ratio))
    mask = np.zeros(frame.height, dtype=bool)
    mask[rng.permutation(frame.height)[:n_test]] = True
    return frame.filter(pl.Series(~mask)), frame.filter(pl.Series(mask))


def random_rating_split(ds: Dataset, test_ratio: float = 0.2, seed: int = 42) -> RatingSplit:
    """A seeded uniform hold-out of ``test_ratio`` of the ratings of ``ds``.

    Raises:
        ValueError: If the dataset has no ratings or the ratio is not in (0, 1).
    """
    _require_ratings(ds)
    if not 0 < test_ratio < 1:
        raise ValueError(f"test_ratio must be in (0, 1), got {test_ratio}")
    train, test = _partition(ds.interactions.frame, test_ratio, seed)
    return RatingSplit(f"seed{seed}", Interactions(train, ds.n_users, ds.n_items),
                       Interactions(test, ds.n_users, ds.n_items))


def holdout(train: Interactions, ratio: float, seed: int) -> tuple[Interactions, Interactions]:
    """Split training ratings into a fit part and a validation part (for early stopping
    and model selection; the test ratings are never touched)."""
    fit, valid = _partition(train.frame, ratio, seed)
    return (Interactions(fit, train.n_users, train.n_items),
            Interactions(valid, train.n_users, train.n_items))
