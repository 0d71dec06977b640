"""Reading and preprocessing a sharded table on a local Ray cluster gives the single-process
Dataset: same users, items, rows, order, id maps and log (malformed-row counts included)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from genrec.data._optional import optional
from genrec.data.interactions import Dataset
from genrec.data.readers import DataError
from genrec.data.sharded import list_shards, merge_drops
from genrec.data.sources import DataConfig, load_data
from genrec.data.synth import SynthConfig, generate

# One local Ray cluster at a time (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("ray")

PRE = {"rating_threshold": 2.0, "dedup": "first", "min_user_interactions": 3,
       "min_item_interactions": 3, "max_history_length": 30}
#: Malformed rows injected into the synthetic table: (shard, column, value, reason). The
#: reasons sit in other shards than the order the reader checks them in (timestamp first,
#: missing user last), so a merge in shard order would key them differently.
BAD = [(0, "timestamp", "yesterday", "unparseable timestamp"),
       (0, "timestamp", "12.5", "timestamp not an integer"),
       (1, "rating", "n/a", "rating not a number"),
       (1, "item", "   ", "blank item id"),
       (2, "item", None, "missing item id"),
       (2, "user", None, "missing user id"),
       (2, "user", "  ", "blank user id")]


def _same(a: Dataset, b: Dataset, *, paths: bool = True) -> None:
    """Identical datasets; ``paths=False`` ignores the file names in the log."""
    def log(ds: Dataset) -> list[dict[str, Any]]:
        return [e if paths else {k: v for k, v in e.items() if k not in ("path", "file")}
                for e in ds.log]

    assert json.dumps(log(a)) == json.dumps(log(b))  # same entries, same key order
    assert (a.name, a.order, a.n_users, a.n_items) == (b.name, b.order, b.n_users, b.n_items)
    assert a.user_map.raw.equals(b.user_map.raw) and a.item_map.raw.equals(b.item_map.raw)
    assert a.interactions.frame.equals(b.interactions.frame)
    assert a.items.equals(b.items) and a.users.equals(b.users)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def synth_parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A generated table as text columns with malformed, repeated and filtered-event rows, in
    three Parquet and three CSV files, and each as one combined file."""
    root = tmp_path_factory.mktemp("synth")
    generate(SynthConfig(n_interactions=12_000, n_items=400, seed=3, chunk_rows=2_000), root)
    frame = pl.read_parquet(root / "interactions.parquet").cast(pl.String)
    rng = np.random.default_rng(0)
    n = frame.height
    frame = frame.with_columns(
        pl.Series("rating", rng.integers(1, 6, n).astype(str)),
        pl.Series("event", np.where(rng.random(n) < 0.9, "view", "cart")))
    frame = pl.concat([frame, frame.slice(500, 300)])  # repeated (user, item) events
    parts = [frame.slice(0, 4_000), frame.slice(4_000, 4_000), frame.slice(8_000)]
    for shard, col, value, _ in BAD:
        row = parts[shard].slice(7, 1).with_columns(pl.lit(value, pl.String).alias(col))
        parts[shard] = pl.concat([parts[shard].slice(0, 50), row, parts[shard].slice(50)])
    # An event type first seen in the last shard, then also in the first.
    parts[2] = parts[2].with_columns(pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("buy"))
                                     .otherwise(pl.col("event")).alias("event"))
    parts[0] = parts[0].with_columns(pl.when(pl.int_range(pl.len()) == 900).then(pl.lit("buy"))
                                     .otherwise(pl.col("event")).alias("event"))
    (root / "pq").mkdir()
    (root / "csv").mkdir()
    for i, part in enumerate(parts):
        part.write_parquet(root / "pq" / f"part-{i}.parquet", row_group_size=1_500)
        part.write_csv(root / "csv" / f"part-{i}.csv")
    # A row with a field too many: the CSV reader's line-by-line path, for that file only.
    with open(root / "csv" / "part-1.csv", "a", encoding="utf-8") as f:
        f.write("1,100000001,5,1600000000,view,extra\n")
    combined = pl.concat(parts)
    combined.write_parquet(root / "all.parquet", row_group_size=1_500)
    texts = [(root / "csv" / f"part-{i}.csv").read_text(encoding="utf-8") for i in range(3)]
    (root / "all.csv").write_text(texts[0] + "".join(t.split("\n", 1)[1] for t in texts[1:]),
                                  encoding="utf-8")
    return {"root": root, "n_rows": combined.height + 1, "kept_events": ["view", "buy"]}


def _config(path: Path | str, **kw: Any) -> DataConfig:
    cols = {"user": "user", "item": "item", "timestamp": "timestamp", "rating": "rating",
            "event": "event"}
    return DataConfig(path=str(path), name="synth", columns=cols,
                      keep_events=["view", "buy"], preprocess=PRE, **kw)


def test_shards_and_drop_order(synth_parts: dict[str, Any]) -> None:
    root = synth_parts["root"]
    shards = list_shards(root / "all.parquet", "parquet")
    assert len(shards) > 6 and sum(s.rows or 0 for s in shards) == synth_parts["n_rows"] - 1
    assert [s.path for s in list_shards(root / "csv" / "*.csv", "csv")] == [
        str(root / "csv" / f"part-{i}.csv") for i in range(3)]
    merged = merge_drops([{"timestamp not an integer": 2, "event 'cart' not kept": 5},
                          {"missing user id": 1, "event 'buy' not kept": 1,
                           "event 'cart' not kept": 1}])
    assert list(merged) == ["missing user id", "timestamp not an integer",
                            "event 'cart' not kept", "event 'buy' not kept"]
    assert merged["event 'cart' not kept"] == 6


