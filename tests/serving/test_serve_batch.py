"""Batch inference: chunked top-k with raw ids to Parquet, and the ``genrec recommend`` command."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from genrec.cli import app
from genrec.serving import ModelService, load_bundle, read_users, recommend_batch


def test_batch_matches_service_and_handles_unknown_users(bundles, tmp_path) -> None:
    b = load_bundle(bundles.ease)
    users = ["196", "no-such-user", "1", "186", "196"]
    s = recommend_batch(b, users, tmp_path / "recs.parquet", k=7, chunk_size=2)
    assert (s.users, s.cold_start, s.rows) == (5, 1, 35)
    out = pl.read_parquet(tmp_path / "recs.parquet")
    assert out.columns == ["user", "rank", "item", "score", "cold_start"]
    assert out["user"].to_list()[::7] == users  # input order kept across chunks
    svc = ModelService(b)
    for u in ("196", "1", "no-such-user"):
        rows = out.filter(pl.col("user") == u).head(7)
        r = svc.recommend(user=u, k=7)
        assert rows["item"].to_list() == [b.item_ids[i] for i in r.items]
        np.testing.assert_allclose(rows["score"].to_numpy(), r.scores, rtol=1e-5)
        assert rows["rank"].to_list() == list(range(1, 8))
        assert rows["cold_start"].to_list() == [r.cold_start] * 7


def test_batch_all_users_and_validation(bundles, tmp_path) -> None:
    b = load_bundle(bundles.pop)
    s = recommend_batch(b, None, tmp_path / "all.parquet", k=3, chunk_size=300)
    assert s.users == b.n_users and s.rows == 3 * b.n_users and s.cold_start == 0
    with pytest.raises(ValueError):
        recommend_batch(b, None, tmp_path / "x.parquet", k=0)


def test_read_users_formats(tmp_path) -> None:
    (tmp_path / "u.txt").write_text("196\n\n 1 \n")
    assert read_users(tmp_path / "u.txt") == ["196", "1"]
    pl.DataFrame({"user": [196, 1]}).write_parquet(tmp_path / "u.parquet")
    assert read_users(tmp_path / "u.parquet") == ["196", "1"]
    (tmp_path / "u.csv").write_text("user,x\n007,a\n")
    assert read_users(tmp_path / "u.csv") == ["007"]  # ids stay strings: no leading zeros lost
    (tmp_path / "bad.csv").write_text("id\n1\n")
    with pytest.raises(ValueError, match="'user' column"):
        read_users(tmp_path / "bad.csv")
    (tmp_path / "twice.txt").write_text("196\n1\n196\n")  # each user answered once
    assert read_users(tmp_path / "twice.txt") == ["196", "1"]
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf196\n1\n")  # a BOM is not part of an id
    assert read_users(tmp_path / "bom.txt") == ["196", "1"]


def test_cli_recommend_and_export(bundles, tmp_path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["export", str(bundles.run), "--model", "ease", "--out",
                              str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    (tmp_path / "users.txt").write_text("196\n1\nghost\n")
    res = runner.invoke(app, ["recommend", "--model", str(tmp_path / "b"), "--users",
                              str(tmp_path / "users.txt"), "--k", "100", "--out",
                              str(tmp_path / "recs.parquet")])
    assert res.exit_code == 0, res.output
    assert "300 rows for 3 users (1 cold start)" in res.output
    out = pl.read_parquet(tmp_path / "recs.parquet")
    assert out.height == 300 and out["item"].dtype == pl.String
    # A bare model folder is refused with a hint, not a traceback.
    res = runner.invoke(app, ["recommend", "--model", str(bundles.run / "models" / "ease"),
                              "--out", str(tmp_path / "x.parquet")])
    assert res.exit_code == 2 and "genrec export" in res.output


@pytest.mark.parametrize("flag", [["--address", "auto"], ["--workers", "2"], ["--num-cpus", "2"]])
def test_ray_only_flags_without_the_ray_engine_are_refused(bundles, tmp_path, flag) -> None:
    out = tmp_path / "x.parquet"
    res = CliRunner().invoke(app, ["recommend", "--model", str(bundles.pop), "--out", str(out),
                                   *flag])
    assert res.exit_code == 2 and "only applies with engine ray" in res.output
    assert f"error: invalid configuration: {flag[0][2:].replace('-', '_')} only" in res.output
    assert not out.exists()


def test_serve_refuses_zero_threads(bundles) -> None:
    res = CliRunner().invoke(app, ["serve", str(bundles.pop), "--threads", "0"])
    assert res.exit_code == 2 and "--threads" in res.output
