"""CSV parsing (quotes, ragged and blank rows, headers) and timestamp reading: one clear error or
a counted drop, the same on the vectorised and the line-by-line CSV paths."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from genrec.data import DataError
from genrec.data.readers import read_csv, read_jsonl, read_parquet
from genrec.data.sharded import Shard, read_shard

BODY = "".join(f"u{k},i{k},{k}\n" for k in range(50))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def reasons(ds) -> dict[str, int]:
    return next(e for e in ds.log if e["step"] == "read")["reason"]


def rows(ds) -> list[tuple[str, str, int]]:
    f = ds.interactions.frame
    return list(zip(ds.user_map.to_raw(f["user"]), ds.item_map.to_raw(f["item"]),
                    f["timestamp"].to_list(), strict=True))


# -- quotes -----------------------------------------------------------------------------------
def test_stray_quote_costs_its_own_line_only(tmp_path: Path) -> None:
    path = write(tmp_path, "q.csv", 'user,item,timestamp\nu1,i0,5\nu1,"i1 6\n' + BODY)
    ds = read_csv(path)
    assert reasons(ds) == {"unterminated quote": 1}
    assert len(ds.interactions) == 51  # u1,i0 and the 50 rows after the stray quote
    # The sharded reader parses the same way.
    frame, dropped = read_shard(Shard(str(path)), "csv")
    assert frame.height == 51 and dropped == {"unterminated quote": 1}


def test_quoted_fields_keep_the_separator_and_quote_doubles(tmp_path: Path) -> None:
    path = write(tmp_path, "q.csv", 'user,item,timestamp\n"u1","i,1",1\nu1,"say ""hi""",2\n'
                                    'u1,"i2,2\nu1,i3,3\n"u1",i4\n')
    ds = read_csv(path)
    assert sorted(rows(ds)) == [("u1", "i,1", 1), ("u1", "i3", 3), ("u1", 'say "hi"', 2)]
    assert reasons(ds) == {"unterminated quote": 1, "wrong field count": 1}


def test_a_quoted_line_break_is_not_one_row(tmp_path: Path) -> None:
    """A well-formed quoted line break still splits the record: one physical line, one row."""
    path = write(tmp_path, "q.csv", 'user,item,timestamp\nu1,"i1\ni2",7\nu1,i3,8\n')
    ds = read_csv(path)
    assert rows(ds) == [("u1", "i3", 8)]
    assert reasons(ds) == {"unterminated quote": 1, "wrong field count": 1}


# -- the two CSV paths agree --------------------------------------------------------------------
@pytest.mark.parametrize("ragged", [False, True], ids=["vectorised", "line-by-line"])
def test_blank_and_short_rows_count_alike_on_both_paths(tmp_path: Path, ragged: bool) -> None:
    text = "user,item,rating,timestamp\nu1,i1,4,100\n,,,\n , , , \nu1,i2,200\nu1,i3,5,300\n"
    ds = read_csv(write(tmp_path, "r.csv", text + ("u1,i4,5,400,x\n" if ragged else "")))
    assert reasons(ds) == {"wrong field count": 2 if ragged else 1, "empty row": 2}
    assert [r[1] for r in rows(ds)] == ["i1", "i3"]


@pytest.mark.parametrize("ragged", [False, True], ids=["vectorised", "line-by-line"])
def test_duplicate_header_names_are_refused_on_both_paths(tmp_path: Path, ragged: bool) -> None:
    text = "user,item,item,timestamp\nu1,i1,i9,1\n" + ("u1,i2,i8,2,5\n" if ragged else "")
    with pytest.raises(DataError, match=r"header names column\(s\) \['item'\] more than once"):
        read_csv(write(tmp_path, "d.csv", text))


