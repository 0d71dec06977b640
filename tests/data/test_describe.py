"""describe() on hand-computed toy data and on ML-100K."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from genrec.data import Dataset, describe, format_description
from genrec.data.describe import gini
from genrec.data.readers import read_ml100k


@pytest.fixture
def toy() -> Dataset:
    # user a: 1 event, b: 2, c: 3 -> lengths [1, 2, 3]; item counts x:3, y:2, z:1
    frame = pl.DataFrame({
        "user": ["a", "b", "b", "c", "c", "c"],
        "item": ["x", "x", "y", "x", "y", "z"],
        "timestamp": [1, 1, 2, 1, 2, 3],
    })
    log = [{"step": "read", "file": "toy.txt", "kept": 6, "dropped": 1,
            "reason": {"wrong field count": 1}}]
    return Dataset.from_raw("toy", frame, log=log)


def test_describe_toy(toy: Dataset) -> None:
    d = describe(toy)
    assert (d["users"], d["items"], d["interactions"]) == (3, 3, 6)
    assert d["density"] == pytest.approx(6 / 9)
    assert d["sequence_length"] == {"min": 1, "p25": 1.5, "median": 2.0, "mean": 2.0,
                                    "p75": 2.5, "p90": 2.8, "max": 3}
    # counts [1, 2, 3]: sum_i (2i - n - 1) x_i = -2*1 + 0*2 + 2*3 = 4; G = 4 / (3 * 6)
    assert d["item_popularity_gini"] == pytest.approx(4 / 18)
    assert d["order"] == "timestamp"
    assert d["repeated_pairs"] == 0
    assert d["log"] == toy.log
    json.dumps(d)  # plain data, ready for a report


def test_gini_values() -> None:
    assert gini(np.array([5, 5, 5, 5])) == 0.0
    assert gini(np.array([0, 0, 0, 8])) == pytest.approx(3 / 4)  # (n - 1) / n at most
    # sorted [0, 1, 2, 3]: (-3*0 - 1*1 + 1*2 + 3*3) / (4 * 6) = 10 / 24
    assert gini(np.array([3, 0, 2, 1])) == pytest.approx(10 / 24)
    assert gini(np.array([])) == 0.0
    assert gini(np.zeros(3)) == 0.0


def test_format_description(toy: Dataset) -> None:
    text = format_description(describe(toy))
    lines = text.splitlines()
    assert lines[0].split() == ["dataset", "toy"]
    assert any(line.startswith("users") and line.endswith("3") for line in lines)
    assert "item popularity Gini   0.222" in text
    assert "median 2" in text and "p90 2.8" in text
    assert 'read: kept 6, dropped 1 ({"wrong field count": 1})  [toy.txt]' in text


def test_describe_ml100k(data_dir: Path) -> None:
    folder = data_dir / "ml-100k" / "raw"
    if not folder.is_dir():
        pytest.skip("ml-100k not available")
    d = describe(read_ml100k(folder))
    assert (d["users"], d["items"], d["interactions"]) == (943, 1682, 100_000)
    assert d["density"] == pytest.approx(100_000 / (943 * 1682))
    assert d["sequence_length"]["min"] == 20  # every ML-100K user rated at least 20 movies
    assert d["sequence_length"]["max"] == 737
    assert d["sequence_length"]["mean"] == pytest.approx(100_000 / 943)
    assert 0.5 < d["item_popularity_gini"] < 0.8
    assert d["has_rating"] is True
    assert {"title", "year", "genres"} <= set(d["item_features"])
    assert "ml-100k" in format_description(d)
