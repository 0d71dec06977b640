"""Bad input: one clear DataError, or malformed rows dropped and counted by reason."""

from __future__ import annotations

import copy
import gzip
import logging
from pathlib import Path

import pytest

from genrec.data import DataError, PreprocessConfig, describe, preprocess
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
)


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def udata(tmp_path: Path, text: str) -> Path:
    write(tmp_path / "u.data", text)
    return tmp_path


def read_entry(ds, file: Path) -> dict:
    return next(e for e in ds.log if e["step"] == "read" and e["file"] == str(file))


# ---------------------------------------------------------------------------------------------
# Rows dropped and counted


def test_bad_rows_are_dropped_and_counted_by_reason(tmp_path: Path, caplog) -> None:
    folder = udata(tmp_path, (
        "1\t10\t5\t100\n"
        "1\t11\t4\n"            # wrong field count
        "2\t10\t3\t100\textra\n"  # wrong field count
        "x\t10\t3\t100\n"       # non-integer user
        "2\t1.5\t3\t100\n"      # non-integer item
        "2\t12\tnan\t100\n"     # NaN rating
        "2\t12\t\t100\n"        # empty rating
        "2\t12\tfive\t100\n"    # rating not a number
        "2\t12\t4\tyesterday\n"  # unparseable time
        "2\t12\t4\t200\n"
    ))
    with caplog.at_level(logging.WARNING, logger="genrec.data.readers"):
        ds = read_ml100k(folder)
    assert len(ds.interactions) == 2
    entry = ds.log[0]
    assert entry == {
        "step": "read", "file": str(folder / "u.data"), "kept": 2, "dropped": 8,
        "reason": {"wrong field count": 2, "non-integer user id": 1, "non-integer item id": 1,
                   "rating not a number": 3, "unparseable timestamp": 1},
    }
    assert any(str(folder / "u.data") in r.getMessage() and "wrong field count: 2 (first at "
               "line 2)" in r.getMessage() for r in caplog.records)
    # the missing u.item / u.user are noted, not fatal
    assert {"step": "read", "file": str(folder / "u.item"), "skipped": "file not found"} in ds.log


def test_sequence_file_bad_tokens(tmp_path: Path) -> None:
    path = write(tmp_path / "seq.txt", "1 1 2 3\n2\n3 4 x 5\ny 1 2\n")
    ds = read_sequences(path, integer_ids=True)
    assert len(ds.interactions) == 5
    assert ds.log[0]["reason"] == {"line without items": 1, "non-integer user id": 2,
                                   "non-integer item id": 1}
    assert ds.log[0]["kept"] == 5 and ds.log[0]["dropped"] == 4


def test_feature_file_bad_rows(tmp_path: Path) -> None:
    folder = udata(tmp_path, "1\t10\t5\t100\n1\t20\t5\t100\n")
    flags = "|".join(["0"] * 19)
    write(folder / "u.item", f"10|Heat (1995)|01-Jan-1995||url|{flags}\n"
                             f"20|Broken (1995)|01-Jan-1995\n")
    ds = read_ml100k(folder)
    assert read_entry(ds, folder / "u.item")["reason"] == {"wrong field count": 1}
    attach = next(e for e in ds.log if e["step"] == "attach")
    assert attach["items_without_features"] == 1


def test_invalid_json_lines_in_meta(tmp_path: Path) -> None:
    path = write(tmp_path / "item_meta.jsonl", '{"asin": "a", "title": "A"}\n'
                 '{"asin": "b", "title": \n[1, 2]\n{"title": "no id"}\n')
    meta = read_amazon_meta_jsonl(path)
    assert meta["item"].to_list() == ["a"]
    seq = write(tmp_path / "seq.txt", "u a\n")
    ds = read_sequences(seq, item_meta=path)
    assert read_entry(ds, path)["reason"] == {"invalid JSON": 1, "not a JSON object": 1,
                                              "missing item id": 1}


def test_ragged_csv_counts_wrong_field_count(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", "user,item,rating\nu1,i1,5\nu1,i2,4,oops\nu2,i1,\n")
    ds = read_csv(path)
    assert len(ds.interactions) == 1
    assert ds.log[0]["reason"] == {"wrong field count": 1, "rating not a number": 1}


def test_amazon_reviews_bad_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "reviews_Toys_5.json", (
        '{"reviewerID": "U1", "asin": "A", "overall": 5.0, "unixReviewTime": 10}\n'
        '{"reviewerID": "U1", "asin": "B", "overall": 5.0, "unixReviewTime": 1\n'
        '{"reviewerID": "U2", "overall": 5.0, "unixReviewTime": 10}\n'
        "{'reviewerID': 'U2', 'asin': 'A', 'overall': 4.0, 'unixReviewTime': 12}\n"
    ))
    ds = read_amazon2014(path)
    assert ds.name == "amazon-toys"
    assert len(ds.interactions) == 2
    assert ds.log[0]["reason"] == {"invalid JSON": 1, "missing item id": 1}


def test_duplicate_events_are_kept_then_dedup_reports_them(tmp_path: Path) -> None:
    folder = udata(tmp_path, "1\t10\t5\t100\n1\t10\t4\t200\n1\t20\t3\t150\n2\t10\t5\t100\n"
                             "2\t10\t5\t100\n")
    ds = read_ml100k(folder)
    assert len(ds.interactions) == 5  # the reader loses nothing
    assert describe(ds)["repeated_pairs"] == 2
    out = preprocess(ds, PreprocessConfig(dedup="first"))
    assert len(out.interactions) == 3
    assert out.log[-1]["step"] == "dedup" and out.log[-1]["dropped"] == 2