def test_local_pattern_equals_one_file(synth_parts: dict[str, Any]) -> None:
    """The single reader on the combined file and the shard loop on the parts agree."""
    root = synth_parts["root"]
    one = load_data(_config(root / "all.parquet"))
    parts = load_data(_config(root / "pq" / "part-*.parquet"))
    _same(one, parts, paths=False)
    read = one.log[1]
    expected: dict[str, int] = {}
    for _, _, _, reason in BAD:
        expected[reason] = expected.get(reason, 0) + 1
    n_cart = pl.read_parquet(root / "all.parquet").filter(pl.col("event") == "cart").height
    assert read["reason"] == {**merge_drops([expected]), "event 'cart' not kept": n_cart - 0}
    assert read["kept"] + read["dropped"] == synth_parts["n_rows"] - 1


@pytest.mark.slow
def test_ray_equals_single_process_synthetic(synth_parts: dict[str, Any], ray_cluster: Any
                                             ) -> None:
    root = synth_parts["root"]
    one = load_data(_config(root / "all.parquet"))
    # One file cut at its row groups, then three files of several row groups each.
    _same(load_data(_config(root / "all.parquet", engine="ray", workers=2)), one)
    _same(load_data(_config(root / "pq" / "part-*.parquet", engine="ray", workers=2)), one,
          paths=False)
    # CSV files, one of them ragged; three workers on two CPUs.
    csv = load_data(_config(root / "csv" / "part-*.csv", engine="ray", workers=3))
    ref = load_data(_config(root / "all.csv"))
    _same(csv, ref, paths=False)
    assert csv.log[1]["reason"]["wrong field count"] == 1
    assert csv.log[1]["dropped"] == one.log[1]["dropped"] + 1
    assert ray_cluster.is_initialized()  # a cluster it did not start is left running


@pytest.mark.slow
def test_ray_equals_single_process_ml100k(data_dir: Path, tmp_path: Path, ray_cluster: Any
                                          ) -> None:
    """A real slice: the first 40,000 ML-100K ratings (with a few broken lines) as 4 TSV
    files, implicit at rating 4, 5-core."""
    lines = (data_dir / "ml-100k" / "raw" / "u.data").read_text(encoding="utf-8").splitlines()
    lines = lines[:40_000]
    lines[1_234] = "17\t\t4\t881250949"          # missing item
    lines[25_000] = "17\t300\tfour\t881250949"   # rating not a number
    header = "user\titem\trating\ttimestamp\n"
    (tmp_path / "parts").mkdir()
    for i in range(4):
        (tmp_path / "parts" / f"u-{i}.tsv").write_text(
            header + "\n".join(lines[i * 10_000:(i + 1) * 10_000]) + "\n", encoding="utf-8")
    (tmp_path / "u.tsv").write_text(header + "\n".join(lines) + "\n", encoding="utf-8")
    pre = {"rating_threshold": 4, "min_user_interactions": 5, "min_item_interactions": 5}
    ref = load_data(DataConfig(path=str(tmp_path / "u.tsv"), name="ml", preprocess=pre))
    got = load_data(DataConfig(path=str(tmp_path / "parts" / "*.tsv"), name="ml",
                               preprocess=pre, engine="ray", workers=2))
    _same(got, ref, paths=False)
    assert ref.log[1]["reason"] == {"missing item id": 1, "rating not a number": 1}
    k_core = ref.log[-1]
    assert k_core["step"] == "k_core" and k_core["params"]["rounds"] >= 2
    assert 0 < ref.n_users < 943 and len(ref.interactions) < 40_000
    # A worker's data error reaches the caller as itself, with the single reader's message.
    with pytest.raises(DataError, match=r"missing required column\(s\) \['genre'\]"):
        load_data(DataConfig(path=str(tmp_path / "parts" / "*.tsv"), columns={"event": "genre"},
                             engine="ray", workers=2))


def test_config_and_missing_dependency() -> None:
    with pytest.raises(ValueError, match="dataset.path"):
        DataConfig(engine="ray")
    with pytest.raises(ValueError, match="csv, tsv or parquet"):
        DataConfig(path="parts/*.jsonl")
    assert DataConfig(path="data/parts/*.parquet").name == "parts"
    with pytest.raises(ImportError, match=r"pip install 'genrec\[scale\]'"):
        optional("genrec_no_such_module", "this test")


@pytest.mark.slow
def test_cli_engine_flags(synth_parts: dict[str, Any], ray_cluster: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from genrec.cli import app

    root = synth_parts["root"]
    cfg = tmp_path / "data.yaml"
    cfg.write_text(json.dumps({"dataset": _config(root / "pq" / "*.parquet").model_dump(
        exclude_none=True, exclude={"format"})}), encoding="utf-8")
    runner = CliRunner()
    local = runner.invoke(app, ["data", "describe", str(cfg), "--json"])
    assert local.exit_code == 0, local.output
    on_ray = runner.invoke(app, ["data", "describe", str(cfg), "--engine", "ray", "--workers",
                                 "2", "--json"])
    assert on_ray.exit_code == 0, on_ray.output
    # The read warning (malformed rows) comes first on the console, then the JSON.
    def described(out: str) -> dict[str, Any]:
        return json.loads(out[out.index("\n{") + 1:])

    assert described(on_ray.output) == described(local.output)
    assert described(local.output)["interactions"] == len(load_data(_config(root / "all.parquet"))
                                                          .interactions)
    bad = runner.invoke(app, ["data", "describe", str(cfg), "--engine", "spark"])
    assert bad.exit_code != 0 and "engine" in bad.output
