"""The genrec CLI end to end on real ML-100K: run, results files, saved models, reused split."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from genrec.cli import app
from genrec.data.splits import Split
from genrec.models.registry import load_model

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("run")
    res = runner.invoke(app, ["run", "--dataset", "ml-100k", "--models", "pop,itemknn,ease",
                              "--output", str(out), "--data-dir", str(data_dir), "--quiet"])
    assert res.exit_code == 0, res.output
    return out, res.output


def test_run_writes_results_in_the_documented_shape(run_dir) -> None:
    out, output = run_dir
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] | {} == results["dataset"]
    assert {k: results["dataset"][k] for k in ("name", "users", "items", "interactions")} == {
        "name": "ml-100k", "users": 943, "items": 1682, "interactions": 100000}
    proto = results["protocol"]
    assert proto["candidates"] == "full" and proto["exclude_seen"] is True
    assert proto["split"]["kind"] == "leave_one_out" and proto["seed"] == 42
    assert [r["model"] for r in results["results"]] == ["pop", "itemknn", "ease"]
    for r in results["results"]:
        assert {"model", "params", "fit_seconds", "eval_seconds", "valid", "test"} <= set(r)
        for key in ("recall@5", "ndcg@5", "recall@10", "ndcg@10", "mrr@10", "map@10"):
            assert 0.0 <= r["test"][key] <= 1.0
        assert "ndcg@10" in r["valid"]
    # The protocol is printed with the table, and written at the top of results.md.
    assert "leave-one-out" in output and "full ranking" in output
    assert "**Protocol**: split=leave-one-out" in (out / "results.md").read_text()
    # EASE beats popularity on ML-100K by a wide margin.
    by = {r["model"]: r["test"]["ndcg@10"] for r in results["results"]}
    assert by["ease"] > 1.3 * by["pop"]


def test_saved_models_reload_with_identical_scores(run_dir) -> None:
    out, _ = run_dir
    sp = Split.load(out / "split")
    hist = sp.test_set().histories.slice(0, 50)
    for kind in ("pop", "itemknn", "ease"):
        model = load_model(out / "models" / kind)
        assert not list((out / "models" / kind).glob("*.pkl"))
        scores = model.score(hist).numpy()
        assert scores.shape == (50, 1682) and np.isfinite(scores).all()


def test_second_run_reuses_the_saved_split(run_dir, tmp_path, data_dir) -> None:
    out, _ = run_dir
    res = runner.invoke(app, ["run", "--dataset", "ml-100k", "--models", "ease", "--output",
                              str(tmp_path), "--split-path", str(out / "split"), "--data-dir",
                              str(data_dir), "--quiet"])
    assert res.exit_code == 0, res.output
    first = json.loads((out / "results.json").read_text())["results"][2]["test"]
    second = json.loads((tmp_path / "results.json").read_text())["results"][0]["test"]
    assert first == second


def test_bad_input_gives_one_clear_error(tmp_path, data_dir) -> None:
    res = runner.invoke(app, ["run", "--dataset", "ml-100k", "--models", "nope",
                              "--output", str(tmp_path), "--data-dir", str(data_dir)])
    assert res.exit_code == 2 and "invalid configuration" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(app, ["run", "--dataset", "no-such-data", "--models", "pop",
                              "--output", str(tmp_path)])
    assert res.exit_code == 2 and "error:" in res.output and "Traceback" not in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [{kind: ease, l2: 'x'}]\n")
    res = runner.invoke(app, ["run", str(bad)])
    assert res.exit_code == 2 and "models.0" in res.output


def test_data_describe(data_dir) -> None:
    res = runner.invoke(app, ["data", "describe", "ml-100k", "--data-dir", str(data_dir),
                              "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert (d["users"], d["items"], d["interactions"]) == (943, 1682, 100000)