# ---------------------------------------------------------------------------------------------
# One clear error


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"u\.data: file not found"):
        read_ml100k(tmp_path)
    with pytest.raises(DataError, match="nope.csv: file not found"):
        read_csv(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="neither ratings.dat nor sequences"):
        read_ml1m(tmp_path)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    path = write(tmp_path / "seq.txt", content)
    with pytest.raises(DataError, match="seq.txt: file is empty"):
        read_sequences(path)


def test_header_only_csv(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", "user,item\n")
    with pytest.raises(DataError, match="e.csv: no valid rows"):
        read_csv(path)


def test_wrong_encoding(tmp_path: Path) -> None:
    path = write(tmp_path / "seq.txt", "u1 a b\nu2 caf\xe9 b\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        read_sequences(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "not valid utf-8" in msg and "byte offset 13" in msg and "line 2" in msg
    assert "encoding=" in msg
    assert err.value.path == path
    ds = read_sequences(path, encoding="latin-1")
    assert "café" in ds.item_map.raw.to_list()


def test_wrong_encoding_in_gzip(tmp_path: Path) -> None:
    path = write(tmp_path / "reviews.json.gz", gzip.compress(b'{"asin": "\xff"}\n'))
    with pytest.raises(DataError, match="reviews.json.gz: not valid utf-8.*decompressed"):
        read_amazon2014(path)


def test_broken_gzip(tmp_path: Path) -> None:
    path = write(tmp_path / "reviews.json.gz", b"this is not gzip")
    with pytest.raises(DataError, match="not a valid gzip file"):
        read_amazon2014(path)


def test_missing_column(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", "uid,iid\nu1,i1\n")
    with pytest.raises(DataError, match=r"e.csv: missing required column\(s\) \['ts'\]"):
        read_csv(path, columns={"user": "uid", "item": "iid", "timestamp": "ts"})
    with pytest.raises(DataError, match=r"missing required column\(s\) \['user', 'item'\]"):
        read_csv(path)
    inter = write(tmp_path / "toy.inter", "user_id:token\trating:float\nu1\t3\n")
    with pytest.raises(DataError, match=r"toy.inter: missing required column\(s\) \['item_id'\]"):
        read_recbole_atomic(inter)


def test_bad_recbole_header(tmp_path: Path) -> None:
    write(tmp_path / "toy.inter", "user_id\titem_id\nu1\ti1\n")
    with pytest.raises(DataError, match="is not 'name:type'"):
        read_recbole_atomic(tmp_path)


def test_every_row_bad(tmp_path: Path) -> None:
    folder = udata(tmp_path, "1,10,5,100\n2,10,5,100\n")
    with pytest.raises(DataError) as err:
        read_ml100k(folder)
    msg = str(err.value)
    assert str(folder / "u.data") in msg
    assert "every row is malformed" in msg and "wrong field count: 2" in msg


def test_every_rating_nan(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", "user,item,rating\nu1,i1,NaN\nu1,i2,\n")
    with pytest.raises(DataError, match="rating not a number: 2"):
        read_csv(path)


def test_bad_datamaps(tmp_path: Path) -> None:
    write(tmp_path / "sequential_data.txt", "1 1 2\n")
    write(tmp_path / "datamaps.json", '{"id2user": {"1": "A"}, ')
    with pytest.raises(DataError, match=r"datamaps.json: not valid JSON \(line 1"):
        read_p5(tmp_path)
    write(tmp_path / "datamaps.json", '{"id2user": {"1": "A"}}')
    with pytest.raises(DataError, match="missing required key 'id2item'"):
        read_p5(tmp_path)


def test_not_parquet(tmp_path: Path) -> None:
    path = write(tmp_path / "e.parquet", "user,item\n")
    with pytest.raises(DataError, match="e.parquet: not a readable Parquet file"):
        read_parquet(path)


def test_data_error_is_value_error() -> None:
    assert issubclass(DataError, ValueError)
    # deepcopy goes through __reduce__ as multiprocessing does: the error survives a copy.
    err = copy.deepcopy(DataError("x.txt", "file is empty"))
    assert (str(err), err.path, err.problem) == ("x.txt: file is empty", Path("x.txt"),
                                                 "file is empty")


def test_html_entities_in_metadata_are_decoded(tmp_path) -> None:
    """Amazon metadata keeps entities ("L&#39;Oreal"); both parse paths decode them."""
    from genrec.data.readers import read_amazon_meta_jsonl

    good = tmp_path / "meta.jsonl"
    good.write_text('{"asin": "A1", "title": "Soap &amp; Water", "brand": "L&#39;Oreal", '
                    '"categories": [["Beauty", "Bath &amp; Body"]]}\n'
                    '{"asin": "A2", "title": "Plain", "brand": "Dove", "categories": []}\n')
    bad = tmp_path / "meta_bad.jsonl"  # one broken line sends the file down the per-line path
    bad.write_text(good.read_text() + "{not json\n")
    for path in (good, bad):
        frame = read_amazon_meta_jsonl(path)
        row = frame.filter(frame["item"] == "A1").row(0, named=True)
        assert row["title"] == "Soap & Water" and row["brand"] == "L'Oreal"
        assert row["categories"] == ["Beauty", "Bath & Body"]
