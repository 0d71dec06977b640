"""Preprocessing steps on handwritten tables: what each keeps, drops and logs."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from genrec.data.interactions import Dataset
from genrec.data.preprocess import (
    PreprocessConfig,
    deduplicate,
    k_core,
    max_history,
    preprocess,
    to_implicit,
)
from genrec.testing import tiny_dataset


def _ds(rows: list[tuple[str, str, int] | tuple[str, str, int, float]]) -> Dataset:
    cols = ["user", "item", "timestamp", "rating"][: len(rows[0])]
    return Dataset.from_raw("hand", pl.DataFrame(rows, schema=cols, orient="row"))


def _raw(ds: Dataset) -> list[tuple[str, str, int]]:
    """Rows as (raw user, raw item, timestamp), in table order (user, then time)."""
    f = ds.interactions.frame
    return list(zip(ds.user_map.to_raw(f["user"].to_numpy()),
                    ds.item_map.to_raw(f["item"].to_numpy()), f["timestamp"].to_list(),
                    strict=True))


def _check_entry(entry: dict[str, object], step: str, kept: int, dropped: int) -> None:
    assert entry["step"] == step
    assert (entry["kept"], entry["dropped"]) == (kept, dropped)
    assert isinstance(entry["reason"], str) and entry["reason"]
    assert isinstance(entry["params"], dict)


# -- implicit ---------------------------------------------------------------------------------
def test_to_implicit_keeps_ratings_at_or_above_threshold() -> None:
    ds = _ds([("a", "x", 1, 5.0), ("a", "y", 2, 3.0), ("b", "x", 1, 3.5), ("b", "z", 2, 1.0)])
    out = to_implicit(ds, 3.5)
    assert _raw(out) == [("a", "x", 1), ("b", "x", 1)]
    assert (out.n_users, out.n_items) == (2, 1)  # ids compacted: y and z are gone
    _check_entry(out.log[-1], "implicit", kept=2, dropped=2)
    assert out.log[-1]["params"] == {"threshold": 3.5}


def test_to_implicit_needs_ratings() -> None:
    with pytest.raises(ValueError, match="no ratings"):
        to_implicit(tiny_dataset(ratings=False), 3.0)


# -- dedup ------------------------------------------------------------------------------------
DUPES = [("a", "x", 5), ("a", "y", 2), ("a", "x", 1), ("a", "x", 9), ("b", "x", 3),
         ("b", "y", 4), ("b", "y", 8)]


def test_deduplicate_keep_first() -> None:
    out = deduplicate(_ds(DUPES), "first")
    assert _raw(out) == [("a", "x", 1), ("a", "y", 2), ("b", "x", 3), ("b", "y", 4)]
    _check_entry(out.log[-1], "dedup", kept=4, dropped=3)


def test_deduplicate_keep_last() -> None:
    out = deduplicate(_ds(DUPES), "last")
    assert _raw(out) == [("a", "y", 2), ("a", "x", 9), ("b", "x", 3), ("b", "y", 8)]
    assert out.log[-1]["params"] == {"keep": "last"}


# -- k-core -----------------------------------------------------------------------------------
# With min 2 per user and per item, one pass (items, then users) drops only d; that leaves z
# with one user, and dropping z leaves c with one item: three rounds reach the fixed point.
CHAIN = [("a", "x", 1), ("a", "y", 2), ("b", "x", 1), ("b", "y", 2), ("c", "y", 1),
         ("c", "z", 2), ("d", "z", 1)]


def _one_pass(frame: pl.DataFrame, min_user: int, min_item: int) -> pl.DataFrame:
    frame = frame.filter(pl.len().over("item") >= min_item)
    return frame.filter(pl.len().over("user") >= min_user)


def _satisfies(frame: pl.DataFrame, min_user: int, min_item: int) -> bool:
    return bool(frame.group_by("user").len()["len"].min() >= min_user  # type: ignore[operator]
                and frame.group_by("item").len()["len"].min() >= min_item)  # type: ignore[operator]


def test_k_core_reaches_a_fixed_point() -> None:
    ds = _ds(CHAIN)
    assert not _satisfies(_one_pass(ds.interactions.frame, 2, 2), 2, 2), "one pass is not enough"
    out = k_core(ds, 2, 2)
    assert _raw(out) == [("a", "x", 1), ("a", "y", 2), ("b", "x", 1), ("b", "y", 2)]
    assert _satisfies(out.interactions.frame, 2, 2)
    entry = out.log[-1]
    _check_entry(entry, "k_core", kept=4, dropped=3)
    assert entry["params"]["rounds"] >= 3  # type: ignore[index]


def test_k_core_on_random_data_satisfies_both_bounds() -> None:
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{i}", t) for t, (u, i) in
            enumerate(zip(rng.integers(0, 80, 600), rng.zipf(1.6, 600) % 120, strict=True))]
    ds = deduplicate(_ds(rows))
    out = k_core(ds, 5, 4)
    assert _satisfies(out.interactions.frame, 5, 4)
    assert not _satisfies(_one_pass(ds.interactions.frame, 5, 4), 5, 4)
    # Nothing that survives is lost: the kept rows are exactly the original rows of the core.
    kept = set(_raw(out))
    assert kept <= set(_raw(ds))


def test_k_core_only_users() -> None:
    out = k_core(_ds(CHAIN), 2, 0)
    assert {u for u, _, _ in _raw(out)} == {"a", "b", "c"}


def test_k_core_already_satisfied_keeps_everything() -> None:
    ds = tiny_dataset()
    out = k_core(ds, 2, 1)  # every tiny user has >= 2 events
    assert out.n_users == ds.n_users and len(out.interactions) == len(ds.interactions)
    _check_entry(out.log[-1], "k_core", kept=26, dropped=0)


# -- max history ------------------------------------------------------------------------------
def test_max_history_keeps_the_most_recent() -> None:
    ds = _ds([("a", "w", 4), ("a", "x", 1), ("a", "y", 3), ("a", "z", 2), ("b", "x", 7)])
    out = max_history(ds, 2)
    # b has fewer than 2 events and keeps them all.
    assert _raw(out) == [("a", "y", 3), ("a", "w", 4), ("b", "x", 7)]
    _check_entry(out.log[-1], "max_history", kept=3, dropped=2)


# -- the whole recipe -------------------------------------------------------------------------
def test_preprocess_applies_steps_in_order_and_logs_each() -> None:
    rows = [("a", "x", 1, 5.0), ("a", "y", 2, 4.0), ("a", "x", 3, 4.0), ("a", "z", 4, 5.0),
            ("b", "x", 1, 5.0), ("b", "y", 2, 1.0), ("b", "z", 3, 4.0), ("c", "x", 1, 2.0),
            ("c", "z", 2, 5.0), ("d", "y", 1, 5.0)]
    cfg = PreprocessConfig(rating_threshold=4.0, dedup="last", min_user_interactions=2,
                           min_item_interactions=2, max_history_length=2)
    out = preprocess(_ds(rows), cfg)
    assert [e["step"] for e in out.log] == ["implicit", "dedup", "k_core", "max_history"]
    for before, entry in zip([10, *[e["kept"] for e in out.log[:-1]]], out.log, strict=True):
        assert entry["kept"] + entry["dropped"] == before
    # implicit drops 3 (b-y, c-x); dedup keeps a's last x (t=3); k_core drops c and d
    # (one event each) and then y (one user); max_history keeps a's last 2.
    assert [e["kept"] for e in out.log] == [8, 7, 4, 4]
    assert _raw(out) == [("a", "x", 3), ("a", "z", 4), ("b", "x", 1), ("b", "z", 3)]


def test_preprocess_does_not_touch_its_input() -> None:
    ds = tiny_dataset()
    out = preprocess(ds, PreprocessConfig(dedup="first", max_history_length=10))  # drops nothing
    assert [e["step"] for e in out.log] == ["dedup", "max_history"]
    assert ds.log == [] and out is not ds
    assert len(out.interactions) == len(ds.interactions)


def test_default_recipe_only_deduplicates() -> None:
    out = preprocess(tiny_dataset(), PreprocessConfig())
    assert [e["step"] for e in out.log] == ["dedup"]


def test_step_that_drops_everything_raises() -> None:
    with pytest.raises(ValueError, match="dropped every interaction"):
        to_implicit(tiny_dataset(), 99.0)


def test_config_rejects_unknown_keys_and_values() -> None:
    with pytest.raises(ValidationError):
        PreprocessConfig(min_users=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        PreprocessConfig(dedup="middle")  # type: ignore[arg-type]


@pytest.mark.parametrize("key, value", [("min_user_interactions", -1),
                                        ("min_item_interactions", -5),
                                        ("max_history_length", 0)])
def test_negative_filters_are_refused(key: str, value: int) -> None:
    with pytest.raises(ValidationError, match=key):
        PreprocessConfig(**{key: value})