# -- whitespace -------------------------------------------------------------------------------
def test_spaces_around_values_and_header_names_are_stripped(tmp_path: Path) -> None:
    ds = read_csv(write(tmp_path, "s.csv", "user , item, rating, timestamp\n"
                                           "u1,i1, 4, 100\nu1,i2,5 ,200 \n"))
    assert ds.order == "timestamp" and reasons(ds) == {}
    assert rows(ds) == [("u1", "i1", 100), ("u1", "i2", 200)]
    assert ds.interactions.frame["rating"].to_list() == [4.0, 5.0]
    path = tmp_path / "s.parquet"
    pl.DataFrame({"user": ["a", "a"], "item": ["x", "y"], "rating": [" 4", "5"],
                  "timestamp": [" 1", "2 "]}).write_parquet(path)
    assert len(read_parquet(path).interactions) == 2


# -- timestamps -------------------------------------------------------------------------------
def test_iso_8601_timestamps(tmp_path: Path) -> None:
    values = {"a": ("2021-01-02", 1_609_545_600), "b": ("2021-01-02 10:00:00", 1_609_581_600),
              "c": ("2021-01-02T10:00:00Z", 1_609_581_600),
              "d": ("2021-01-02T10:00:00.75+02:00", 1_609_574_400),
              "e": ("2021-01-02T10:00-0130", 1_609_587_000), "f": ("1609545600", 1_609_545_600)}
    text = "user,item,timestamp\n" + "".join(f"u1,{k},{v}\n" for k, (v, _) in values.items())
    ds = read_csv(write(tmp_path, "t.csv", text + "u1,g,2021-02-30\nu1,h,soon\n"))
    assert {i: t for _, i, t in rows(ds)} == {k: t for k, (_, t) in values.items()}
    assert reasons(ds) == {"unparseable timestamp": 2}


@pytest.mark.parametrize("value", ["01/02/2021", "2.1.2021", "2021/01/02 10:00", "Jan 2, 2021"])
def test_other_date_forms_are_refused_not_guessed(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, "t.csv", f'user,item,timestamp\nu1,a,2021-01-01\nu1,b,"{value}"\n')
    with pytest.raises(DataError, match="another form than ISO-8601") as err:
        read_csv(path)
    assert repr(value) in str(err.value) and "unix seconds" in str(err.value)


def test_timestamps_out_of_range_and_fractional_numbers(tmp_path: Path) -> None:
    path = tmp_path / "u.parquet"
    pl.DataFrame({"user": ["a"] * 2, "item": ["x", "y"],
                  "timestamp": pl.Series([1, 2**63 + 5], dtype=pl.UInt64)}).write_parquet(path)
    ds = read_parquet(path)
    assert reasons(ds) == {"timestamp out of range": 1} and rows(ds) == [("a", "x", 1)]
    pl.DataFrame({"user": ["a"] * 2, "item": ["x", "y"], "timestamp": pl.Series(
        ["1.0", "2.5"]).cast(pl.Decimal(10, 2))}).write_parquet(path)
    ds = read_parquet(path)
    assert reasons(ds) == {"timestamp not an integer": 1} and rows(ds) == [("a", "x", 1)]
    ds = read_csv(write(tmp_path, "t.csv", "user,item,timestamp\nu1,a,99999999999999999999\n"
                                           "u1,b,12.5\nu1,c,1.5e9\n"))
    assert reasons(ds) == {"timestamp not an integer": 1, "timestamp out of range": 1}
    assert rows(ds) == [("u1", "c", 1_500_000_000)]


# -- JSON lines -------------------------------------------------------------------------------
def test_json_array_and_all_invalid_json_lines(tmp_path: Path) -> None:
    array = json.dumps([{"user": "u1", "item": "i1", "timestamp": 1}], indent=1)
    with pytest.raises(DataError, match=r"no line parsed as a JSON object .*JSON array"):
        read_jsonl(write(tmp_path, "a.json", array))
    with pytest.raises(DataError, match="JSON array"):
        read_jsonl(write(tmp_path, "a1.json", array.replace("\n", "")))
    with pytest.raises(DataError, match=r"no line parsed .*invalid JSON: 1.*not a JSON object: 1"
                       ) as err:
        read_jsonl(write(tmp_path, "b.jsonl", "nope\n[1]\n"))
    assert "JSON array" not in str(err.value) and "missing required" not in str(err.value)
