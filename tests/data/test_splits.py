"""Train / valid / test splits: leave-one-out, temporal, random; saving and reloading."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from pydantic import ValidationError

from genrec.data.interactions import Dataset, Interactions
from genrec.data.splits import Split, SplitConfig, fingerprint, split
from genrec.testing import TINY_HISTORIES, random_dataset, tiny_dataset


def _per_user(inter: Interactions) -> list[list[int]]:
    h = inter.histories()
    return [h.items[h.indptr[u]:h.indptr[u + 1]].tolist() for u in range(len(h))]


def _all_rows(s: Split) -> list[tuple[int, ...]]:
    return sorted(r for part in (s.train, s.valid, s.test) for r in part.frame.rows())


# -- leave one out ----------------------------------------------------------------------------
def test_leave_one_out_by_hand() -> None:
    ds = tiny_dataset()
    s = split(ds, SplitConfig(kind="leave_one_out"))
    assert (s.n_users, s.n_items) == (ds.n_users, ds.n_items)
    test, valid, train = _per_user(s.test), _per_user(s.valid), _per_user(s.train)
    for u, hist in enumerate(TINY_HISTORIES):
        if len(hist) >= 3:
            assert test[u] == hist[-1:] and valid[u] == hist[-2:-1] and train[u] == hist[:-2]
        else:  # u6 has two events: train only
            assert test[u] == valid[u] == [] and train[u] == hist
    assert _all_rows(s) == sorted(ds.interactions.frame.rows())


def test_leave_one_out_uses_time_not_file_order() -> None:
    frame = pl.DataFrame({"user": ["a"] * 4, "item": ["w", "x", "y", "z"],
                          "timestamp": [40, 10, 30, 20]})
    ds = Dataset.from_raw("t", frame)
    s = split(ds)
    raw = ds.item_map.to_raw
    assert raw(s.test.items) == ["w"] and raw(s.valid.items) == ["y"]
    assert raw(s.train.items) == ["x", "z"]


def test_eval_sets_have_the_right_histories() -> None:
    s = split(tiny_dataset())
    valid, test = s.valid_set(), s.test_set()
    np.testing.assert_array_equal(valid.histories.users, np.arange(6))  # u6: no target
    np.testing.assert_array_equal(test.histories.users, np.arange(6))
    for row in range(6):
        hist = TINY_HISTORIES[row]
        v = valid.histories.items[valid.histories.indptr[row]:valid.histories.indptr[row + 1]]
        t = test.histories.items[test.histories.indptr[row]:test.histories.indptr[row + 1]]
        assert v.tolist() == hist[:-2]  # valid: history = train
        assert t.tolist() == hist[:-1]  # test: history = train + valid, in time order
        assert valid.target_items[valid.target_indptr[row]:valid.target_indptr[row + 1]
                                  ].tolist() == [hist[-2]]
        assert test.target_items[test.target_indptr[row]:test.target_indptr[row + 1]
                                 ].tolist() == [hist[-1]]


# -- temporal ---------------------------------------------------------------------------------
def test_temporal_respects_the_cut_offs() -> None:
    ds = random_dataset(n_users=50, n_items=30, min_len=5, max_len=15, seed=1)
    s = split(ds, SplitConfig(kind="temporal", valid_ratio=0.2, test_ratio=0.1))
    t_train, t_valid, t_test = (p.frame["timestamp"] for p in (s.train, s.valid, s.test))
    assert t_train.max() < t_valid.min()  # type: ignore[operator]
    assert t_valid.max() < t_test.min()  # type: ignore[operator]
    n = len(ds.interactions)
    assert abs(len(s.test) / n - 0.1) < 0.01
    assert abs(len(s.valid) / n - 0.2) < 0.01
    assert _all_rows(s) == sorted(ds.interactions.frame.rows())


def test_temporal_refuses_position_only_data() -> None:
    ds = tiny_dataset(timestamps=False)
    with pytest.raises(ValueError, match="temporal split needs timestamps.*leave_one_out"):
        split(ds, SplitConfig(kind="temporal"))


def _timed(times: list[int]) -> Dataset:
    frame = pl.DataFrame({"user": [f"u{k % 5}" for k in range(len(times))],
                          "item": [f"i{k % 7}" for k in range(len(times))], "timestamp": times})
    return Dataset.from_raw("ties", frame)


@pytest.mark.parametrize(("times", "part", "tie"), [
    ([100] * 40, "train", "40 of 40 interactions share timestamp 100"),
    ([100] * 30 + [200] * 10, "valid", "10 of 40 interactions share timestamp 200"),
])
def test_temporal_refuses_an_empty_part_from_ties(times: list[int], part: str, tie: str) -> None:
    with pytest.raises(ValueError, match=f"leaves {part} empty: {tie}.*leave_one_out or random"):
        split(_timed(times), SplitConfig(kind="temporal", valid_ratio=0.1, test_ratio=0.1))


def test_temporal_warns_when_ties_skew_the_shares(caplog: pytest.LogCaptureFixture) -> None:
    ds = _timed(list(range(1, 61)) + [100] * 25 + list(range(101, 116)))
    with caplog.at_level(logging.WARNING, logger="genrec.data.splits"):
        s = split(ds, SplitConfig(kind="temporal", valid_ratio=0.1, test_ratio=0.1))
    assert (len(s.train), len(s.valid), len(s.test)) == (60, 30, 10)
    assert any("give shares train 0.600, valid 0.300, test 0.100 instead of 0.800, 0.100, "
               "0.100" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="genrec.data.splits"):
        split(_timed(list(range(100))), SplitConfig(kind="temporal"))
    assert not caplog.records
    # valid_ratio 0: an empty valid part is what was asked for.
    s = split(_timed([100] * 30 + [200] * 10), SplitConfig(kind="temporal", valid_ratio=0.0,
                                                           test_ratio=0.25))
    assert (len(s.train), len(s.valid), len(s.test)) == (30, 0, 10)


# -- random -----------------------------------------------------------------------------------
def test_random_ratios_and_seed() -> None:
    ds = random_dataset(n_users=300, n_items=50, min_len=5, max_len=20, seed=2)
    cfg = SplitConfig(kind="random", valid_ratio=0.15, test_ratio=0.25, seed=5)
    s = split(ds, cfg)
    n = len(ds.interactions)
    assert n > 3000
    assert abs(len(s.test) / n - 0.25) < 0.03
    assert abs(len(s.valid) / n - 0.15) < 0.03
    assert _all_rows(s) == sorted(ds.interactions.frame.rows())
    again = split(ds, cfg)
    for a, b in zip((s.train, s.valid, s.test), (again.train, again.valid, again.test),
                    strict=True):
        assert_frame_equal(a.frame, b.frame)
    other = split(ds, cfg.model_copy(update={"seed": 6}))
    assert not other.test.frame.equals(s.test.frame)


# -- config -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [
    {"valid_ratio": 0.5, "test_ratio": 0.5},
    {"test_ratio": 0.0},
    {"valid_ratio": -0.1},
    {"kind": "stratified"},
    {"ratio": 0.1},
])
def test_split_config_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SplitConfig(**kwargs)  # type: ignore[arg-type]


# -- persistence ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["leave_one_out", "temporal", "random"])
def test_save_load_round_trip(kind: str, tmp_path: Path) -> None:
    ds = tiny_dataset()
    s = split(ds, SplitConfig(kind=kind, valid_ratio=0.2, test_ratio=0.2))  # type: ignore[arg-type]
    s.save(tmp_path / "split")
    back = Split.load(tmp_path / "split", ds)
    assert back.config == s.config
    assert back.dataset_fingerprint == s.dataset_fingerprint == fingerprint(ds.interactions)
    for a, b in zip((s.train, s.valid, s.test), (back.train, back.valid, back.test),
                    strict=True):
        assert (a.n_users, a.n_items) == (b.n_users, b.n_items)
        assert_frame_equal(a.frame, b.frame)
    assert Split.load(tmp_path / "split").config == s.config  # no dataset: no check


def test_load_against_another_dataset_raises(tmp_path: Path) -> None:
    ds = tiny_dataset()
    split(ds).save(tmp_path / "split")
    other = ds.subset(ds.interactions.frame.filter(pl.col("user") != 6))
    with pytest.raises(ValueError, match="fingerprint"):
        Split.load(tmp_path / "split", other)


def test_fingerprint_sees_content_not_identity() -> None:
    a, b = tiny_dataset(), tiny_dataset()
    assert fingerprint(a.interactions) == fingerprint(b.interactions)
    swapped = a.interactions.frame.with_columns(
        pl.when(pl.col("item") == 0).then(1).when(pl.col("item") == 1).then(0)
        .otherwise(pl.col("item")).alias("item"))
    assert fingerprint(Interactions(swapped, 7, 10)) != fingerprint(a.interactions)
    assert fingerprint(Interactions(a.interactions.frame, 7, 11)) != fingerprint(a.interactions)


# -- cold start ---------------------------------------------------------------------------------
def test_cold_items_never_reach_training_but_stay_targets(tmp_path: Path) -> None:
    ds = random_dataset(n_users=200, n_items=50, min_len=4, max_len=12, seed=5)
    plain = split(ds)
    s = split(ds, SplitConfig(cold_items=0.2))
    assert len(s.cold_items) == 10 and np.all(np.diff(s.cold_items) > 0)
    assert not np.isin(s.train.items, s.cold_items).any()
    # valid / test are the plain leave-one-out ones, cold targets included
    assert_frame_equal(s.valid.frame, plain.valid.frame)
    assert_frame_equal(s.test.frame, plain.test.frame)
    assert np.isin(s.test.items, s.cold_items).any()
    # train lost exactly the cold rows
    kept = plain.train.frame.filter(~pl.col("item").is_in(s.cold_items.tolist()))
    assert_frame_equal(s.train.frame, kept)
    s.save(tmp_path / "split")
    np.testing.assert_array_equal(Split.load(tmp_path / "split", ds).cold_items, s.cold_items)
    assert len(plain.cold_items) == 0
    with pytest.raises(ValidationError):
        SplitConfig(cold_items=1.0)


def test_cold_warm_report_groups_users_by_target() -> None:
    from genrec.evaluation.evaluator import EvalResult
    from genrec.runs.experiment import cold_warm

    ds = random_dataset(n_users=100, n_items=30, min_len=4, max_len=8, seed=2)
    s = split(ds, SplitConfig(cold_items=0.3))
    test = s.test_set()
    hits = np.isin(test.target_items, s.cold_items).astype(float)  # 1 exactly for cold targets
    res = EvalResult(test.histories.users, {"recall@10": hits})
    out = cold_warm(res, test, s.cold_items)
    assert out["users"]["cold"] + out["users"]["warm"] == len(test)
    assert out["cold"]["recall@10"] == 1.0 and out["warm"]["recall@10"] == 0.0
    assert out["users"]["cold"] == int(hits.sum()) and out["mixed_users"] == 0
