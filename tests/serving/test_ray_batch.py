"""Batch inference on a local Ray cluster gives the same file as the single-process path."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from genrec.serving import load_bundle, recommend_batch
from genrec.serving.distributed import BatchEngineConfig, recommend_batch_distributed

ray = pytest.importorskip("ray")
# One local Ray cluster at a time (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("ray")


@pytest.mark.slow
def test_ray_batch_equals_single_process(bundles, tmp_path) -> None:
    b = load_bundle(bundles.ease)
    users = [*b.user_ids[:300], "no-such-user", *b.user_ids[300:500]]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as many as each actor (BatchEngineConfig.threads): same floats
    try:
        one = recommend_batch(b, users, tmp_path / "one.parquet", k=20, chunk_size=50)
    finally:
        torch.set_num_threads(threads)
    cfg = BatchEngineConfig(engine="ray", num_cpus=2, shard_chunks=2)
    two = recommend_batch_distributed(bundles.ease, users, tmp_path / "ray.parquet", config=cfg,
                                      k=20, chunk_size=50)
    assert not ray.is_initialized()  # the cluster it started is shut down
    assert (two.users, two.cold_start, two.rows) == (one.users, one.cold_start, one.rows)
    a, r = pl.read_parquet(one.path), pl.read_parquet(two.path)
    assert r.height == 501 * 20 and r.filter(pl.col("cold_start")).height == 20
    assert r.equals(a)  # identical top-k, scores and order, row for row


def test_local_engine_is_the_single_process_path(bundles, tmp_path) -> None:
    s = recommend_batch_distributed(bundles.pop, None, tmp_path / "all.parquet", k=3)
    ref = recommend_batch(load_bundle(bundles.pop), None, tmp_path / "ref.parquet", k=3)
    assert pl.read_parquet(s.path).equals(pl.read_parquet(ref.path))
    with pytest.raises(ValueError):
        recommend_batch_distributed(bundles.pop, None, tmp_path / "x.parquet", k=0,
                                    config=BatchEngineConfig(engine="ray"))


def test_cli_recommend_engine_flags(bundles, tmp_path) -> None:
    from typer.testing import CliRunner

    from genrec.cli import app

    runner = CliRunner()
    base = ["recommend", "--model", str(bundles.pop), "--k", "3"]
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "a.parquet"), "--engine", "spark"])
    assert res.exit_code == 2 and "engine" in res.output
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "b.parquet"), "--engine", "local"])
    assert res.exit_code == 0, res.output
    assert pl.read_parquet(tmp_path / "b.parquet").height == 3 * load_bundle(bundles.pop).n_users
