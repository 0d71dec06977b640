"""Readers on the real shared files (exact counts) and on small handwritten files."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from genrec.data import Dataset, readers
from genrec.data.readers import (
    read_amazon2014,
    read_amazon_meta_jsonl,
    read_csv,
    read_ml1m,
    read_ml100k,
    read_p5,
    read_parquet,
    read_recbole_atomic,
    read_sequences,
    read_yelp,
)


def need(data_dir: Path, rel: str) -> Path:
    path = data_dir / rel
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


def counts(ds: Dataset) -> tuple[int, int, int]:
    return ds.n_users, ds.n_items, len(ds.interactions)


def raw_histories(ds: Dataset) -> dict[str, list[str]]:
    """Each raw user's raw items, oldest first."""
    h = ds.interactions.histories()
    users = ds.user_map.to_raw(h.users)
    items = np.array(ds.item_map.to_raw(h.items), dtype=object)
    return {u: list(items[h.indptr[i]:h.indptr[i + 1]]) for i, u in enumerate(users)}


def feature(ds: Dataset, raw_item: str, col: str) -> object:
    idx = int(ds.item_map.to_index([raw_item])[0])
    return ds.items.filter(pl.col("item") == idx)[col].to_list()[0]


def clean_read(ds: Dataset) -> None:
    """Every read step of a real file kept everything."""
    for entry in ds.log:
        if entry["step"] == "read" and "kept" in entry:
            assert entry["dropped"] == 0, entry


# ---------------------------------------------------------------------------------------------
# Real files


@pytest.fixture(scope="module")
def ml100k(data_dir: Path) -> Dataset:
    return read_ml100k(need(data_dir, "ml-100k/raw"))


def test_ml100k_counts_and_types(ml100k: Dataset) -> None:
    assert counts(ml100k) == (943, 1682, 100_000)
    assert ml100k.order == "timestamp"
    frame = ml100k.interactions.frame
    assert frame.schema["rating"] == pl.Float32
    assert frame.schema["timestamp"] == pl.Int64
    assert sorted(frame["rating"].unique().to_list()) == [1, 2, 3, 4, 5]
    assert ml100k.log[0] == {"step": "read", "file": str(ml100k.log[0]["file"]),
                             "kept": 100_000, "dropped": 0, "reason": {}}
    clean_read(ml100k)


def test_ml100k_item_and_user_features(ml100k: Dataset) -> None:
    items = ml100k.items
    assert items.height == 1682
    assert items.schema["title"] == pl.String
    assert items.schema["year"] == pl.Int64
    assert items.schema["genres"] == pl.List(pl.String)
    assert feature(ml100k, "1", "title") == "Toy Story"
    assert feature(ml100k, "1", "year") == 1995
    assert feature(ml100k, "1", "genres") == ["Animation", "Children's", "Comedy"]
    # u.item is ISO-8859-1
    assert feature(ml100k, "543", "title") == "Misérables, Les"
    # item 267 has no title year and no release date
    assert feature(ml100k, "267", "year") is None
    users = ml100k.users
    assert users.height == 943
    assert set(users.columns) == {"user", "age", "gender", "occupation", "zip"}
    assert users.schema["age"] == pl.Int64
    first = users.filter(pl.col("user") == int(ml100k.user_map.to_index(["1"])[0]))
    assert first.row(0, named=True) | {"user": 0} == {
        "user": 0, "age": 24, "gender": "M", "occupation": "technician", "zip": "85711"}


def test_recbole_atomic_equals_udata(data_dir: Path, ml100k: Dataset) -> None:
    ds = read_recbole_atomic(need(data_dir, "ml-100k/recbole_atomic"))
    assert ds.name == "ml-100k"
    assert counts(ds) == (943, 1682, 100_000)
    clean_read(ds)

    def raw(d: Dataset) -> pl.DataFrame:
        f = d.interactions.frame
        return pl.DataFrame({
            "user": d.user_map.to_raw(f["user"].to_numpy()),
            "item": d.item_map.to_raw(f["item"].to_numpy()),
            "rating": f["rating"], "timestamp": f["timestamp"],
        }).sort(pl.all())

    assert raw(ds).equals(raw(ml100k))
    assert feature(ds, "1", "title") == "Toy Story"
    assert feature(ds, "1", "year") == 1995
    assert feature(ds, "1", "genres") == ["Animation", "Children's", "Comedy"]
    assert "zip" in ds.users.columns


