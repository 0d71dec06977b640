"""IdMap, Histories, Interactions, EvalSet and Dataset on handwritten tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from polars.testing import assert_frame_equal

from genrec.data.interactions import Columns, Dataset, EvalSet, Histories, IdMap, Interactions
from genrec.testing import TINY_HISTORIES, TINY_ITEM_COUNTS, tiny_dataset, tiny_frame


def _inter(rows: list[tuple[int, int, int]], n_users: int = 3, n_items: int = 5) -> Interactions:
    u, i, t = zip(*rows, strict=True)
    return Interactions(pl.DataFrame({"user": u, "item": i, "timestamp": t}), n_users, n_items)


def _rows(h: Histories) -> list[list[int]]:
    return [h.items[h.indptr[r]:h.indptr[r + 1]].tolist() for r in range(len(h))]


# -- IdMap ------------------------------------------------------------------------------------
def test_id_map_round_trip() -> None:
    m = IdMap(["b", "a", "c"])
    assert len(m) == 3
    np.testing.assert_array_equal(m.to_index(["c", "b", "a", "c"]), [2, 0, 1, 2])
    assert m.to_raw([2, 0, 1]) == ["c", "b", "a"]
    assert m.to_raw(m.to_index(["a", "c"])) == ["a", "c"]


def test_id_map_unknown_ids() -> None:
    m = IdMap(["x", "y"])
    idx = m.to_index(["y", "nope", "x"])
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, [1, -1, 0])
    np.testing.assert_array_equal(m.to_index(["nope"], missing=-7), [-7])


def test_id_map_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="unique"):
        IdMap(["a", "b", "a"])


def test_id_map_accepts_series_and_arrays() -> None:
    assert IdMap(pl.Series("whatever", ["p", "q"])).to_raw([1]) == ["q"]
    assert IdMap(np.array(["p", "q"])).to_index(["q"]).tolist() == [1]


# -- Histories --------------------------------------------------------------------------------
@pytest.fixture
def batch() -> Histories:
    return Histories.from_lists([[3, 1, 4, 1, 5], [], [2, 0]], n_items=6, users=[7, 8, 9])


def test_from_lists(batch: Histories) -> None:
    assert len(batch) == 3
    np.testing.assert_array_equal(batch.users, [7, 8, 9])
    np.testing.assert_array_equal(batch.indptr, [0, 5, 5, 7])
    np.testing.assert_array_equal(batch.lengths, [5, 0, 2])
    assert _rows(batch) == [[3, 1, 4, 1, 5], [], [2, 0]]
    # Without users the rows are anonymous (-1), never users 0..B-1 of the catalogue.
    np.testing.assert_array_equal(Histories.from_lists([[1], [2]], 3).users, [-1, -1])


def test_from_lists_rejects_out_of_range_items() -> None:
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        Histories.from_lists([[6]], n_items=6)
    with pytest.raises(ValueError):
        Histories.from_lists([[-1]], n_items=6)


def test_truncate_keeps_most_recent(batch: Histories) -> None:
    t = batch.truncate(2)
    assert _rows(t) == [[1, 5], [], [2, 0]]
    np.testing.assert_array_equal(t.users, batch.users)
    assert t.n_items == 6
    assert _rows(batch.truncate(1)) == [[5], [], [0]]
    assert batch.truncate(None) is batch
    assert batch.truncate(5) is batch  # nothing to cut


def test_padded_left_pads_most_recent_last(batch: Histories) -> None:
    p = batch.padded(3)
    assert p.dtype == torch.long
    assert p.tolist() == [[5, 2, 6], [0, 0, 0], [0, 3, 1]]  # ids shifted by 1, 0 = padding
    assert batch.padded(4, pad=-1, shift=0).tolist() == [[1, 4, 1, 5], [-1, -1, -1, -1],
                                                         [-1, -1, 2, 0]]


def test_mask_seen_full_and_subset(batch: Histories) -> None:
    scores = torch.zeros(3, 6)
    out = batch.mask_seen(scores)
    assert out is scores  # in place
    expected = torch.zeros(3, 6)
    expected[0, [1, 3, 4, 5]] = float("-inf")
    expected[2, [0, 2]] = float("-inf")
    torch.testing.assert_close(out, expected)
    items = np.array([5, 0, 2])
    sub = batch.mask_seen(torch.zeros(3, 3), items=items)
    assert sub.tolist() == [[float("-inf"), 0, 0], [0, 0, 0], [0, float("-inf"), float("-inf")]]


def test_slice(batch: Histories) -> None:
    s = batch.slice(1, 3)
    np.testing.assert_array_equal(s.users, [8, 9])
    np.testing.assert_array_equal(s.indptr, [0, 0, 2])
    assert _rows(s) == [[], [2, 0]]
    assert _rows(batch.slice(0, 1)) == [[3, 1, 4, 1, 5]]
    assert len(batch.slice(2, 2)) == 0


def test_to_csr_is_binary(batch: Histories) -> None:
    m = batch.to_csr()
    assert m.shape == (3, 6)
    assert m.dtype == np.float32
    expected = np.zeros((3, 6))
    expected[0, [1, 3, 4, 5]] = 1  # item 1 appears twice: still 1
    expected[2, [0, 2]] = 1
    np.testing.assert_array_equal(m.toarray(), expected)
    assert batch.to_csr(np.float64).dtype == np.float64


# -- Interactions -----------------------------------------------------------------------------
def test_interactions_missing_column() -> None:
    with pytest.raises(ValueError, match="timestamp"):
        Interactions(pl.DataFrame({"user": [0], "item": [0]}), 1, 1)


@pytest.mark.parametrize("rows, match", [
    ([(0, 0, 0), (3, 1, 1)], r"user ids must be in \[0, 3\)"),
    ([(0, 0, 0), (-1, 1, 1)], r"user ids must be in \[0, 3\)"),
    ([(0, 5, 0)], r"item ids must be in \[0, 5\)"),
    ([(0, -2, 0)], r"item ids must be in \[0, 5\)"),
])
def test_interactions_out_of_range_ids(rows: list[tuple[int, int, int]], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _inter(rows)


def test_interactions_sorted_by_user_then_time_stably() -> None:
    inter = _inter([(1, 4, 20), (0, 2, 5), (1, 3, 10), (0, 0, 5), (0, 1, 1)])
    assert inter.frame.select("user", "item", "timestamp").rows() == [
        (0, 1, 1), (0, 2, 5), (0, 0, 5), (1, 3, 10), (1, 4, 20)]  # tie at 5 keeps file order
    assert inter.frame.schema == {"user": pl.Int64, "item": pl.Int64, "timestamp": pl.Int64}
    assert len(inter) == 5 and repr(inter) == "Interactions(users=3, items=5, rows=5)"


def test_interactions_keep_rating_and_drop_other_columns() -> None:
    frame = pl.DataFrame({"user": [0], "item": [1], "timestamp": [3], "rating": [4.5],
                          "extra": ["x"]})
    inter = Interactions(frame, 1, 2)
    assert inter.frame.columns == ["user", "item", "timestamp", "rating"]


def test_item_counts_csr_and_histories() -> None:
    inter = _inter([(2, 1, 0), (0, 1, 1), (0, 3, 0), (2, 1, 5)], n_users=4)
    np.testing.assert_array_equal(inter.item_counts(), [0, 3, 0, 1, 0])
    np.testing.assert_array_equal(inter.to_csr().toarray(), [
        [0, 1, 0, 1, 0], [0, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 0]])
    h = inter.histories()  # every user of the id space, including those without events
    np.testing.assert_array_equal(h.users, [0, 1, 2, 3])
    assert _rows(h) == [[3, 1], [], [1, 1], []]
    sub = inter.histories(np.array([2, 1, 0]))
    np.testing.assert_array_equal(sub.users, [2, 1, 0])
    assert _rows(sub) == [[1, 1], [], [3, 1]]


def test_concat() -> None:
    a = _inter([(0, 1, 5), (1, 2, 0)])
    b = _inter([(0, 3, 1), (2, 4, 0)])
    c = a.concat(b)
    assert c.frame.rows() == [(0, 3, 1), (0, 1, 5), (1, 2, 0), (2, 4, 0)]
    with pytest.raises(ValueError, match="id spaces differ"):
        a.concat(_inter([(0, 0, 0)], n_items=6))


def test_interactions_save_load(tmp_path: Path) -> None:
    inter = tiny_dataset().interactions
    inter.save(tmp_path / "i")
    back = Interactions.load(tmp_path / "i")
    assert (back.n_users, back.n_items) == (inter.n_users, inter.n_items)
    assert_frame_equal(back.frame, inter.frame)


# -- EvalSet ----------------------------------------------------------------------------------
def test_eval_set_build_and_slice() -> None:
    hist = _inter([(0, 1, 0), (0, 2, 1), (1, 0, 0), (2, 3, 0)])
    tgt = _inter([(2, 4, 9), (0, 3, 9), (2, 4, 10), (2, 0, 11)])  # user 2 repeats item 4
    es = EvalSet.build(hist, tgt)
    assert len(es) == 2
    np.testing.assert_array_equal(es.histories.users, [0, 2])  # user 1 has no target
    assert _rows(es.histories) == [[1, 2], [3]]
    np.testing.assert_array_equal(es.target_indptr, [0, 1, 3])
    np.testing.assert_array_equal(es.target_items, [3, 4, 0])  # repeated target counts once
    part = es.slice(1, 2)
    np.testing.assert_array_equal(part.histories.users, [2])
    np.testing.assert_array_equal(part.target_indptr, [0, 2])
    np.testing.assert_array_equal(part.target_items, [4, 0])


# -- Dataset ----------------------------------------------------------------------------------
def test_from_raw_numbers_ids_by_first_appearance() -> None:
    ds = tiny_dataset()
    assert (ds.name, ds.n_users, ds.n_items, ds.order) == ("tiny", 7, 10, "timestamp")
    assert ds.user_map.raw.to_list() == [f"u{u}" for u in range(7)]
    assert ds.item_map.raw.to_list() == [f"i{i}" for i in range(10)]
    assert _rows(ds.interactions.histories()) == TINY_HISTORIES
    np.testing.assert_array_equal(ds.interactions.item_counts(), TINY_ITEM_COUNTS)
    assert ds.items.columns == ["item", "title", "category"]
    assert ds.items["item"].to_list() == list(range(10))
    assert ds.log == []


def test_from_raw_casts_ids_to_strings() -> None:
    ds = Dataset.from_raw("ints", pl.DataFrame({"user": [10, 10, 20], "item": [5, 6, 5],
                                                "timestamp": [1, 2, 3]}))
    assert ds.user_map.raw.to_list() == ["10", "20"]
    np.testing.assert_array_equal(ds.item_map.to_index(["6"]), [1])


def test_from_raw_without_timestamps_uses_file_order() -> None:
    frame = pl.DataFrame({"user": ["a", "b", "a", "a"], "item": ["x", "y", "z", "x"]})
    ds = Dataset.from_raw("seq", frame, order="timestamp")
    assert ds.order == "position"
    assert ds.interactions.frame.select("user", "item", "timestamp").rows() == [
        (0, 0, 0), (0, 2, 1), (0, 0, 2), (1, 1, 0)]


@pytest.mark.parametrize("frame, match", [
    (pl.DataFrame({"user": ["a"]}), "lack required columns"),
    (pl.DataFrame({"user": [], "item": []}, schema={"user": pl.String, "item": pl.String}),
     "no interactions"),
])
def test_from_raw_errors(frame: pl.DataFrame, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Dataset.from_raw("bad", frame)


def test_from_raw_feature_tables() -> None:
    items = pl.DataFrame({"title": ["X2", "Zed", "Ghost", "X"], "item": ["x", "z", "g", "x"]})
    users = pl.DataFrame({"user": ["b", "a"], "age": [30, 40]})
    ds = Dataset.from_raw("f", pl.DataFrame({"user": ["a", "b"], "item": ["z", "x"]}),
                          items, users)
    # Ids first, unknown item dropped, duplicate id keeps the first row, sorted by dense id.
    assert ds.items.rows() == [(0, "Zed"), (1, "X2")]
    assert ds.users.rows() == [(0, 40), (1, 30)]
    with pytest.raises(ValueError, match="lacks the id column 'item'"):
        Dataset.from_raw("f", pl.DataFrame({"user": ["a"], "item": ["z"]}),
                         pl.DataFrame({"id": ["z"]}))


def test_subset_compacts_ids_and_keeps_raw_pairs() -> None:
    ds = tiny_dataset()
    frame = ds.interactions.frame.filter(pl.col("user").is_in([1, 4]))  # items 1 2 4 5 8 9
    sub = ds.subset(frame)
    assert (sub.n_users, sub.n_items) == (2, 6)
    assert sub.user_map.raw.to_list() == ["u1", "u4"]
    assert sub.item_map.raw.to_list() == ["i1", "i2", "i4", "i5", "i8", "i9"]
    raw_before = sorted(zip(ds.user_map.to_raw(frame["user"].to_numpy()),
                            ds.item_map.to_raw(frame["item"].to_numpy()), strict=True))
    raw_after = sorted(zip(sub.user_map.to_raw(sub.interactions.users),
                           sub.item_map.to_raw(sub.interactions.items), strict=True))
    assert raw_before == raw_after
    assert sub.items["item"].to_list() == list(range(6))
    assert sub.items["title"].to_list() == ["Item 1", "Item 2", "Item 4", "Item 5", "Item 8",
                                            "Item 9"]
    assert sub.name == ds.name and sub.order == ds.order


def test_dataset_save_load_round_trip(tmp_path: Path) -> None:
    ds = Dataset.from_raw("tiny", tiny_frame(), pl.DataFrame({"item": ["i3"], "x": [1.5]}),
                          pl.DataFrame({"user": ["u2"], "age": [33]}),
                          log=[{"step": "read", "kept": 26, "dropped": 0, "reason": "-"}])
    ds.save(tmp_path / "ds")
    back = Dataset.load(tmp_path / "ds")
    assert (back.name, back.order, back.log) == (ds.name, ds.order, ds.log)
    assert (back.n_users, back.n_items) == (ds.n_users, ds.n_items)
    assert_frame_equal(back.interactions.frame, ds.interactions.frame)
    assert back.user_map.raw.to_list() == ds.user_map.raw.to_list()
    assert back.item_map.raw.to_list() == ds.item_map.raw.to_list()
    assert_frame_equal(back.items, ds.items)
    assert_frame_equal(back.users, ds.users)
    assert Columns.rating in back.interactions.frame.columns


def test_position_only_dataset_save_load(tmp_path: Path) -> None:
    ds = tiny_dataset(timestamps=False, ratings=False)
    assert ds.order == "position" and ds.items.height == 10
    ds.save(tmp_path / "ds")
    back = Dataset.load(tmp_path / "ds")
    assert back.order == "position"
    assert_frame_equal(back.interactions.frame, ds.interactions.frame)


def test_null_times_or_ids_are_refused_not_sorted_first() -> None:
    frame = pl.DataFrame({"user": [0, 0, 0], "item": [0, 1, 2], "timestamp": [10, None, 30]})
    with pytest.raises(ValueError, match=r"null values in \['timestamp'\]"):
        Interactions(frame, n_users=1, n_items=3)
    frame = pl.DataFrame({"user": [0, None], "item": [0, 1], "timestamp": [1, 2]})
    with pytest.raises(ValueError, match="null values in \\['user'\\]"):
        Interactions(frame, n_users=1, n_items=2)
