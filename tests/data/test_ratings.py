"""Rating-prediction splits on the real ML-100K files: no test rating leaks into training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from genrec.data.interactions import Columns
from genrec.data.ratings import holdout, official_folds, random_rating_split
from genrec.data.recipes import load_dataset


@pytest.fixture(scope="module")
def ml100k(data_dir: Path):
    return load_dataset("ml-100k", data_dir=data_dir, download=False)


def _pairs(frame: pl.DataFrame) -> np.ndarray:
    return frame[Columns.user].to_numpy() * 10_000 + frame[Columns.item].to_numpy()


def test_official_folds_partition_u_data_without_leaks(ml100k, data_dir: Path) -> None:
    folds = official_folds(ml100k, data_dir / "ml-100k" / "raw")
    assert [f.name for f in folds] == ["u1", "u2", "u3", "u4", "u5"]
    all_pairs = _pairs(ml100k.interactions.frame)
    test_union = []
    for f in folds:
        train, test = _pairs(f.train.frame), _pairs(f.test.frame)
        assert len(train) == 80_000 and len(test) == 20_000
        assert not np.intersect1d(train, test).size          # no test pair in training
        assert np.array_equal(np.sort(np.concatenate([train, test])), np.sort(all_pairs))
        test_union.append(test)
    # The five test sets partition the 100,000 ratings.
    assert np.array_equal(np.sort(np.concatenate(test_union)), np.sort(all_pairs))
    # Ratings are those of u.data for the same (user, item).
    full = ml100k.interactions.frame.select(Columns.user, Columns.item, Columns.rating)
    joined = folds[0].test.frame.join(full, on=[Columns.user, Columns.item], suffix="_full")
    assert joined.height == 20_000
    assert (joined[Columns.rating] == joined[f"{Columns.rating}_full"]).all()


def test_random_split_is_seeded_and_disjoint(ml100k) -> None:
    a = random_rating_split(ml100k, 0.1, seed=3)
    b = random_rating_split(ml100k, 0.1, seed=3)
    c = random_rating_split(ml100k, 0.1, seed=4)
    assert len(a.test) == 10_000 and len(a.train) == 90_000
    assert np.array_equal(_pairs(a.test.frame), _pairs(b.test.frame))
    assert not np.array_equal(np.sort(_pairs(a.test.frame)), np.sort(_pairs(c.test.frame)))
    assert not np.intersect1d(_pairs(a.train.frame), _pairs(a.test.frame)).size


def test_holdout_splits_training_only(ml100k) -> None:
    sp = random_rating_split(ml100k, 0.2, seed=1)
    fit, valid = holdout(sp.train, 0.05, seed=0)
    assert len(fit) + len(valid) == len(sp.train) and len(valid) == 4_000
    assert not np.intersect1d(_pairs(valid.frame), _pairs(sp.test.frame)).size
    assert not np.intersect1d(_pairs(fit.frame), _pairs(valid.frame)).size


def test_implicit_dataset_is_refused(ml100k) -> None:
    implicit = ml100k.subset(ml100k.interactions.frame.drop(Columns.rating))
    with pytest.raises(ValueError, match="explicit ratings"):
        random_rating_split(implicit)