def test_ml1m_sequences(data_dir: Path) -> None:
    folder = need(data_dir, "ml-1m")
    start = time.perf_counter()
    ds = read_ml1m(folder)
    elapsed = time.perf_counter() - start
    assert counts(ds) == (6040, 3416, 999_611)
    assert elapsed < 5, f"reading ML-1M took {elapsed:.1f} s"
    assert ds.order == "position"
    assert "rating" not in ds.interactions.frame.columns
    assert raw_histories(ds)["1"][:4] == ["3186", "1022", "1270", "1721"]
    assert feature(ds, "1", "title") == "Toy Story"
    assert feature(ds, "1", "genres") == ["Animation", "Children's", "Comedy"]
    assert feature(ds, "73", "title") == "Misérables, Les"  # ISO-8859-1
    assert ds.users.height == 6040
    user1 = ds.users.filter(pl.col("user") == int(ds.user_map.to_index(["1"])[0])).row(
        0, named=True)
    assert (user1["gender"], user1["age"], user1["occupation"]) == ("F", 1, "K-12 student")
    attach = next(e for e in ds.log if e["step"] == "attach" and e["table"] == "items")
    assert attach["rows"] == 3883 and attach["attached"] == 3416
    clean_read(ds)


@pytest.fixture(scope="module")
def beauty_sequences(data_dir: Path) -> Dataset:
    folder = need(data_dir, "amazon2014_beauty")
    return read_sequences(folder / "user_sequence_asin.txt",
                          item_meta=folder / "item_meta.jsonl")


def test_beauty_asin_sequences_with_meta(beauty_sequences: Dataset) -> None:
    ds = beauty_sequences
    assert counts(ds) == (22_363, 12_101, 198_502)
    assert ds.order == "position"
    assert raw_histories(ds)["A1YJEY40YUW4SE"] == [
        "B004756YJA", "B004ZT0SSG", "B0020YLEYK", "7806397051", "B002WLWX82"]
    items = ds.items
    assert items.height == 12_101
    assert "idgenrec_textual_id" not in items.columns
    assert items.schema["title"] == pl.String
    assert items.schema["brand"] == pl.String
    assert items.schema["categories"] == pl.List(pl.String)
    assert items.schema["price"] == pl.Float64
    assert feature(ds, "B004756YJA", "title") == (
        "OPI Nail Lacquer, Simmer and Shimmer, 0.5-Fluid Ounce")
    assert feature(ds, "B004756YJA", "brand") == "OPI"
    assert feature(ds, "B004756YJA", "categories") == ["Beauty", "Makeup", "Nails", "Nail Polish"]
    assert feature(ds, "B004756YJA", "price") == 12.0
    # SOURCE.txt coverage: title 12,094 / brand 10,003 / price 11,516 of 12,101
    assert items["title"].is_not_null().sum() == 12_094
    assert items["price"].is_not_null().sum() == 11_516
    clean_read(ds)


def test_beauty_p5_matches_asin_sequences(data_dir: Path, beauty_sequences: Dataset) -> None:
    ds = read_p5(need(data_dir, "amazon2014_beauty/p5_format"))
    assert counts(ds) == (22_363, 12_101, 198_502)
    assert ds.name == "amazon2014_beauty"
    assert raw_histories(ds) == raw_histories(beauty_sequences)  # datamaps give the raw ids
    clean_read(ds)


def test_amazon_meta_jsonl(data_dir: Path) -> None:
    meta = read_amazon_meta_jsonl(need(data_dir, "amazon2014_beauty/item_meta.jsonl"))
    assert meta.height == 12_101
    assert meta.columns[0] == "item"
    assert "idgenrec_textual_id" not in meta.columns
    assert meta["item"].n_unique() == 12_101


@pytest.mark.slow
def test_sports_p5_with_partial_meta(data_dir: Path) -> None:
    folder = need(data_dir, "amazon2014_sports")
    ds = read_p5(folder / "p5_format", item_meta=folder / "item_meta_partial.jsonl")
    assert counts(ds) == (35_598, 18_357, 296_337)
    assert ds.items.height == 18_357
    assert ds.items.schema["s3rec_attributes"] == pl.List(pl.String)
    assert "idgenrec_textual_id" not in ds.items.columns
    asin = read_sequences(folder / "user_sequence_asin.txt")
    assert counts(asin) == (35_598, 18_357, 296_337)
    assert raw_histories(asin) == raw_histories(ds)
    clean_read(ds)


