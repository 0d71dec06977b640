"""The synthetic generator: seeded, exact counts, heavy-tailed, sequential, and readable by the
ordinary config keys end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from genrec.cli import app
from genrec.data.sources import DataConfig
from genrec.data.synth import SynthConfig, dataset_config, generate, zipf_slope
from genrec.runs.experiment import load_data
from genrec.text.templates import render_item_texts

SMALL = {"n_interactions": 20_000, "n_items": 2_000, "n_users": 800, "seed": 3,
         "chunk_rows": 5_000}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[SynthConfig, Path]:
    cfg = SynthConfig(**SMALL)
    out = tmp_path_factory.mktemp("synth")
    generate(cfg, out)
    return cfg, out


def _inter(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "interactions.parquet")


def test_same_seed_same_bytes_other_seed_differs(small, tmp_path: Path) -> None:
    cfg, out = small
    generate(cfg, tmp_path / "again")
    for name in ("interactions.parquet", "items.parquet"):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    generate(cfg.model_copy(update={"seed": 4}), tmp_path / "other")
    assert not _inter(out).equals(_inter(tmp_path / "other"))


def test_requested_counts(small) -> None:
    cfg, out = small
    inter = _inter(out)
    items = pl.read_parquet(out / "items.parquet")
    assert inter.columns == ["user", "item", "timestamp"]
    assert inter.height == 20_000
    assert inter["user"].n_unique() == 800
    assert items.height == 2_000 and items["item"].n_unique() == 2_000
    assert set(inter["item"].unique()) <= set(items["item"])
    assert inter.group_by("user").len()["len"].min() >= cfg.min_user_len


def test_chunking_spans_several_chunks_and_keeps_users_whole(small) -> None:
    _, out = small
    meta = pq.ParquetFile(out / "interactions.parquet").metadata
    assert meta.num_row_groups >= 4  # 20k rows in chunks of ~5k
    users = _inter(out)["user"].to_numpy()
    assert np.all(np.diff(users) >= 0)  # each user's rows are contiguous


def test_popularity_is_heavy_tailed(small) -> None:
    _, out = small
    counts = _inter(out)["item"].value_counts()["count"].to_numpy()
    top = np.sort(counts)[::-1]
    top_share = top[: len(top) // 100].sum() / top.sum()
    assert top_share > 0.2  # uniform would give about 0.01
    assert -1.6 < zipf_slope(counts) < -0.6
    flat = zipf_slope(np.full(100, 7))
    assert abs(flat) < 1e-9


def test_sequences_stay_in_category_far_more_than_chance(small) -> None:
    _, out = small
    items = pl.read_parquet(out / "items.parquet").select(
        "item", pl.col("categories").list.last().alias("cat"))
    seq = _inter(out).sort("user", "timestamp").join(items, on="item", how="left",
                                                     maintain_order="left")
    same_user = seq["user"].to_numpy()[1:] == seq["user"].to_numpy()[:-1]
    cats = seq["cat"].to_numpy()
    observed = (cats[1:] == cats[:-1])[same_user].mean()
    p = seq["cat"].value_counts()["count"].to_numpy() / seq.height
    chance = float((p ** 2).sum())
    assert observed > 0.5 and observed > 5 * chance


def test_timestamps_increase_within_users_with_session_gaps(small) -> None:
    _, out = small
    inter = _inter(out)
    u, t = inter["user"].to_numpy(), inter["timestamp"].to_numpy()
    gaps = np.diff(t)[u[1:] == u[:-1]]
    assert np.all(gaps > 0)
    assert np.median(gaps) < 3_600 and np.quantile(gaps, 0.99) > 86_400


def test_loads_through_config_keys_with_text(small) -> None:
    cfg, out = small
    ds = load_data(DataConfig.model_validate(dataset_config(out, cfg)))
    assert ds.items is not None and ds.items.height > 0
    texts = render_item_texts(ds.items, ds.interactions.n_items)
    assert len(texts) == ds.interactions.n_items and all(texts)
    items = ds.items.row(0, named=True)
    first = texts[items["item"]]
    assert items["title"] in first and items["brand"] in first and "Price" in first


def test_jsonl_items_load(tmp_path: Path) -> None:
    cfg = SynthConfig(**{**SMALL, "items_format": "jsonl"})
    generate(cfg, tmp_path)
    ds = load_data(DataConfig.model_validate(dataset_config(tmp_path, cfg)))
    assert ds.items is not None and ds.items.height == ds.interactions.n_items


def test_config_rejects_impossible_requests() -> None:
    with pytest.raises(ValueError, match="p_stay"):
        SynthConfig(p_stay=0.8, p_related=0.3)
    with pytest.raises(ValueError, match="min_user_len"):
        SynthConfig(n_interactions=100, n_users=50)
    with pytest.raises(ValueError):
        SynthConfig(colour="red")


def test_cli_synth_then_run_pop_ease(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "d"),
                              "--interactions", "20000", "--items", "1000", "--users", "800",
                              "--seed", "1", "--set", "click_gap_s=30"])
    assert res.exit_code == 0, res.output
    written = yaml.safe_load((tmp_path / "d" / "dataset.yaml").read_text())
    assert written["dataset"]["items"]["id"] == "item"
    res = runner.invoke(app, ["run", str(tmp_path / "d" / "dataset.yaml"), "--models",
                              "pop,ease", "--output", str(tmp_path / "run"), "--quiet"])
    assert res.exit_code == 0, res.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    ndcg = {r["model"]: r["test"]["ndcg@10"] for r in results["results"]}
    assert set(ndcg) == {"pop", "ease"} and all(0 < v <= 1 for v in ndcg.values())
    bad = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "x"),
                              "--p-stay", "0.9", "--p-related", "0.5"])
    assert bad.exit_code == 2


def test_dataset_yaml_reads_from_any_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = SynthConfig(n_interactions=5_000, n_items=500, n_users=200)
    generate(cfg, Path("rel"))
    written = yaml.safe_load((tmp_path / "rel" / "dataset.yaml").read_text())["dataset"]
    monkeypatch.chdir(tmp_path.parent)
    ds = load_data(DataConfig.model_validate(written))
    assert ds.interactions.n_users == 200
