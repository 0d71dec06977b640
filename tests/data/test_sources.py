"""One's own files by config: formats, column mappings, metadata id columns, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from pydantic import ValidationError

from genrec.data import DataError
from genrec.data.sources import DataConfig, FeatureSource, load_data, load_raw

CSV = "uid,iid,ts,kind\nu1,a,1,buy\nu1,b,2,view\n   ,a,3,buy\nu2,,4,buy\nu2,b,5,buy\nu2,c,6,buy\n"


def _write(tmp_path: Path, name: str, text: str) -> str:
    (tmp_path / name).write_text(text, encoding="utf-8")
    return str(tmp_path / name)


def test_name_and_format_come_from_the_file(tmp_path: Path) -> None:
    cfg = DataConfig(path=_write(tmp_path, "shop.csv", CSV),
                     columns={"user": "uid", "item": "iid", "timestamp": "ts"})
    assert (cfg.name, cfg.format) == ("shop", "csv")
    assert DataConfig().name == "ml-100k"  # no path: the default recipe
    assert DataConfig(path="x.tsv.gz").format == "tsv"
    with pytest.raises(ValidationError, match="cannot tell the format"):
        DataConfig(path="x.data")
    with pytest.raises(ValidationError, match="set dataset.path too"):
        DataConfig(columns={"user": "u"})


def test_blank_ids_are_dropped_by_reason_and_events_filtered(tmp_path: Path) -> None:
    cfg = DataConfig(path=_write(tmp_path, "shop.csv", CSV), keep_events=["buy"],
                     columns={"user": "uid", "item": "iid", "timestamp": "ts", "event": "kind"})
    ds = load_raw(cfg)
    read = next(e for e in ds.log if e["step"] == "read")
    assert read["reason"] == {"missing item id": 1, "blank user id": 1,
                              "event 'view' not kept": 1}
    assert read["kept"] == 3 and ds.n_users == 2  # no user made of spaces
    assert sorted(ds.user_map.raw.to_list()) == ["u1", "u2"]


def test_tsv_jsonl_and_dates_as_text(tmp_path: Path) -> None:
    tsv = _write(tmp_path, "a.tsv", "user\titem\ttimestamp\nu1\ta\t2020-01-02\nu1\tb\t2020-01-01\n")
    ds = load_raw(DataConfig(path=tsv))
    assert ds.order == "timestamp" and ds.item_map.to_raw(ds.interactions.items) == [
        "b", "a"]
    entry = next(e for e in ds.log if e["step"] == "time_order")
    assert entry["users_out_of_order"] == 1
    lines = [json.dumps({"user": "u1", "item": "a"}), "{not json", json.dumps([1]),
             json.dumps({"user": ["u1"], "item": "b"}), json.dumps({"user": "u2", "item": "b"})]
    ds = load_raw(DataConfig(path=_write(tmp_path, "e.jsonl", "\n".join(lines))))
    read = next(e for e in ds.log if e["step"] == "read")
    assert read["reason"] == {"invalid JSON": 1, "not a JSON object": 1, "non-scalar user": 1}
    assert ds.n_users == 2


def test_parquet_list_column_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    pl.DataFrame({"user": [["u1"], ["u2"]], "item": ["a", "b"]}).write_parquet(path)
    with pytest.raises(DataError, match=r"one value per row, but 'user' is List\(String\)"):
        load_raw(DataConfig(path=str(path)))


@pytest.mark.parametrize("key", ["asin", "p5_item_id"])
def test_metadata_keyed_by_a_declared_id_column(tmp_path: Path, key: str) -> None:
    inter = "user,item\nu1,A1\nu1,A2\nu2,A2\n" if key == "asin" else "user,item\nu1,1\nu1,2\nu2,2\n"
    meta = [{"asin": "A1", "p5_item_id": 1, "title": "Red"},
            {"asin": "A2", "p5_item_id": 2, "title": "Blue"},
            {"asin": "A2", "p5_item_id": 2, "title": "dup"},
            {"asin": "   ", "p5_item_id": 3, "title": "blank"}]
    text = "\n".join(json.dumps(m) for m in meta)
    cfg = DataConfig(path=_write(tmp_path, "i.csv", inter),
                     items=FeatureSource(path=_write(tmp_path, "m.jsonl", text), id=key))
    ds = load_data(cfg)
    assert ds.items["title"].to_list() == ["Red", "Blue"]
    read = next(e for e in ds.log if e.get("table") == "items")
    assert read["duplicate_ids"] == 1
    if key == "asin":
        assert read["reason"] == {"blank item id": 1}


def test_metadata_from_csv_with_renames_and_lists(tmp_path: Path) -> None:
    meta = _write(tmp_path, "m.csv", "sku,name,cats,cost\na,Shoe,Shoes|Red,$12.50\nb,Hat,,x\n")
    cfg = DataConfig(path=_write(tmp_path, "i.csv", "user,item\nu,a\nu,b\n"),
                     items={"path": meta, "id": "sku", "columns": {"title": "name",
                                                                    "categories": "cats",
                                                                    "price": "cost"}})
    items = load_data(cfg).items
    assert items["title"].to_list() == ["Shoe", "Hat"]
    assert items["categories"].to_list() == [["Shoes", "Red"], []]
    assert items["price"].to_list() == [12.5, None]
    with pytest.raises(DataError, match="no id column nope"):
        load_data(cfg.model_copy(update={"items": FeatureSource(path=meta, id="nope")}))


def test_deeply_nested_metadata_is_a_counted_drop(tmp_path: Path) -> None:
    deep = '{"asin": "a", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    lines = [deep, json.dumps({"asin": "b", "title": "Fine", "specs": {"a": {"b": [1, {"c": 2}]}}}),
             json.dumps({"asin": {"nested": 1}, "title": "bad id"})]
    cfg = DataConfig(path=_write(tmp_path, "i.csv", "user,item\nu,a\nu,b\n"),
                     items={"path": _write(tmp_path, "m.jsonl", "\n".join(lines)), "id": "asin"})
    ds = load_data(cfg)
    read = next(e for e in ds.log if e.get("table") == "items")
    assert read["reason"] == {"nested too deeply": 1, "non-scalar item id": 1}
    assert ds.items["title"].to_list() == ["Fine"]
    assert json.loads(ds.items["specs"][0]) == {"a": {"b": [1, {"c": 2}]}}


def test_metadata_that_matches_no_id_names_both_id_styles(tmp_path: Path) -> None:
    cfg = DataConfig(path=_write(tmp_path, "i.csv", "user,item\nu,a\n"),
                     items={"path": _write(tmp_path, "m.jsonl", '{"item_id": "zz", "title": "t"}'),
                            "id": "item_id"})
    with pytest.raises(DataError, match="no item id of this file occurs.*'zz'.*'a'"):
        load_data(cfg)