def test_yelp(data_dir: Path) -> None:
    ds = read_yelp(need(data_dir, "yelp"))
    assert counts(ds) == (30_431, 20_033, 316_354)  # repeated visits are kept
    assert ds.order == "position"
    assert ds.items.schema["categories"] == pl.List(pl.String)
    assert feature(ds, "5eV8oUGdBXylwB7HeaDFOA", "categories") == [
        "Diners", "Greek", "Mediterranean", "Restaurants"]
    clean_read(ds)


def test_lastfm(data_dir: Path) -> None:
    ds = read_sequences(need(data_dir, "lastfm/LastFM.txt"), integer_ids=True)
    assert counts(ds) == (1090, 3646, 52_551)
    assert raw_histories(ds)["1"][:3] == ["1", "2", "3"]
    clean_read(ds)


# ---------------------------------------------------------------------------------------------
# Handwritten files


def test_public_names() -> None:
    for name in readers.__all__:
        assert hasattr(readers, name)


def test_ml1m_ratings_dat_preferred(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_text(
        "1::10::5::978300760\n1::20::3::978300700\n2::10::4::978300800\n")
    (tmp_path / "sequences_min5_chronological.txt").write_text("9 9 9\n")
    (tmp_path / "movies.dat").write_bytes(
        "10::Misérables, Les (1995)::Drama|Musical\n20::Heat (1995)::Action\n".encode("latin-1"))
    (tmp_path / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    ds = read_ml1m(tmp_path)
    assert ds.order == "timestamp"
    assert counts(ds) == (2, 2, 3)
    assert raw_histories(ds)["1"] == ["20", "10"]  # sorted by time
    assert ds.interactions.frame.schema["rating"] == pl.Float32
    assert feature(ds, "10", "title") == "Misérables, Les"
    assert feature(ds, "10", "genres") == ["Drama", "Musical"]
    seq = read_ml1m(tmp_path, source="sequences")
    assert counts(seq) == (1, 1, 2)


def test_amazon2014_raw_files(tmp_path: Path) -> None:
    reviews = [
        {"reviewerID": "U1", "asin": "B2", "overall": 5.0, "unixReviewTime": 200,
         "reviewText": "great", "helpful": [0, 0]},
        {"reviewerID": "U1", "asin": "B1", "overall": 4.0, "unixReviewTime": 100},
        {"reviewerID": "U2", "asin": "B1", "overall": 3.0, "unixReviewTime": 300},
        {"reviewerID": "U1", "asin": "B3", "overall": 2.0, "unixReviewTime": 200},
    ]
    rpath = tmp_path / "reviews_Beauty_5.json.gz"
    rpath.write_bytes(gzip.compress("\n".join(json.dumps(r) for r in reviews).encode()))
    meta_lines = [
        "{'asin': 'B1', 'title': 'Lipstick', 'price': 9.5, 'salesRank': {'Beauty': 42}, "
        "'categories': [['Beauty', 'Makeup', 'Lips'], ['Beauty', 'Gifts']], 'brand': 'X', "
        "'related': {'also_bought': ['B2']}}",
        json.dumps({"asin": "B2", "title": "Mascara", "categories": [["Beauty", "Makeup"]]}),
        "{'asin': 'B3', 'title': __import__('os').getcwd()}",  # not a literal: never run
        "{'asin': 'B9', 'title': 'never reviewed'}",
    ]
    mpath = tmp_path / "meta_Beauty.json.gz"
    mpath.write_bytes(gzip.compress("\n".join(meta_lines).encode()))
    ds = read_amazon2014(rpath, mpath)
    assert ds.name == "amazon-beauty"
    assert counts(ds) == (2, 3, 4)
    assert ds.order == "timestamp"
    # sorted by time; the tie at 200 keeps file order
    assert raw_histories(ds)["U1"] == ["B1", "B2", "B3"]
    assert ds.interactions.frame.schema["rating"] == pl.Float32
    assert feature(ds, "B1", "categories") == ["Beauty", "Makeup", "Lips", "Gifts"]
    assert feature(ds, "B1", "price") == 9.5
    assert feature(ds, "B1", "sales_rank") == 42.0
    assert feature(ds, "B1", "sales_type") == "Beauty"
    assert feature(ds, "B2", "title") == "Mascara"
    meta_entry = ds.log[1]
    assert meta_entry["file"] == str(mpath)
    assert meta_entry["kept"] == 2 and meta_entry["reason"] == {"invalid JSON": 1}
    assert ds.items.height == 2


def test_read_csv_with_mapping(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text('uid,iid,ts,r,extra\nu1,"item, with comma",10,4.5,x\n'
                    'u1,i2,5,3,y\nu2,i2,7,1,z\n')
    ds = read_csv(path, columns={"user": "uid", "item": "iid", "timestamp": "ts", "rating": "r"})
    assert counts(ds) == (2, 2, 3)
    assert ds.order == "timestamp"
    assert raw_histories(ds)["u1"] == ["i2", "item, with comma"]
    tsv = tmp_path / "events.tsv"
    tsv.write_text("user\titem\nu1\ti1\nu1\ti2\n")
    ds = read_csv(tsv, sep="\t")
    assert ds.order == "position" and counts(ds) == (1, 2, 2)


def test_read_parquet_datetime(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pl.DataFrame({
        "u": [1, 1, 2], "i": [10, 20, 10],
        "when": pl.Series(["2020-01-02", "2020-01-01", "2020-01-03"]).str.to_datetime(),
    }).write_parquet(path)
    ds = read_parquet(path, columns={"user": "u", "item": "i", "timestamp": "when"})
    assert counts(ds) == (2, 2, 3)
    assert raw_histories(ds)["1"] == ["20", "10"]
    assert ds.interactions.frame["timestamp"].min() == 1_577_836_800


def test_recbole_feature_types(tmp_path: Path) -> None:
    (tmp_path / "toy.inter").write_text("user_id:token\titem_id:token\tlabel:float\n"
                                        "u1\ta\t1\nu1\tb\t0\n")
    (tmp_path / "toy.item").write_text(
        "item_id:token\ttitle:token_seq\tcategories:token_seq\tbrand:token\tprice:float\t"
        "vec:float_seq\na\tRed Shoes\tShoes Red\tAcme\t9.5\t0.5 1.5\nb\tHat\t\t\t\t\n")
    ds = read_recbole_atomic(tmp_path / "toy")
    assert ds.order == "position"
    assert counts(ds) == (1, 2, 2)
    assert feature(ds, "a", "title") == "Red Shoes"
    assert feature(ds, "a", "categories") == ["Shoes", "Red"]
    assert feature(ds, "a", "price") == 9.5
    assert feature(ds, "a", "vec") == [0.5, 1.5]
    assert feature(ds, "b", "brand") is None


def test_sequences_with_meta_and_blank_lines(tmp_path: Path) -> None:
    seq = tmp_path / "seq.txt"
    seq.write_text("u1 a b\r\n\n   \nu2\tb  c\n")
    meta = tmp_path / "meta.jsonl"
    meta.write_text('{"asin": "a", "title": "A", "price": "$1,299.00", "idgenrec_textual_id": '
                    '"t"}\n{"asin": "c", "categories": "Toys"}\n')
    ds = read_sequences(seq, item_meta=meta)
    assert raw_histories(ds) == {"u1": ["a", "b"], "u2": ["b", "c"]}
    assert feature(ds, "a", "price") == 1299.0
    assert feature(ds, "c", "categories") == ["Toys"]
    assert "idgenrec_textual_id" not in ds.items.columns


def test_p5_without_datamaps_keeps_integer_ids(tmp_path: Path) -> None:
    (tmp_path / "sequential_data.txt").write_text("1 1 2 3\n2 3 4\n")
    ds = read_p5(tmp_path)
    assert raw_histories(ds) == {"1": ["1", "2", "3"], "2": ["3", "4"]}
    (tmp_path / "datamaps.json").write_text(json.dumps(
        {"user2id": {"A": "1", "B": "2"}, "id2item": {"1": "x", "2": "y", "3": "z"}}))
    ds = read_p5(tmp_path)
    assert raw_histories(ds) == {"A": ["x", "y", "z"], "B": ["z"]}
    entry = ds.log[0]
    assert entry["reason"] == {"item id not in datamaps.json": 1}
