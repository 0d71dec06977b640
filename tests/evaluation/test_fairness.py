"""User groups, per-group metrics and gaps, item-side exposure."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from genrec.evaluation.fairness import (
    MIN_GROUP_USERS,
    activity_groups,
    age_groups,
    exposure_fairness,
    group_gaps,
    group_metrics,
    group_summary,
    item_exposure_disparity,
    user_groups,
)


def test_activity_tertiles_keep_ties_together() -> None:
    lengths = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9])
    labels = activity_groups(lengths)
    assert labels.tolist() == ["low (1-3)"] * 3 + ["medium (4-6)"] * 3 + ["high (7-9)"] * 3
    tied = activity_groups(np.array([5, 5, 5, 5, 1, 9]))
    assert len({tied[i] for i in range(4)}) == 1
    assert activity_groups(np.array([])).size == 0


def test_age_bins_cover_ml100k_and_ml1m_codes() -> None:
    assert age_groups(np.array([7, 24, 25, 34, 35, 44, 45, 73])).tolist() == [
        "under 25", "under 25", "25-34", "25-34", "35-44", "35-44", "45+", "45+"]
    assert age_groups(np.array([1, 18, 56, -1, np.nan])).tolist() == [
        "under 25", "under 25", "45+", "unknown", "unknown"]


def test_user_groups_from_feature_table() -> None:
    feats = pl.DataFrame({"user": [0, 1, 2], "age": [20, 40, None], "gender": ["F", "M", None]})
    g = user_groups(np.array([2, 0, 1]), np.array([3, 1, 2]), feats)
    assert g["gender"].tolist() == ["unknown", "F", "M"]
    assert g["age"].tolist() == ["unknown", "under 25", "35-44"]
    assert set(user_groups(np.array([0]), np.array([1]), pl.DataFrame())) == {"activity"}


def test_group_metrics_and_gaps() -> None:
    labels = np.array(["x"] * 200 + ["y"] * 200, dtype=object)
    rng = np.random.default_rng(0)
    values = {"m": np.concatenate([rng.normal(1.0, 0.1, 200), rng.normal(0.5, 0.1, 200)]),
              "same": rng.normal(0, 1, 400)}
    t = group_metrics(values, labels, n_boot=200)
    row = t.filter((pl.col("metric") == "m") & (pl.col("group") == "x")).row(0, named=True)
    assert row["n"] == 200 and row["low"] < row["mean"] < row["high"]
    assert row["mean"] == pytest.approx(values["m"][:200].mean())
    gaps = {r["metric"]: r for r in group_gaps(values, labels, n_boot=200).iter_rows(named=True)}
    assert gaps["m"]["best"] == "x" and gaps["m"]["worst"] == "y"
    assert gaps["m"]["gap"] == pytest.approx(0.5, abs=0.05) and gaps["m"]["significant"]
    assert gaps["m"]["low"] > 0.4
    assert not gaps["same"]["significant"]
    assert group_gaps(values, np.array(["x"] * 400, dtype=object)).height == 0


def test_gap_leaves_out_tiny_and_unknown_groups() -> None:
    rng = np.random.default_rng(0)
    n = MIN_GROUP_USERS
    labels = np.array(["x"] * 100 + ["y"] * 100 + ["one"] + ["small"] * (n - 1)
                      + ["unknown"] * 100, dtype=object)
    m = np.concatenate([rng.normal(0.6, 0.1, 100), rng.normal(0.5, 0.1, 100), [5.0],
                        np.full(n - 1, -5.0), np.full(100, 9.0)])
    groups, gaps = group_summary({"m": m}, labels, n_boot=100)
    n_of = dict(zip(groups["group"].to_list(), groups["n"].to_list()))
    assert n_of == {"x": 100, "y": 100, "one": 1, "small": n - 1, "unknown": 100}  # all shown
    gap = gaps.row(0, named=True)
    assert (gap["best"], gap["worst"]) == ("x", "y")
    assert gap["gap"] == pytest.approx(m[:100].mean() - m[100:200].mean())
    # fewer than two eligible groups: no gap, however far apart the others are
    only = group_summary({"m": m[200:]}, labels[200:], n_boot=20)[1]
    assert only.height == 0
    assert group_summary({"m": m}, labels, n_boot=20, min_group_size=1)[1]["best"][0] == "one"


def test_group_summary_without_metrics_is_empty() -> None:
    groups, gaps = group_summary({}, np.array(["x", "y"], dtype=object))
    assert groups.height == 0 and gaps.height == 0


def test_exposure_fairness_hand_case() -> None:
    counts = np.array([50, 30, 10, 5, 3, 2, 0, 0, 0, 0])  # head = top 20% = items 0, 1
    lists = np.array([[0, 1], [0, 2], [0, 3]])
    out = exposure_fairness(lists, counts, 2)
    assert out["head_exposure_share"] == pytest.approx(4 / 6)
    assert out["head_train_share"] == pytest.approx(80 / 100)
    assert out["head_tail_ratio"] == pytest.approx((4 / 2) / (2 / 8))
    assert out["zero_exposure_share"] == pytest.approx(0.6)
    # exposure shares (3,1,1,1)/6 vs popularity (50,30,10,5,3,2)/100
    e = np.array([3, 1, 1, 1, 0, 0, 0, 0, 0, 0]) / 6
    assert out["disparity"] == pytest.approx(0.5 * np.abs(e - counts / 100).sum())
    only_head = exposure_fairness(np.array([[0, 1]]), counts, 2)
    assert only_head["head_tail_ratio"] == float("inf")


def test_item_exposure_disparity() -> None:
    d = item_exposure_disparity(np.array([2.0, 2.0, 0.0]), np.array([1.0, 3.0, 0.0]))
    np.testing.assert_allclose(d["difference"], [0.25, -0.25, 0.0])
    np.testing.assert_allclose(d["lift"][:2], [2.0, 2 / 3])
    assert np.isnan(d["lift"][2]) and d["tv_distance"] == pytest.approx(0.25)
