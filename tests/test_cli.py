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
    # A path of the wrong sort (an output that is a file, a config that is a folder) is an
    # error naming the path, not a traceback.
    res = runner.invoke(app, ["run", "--dataset", "ml-100k", "--models", "pop",
                              "--output", str(bad), "--data-dir", str(data_dir)])
    assert res.exit_code == 2 and str(bad) in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["run", str(tmp_path)])
    assert res.exit_code == 2 and str(tmp_path) in res.output


def test_data_describe(data_dir) -> None:
    res = runner.invoke(app, ["data", "describe", "ml-100k", "--data-dir", str(data_dir),
                              "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert (d["users"], d["items"], d["interactions"]) == (943, 1682, 100000)


@pytest.fixture
def captured_config(monkeypatch: pytest.MonkeyPatch) -> list:
    """``genrec run`` stops at the validated config (kept here) instead of running it."""
    import genrec.cli.experiments as experiments

    seen: list = []

    def stop(cfg, **_: object) -> None:
        seen.append(cfg)
        raise ValueError("stopped before running")

    monkeypatch.setattr(experiments, "run_experiment", stop)
    return seen


@pytest.mark.parametrize(("in_config", "flag", "resume"), [
    (True, [], True), (True, ["--no-resume"], False), (False, ["--resume"], True),
    (False, [], False)])
def test_resume_flag_overrides_the_config_both_ways(tmp_path, captured_config, in_config,
                                                    flag, resume) -> None:
    config = tmp_path / "r.yaml"
    config.write_text(f"dataset: {{name: ml-100k}}\nresume: {str(in_config).lower()}\n"
                      "models: [{kind: pop}]\n")
    res = runner.invoke(app, ["run", str(config), *flag])
    assert "stopped before running" in res.output, res.output
    assert captured_config[0].resume is resume


def test_text_flags_stay_text(tmp_path, captured_config) -> None:
    res = runner.invoke(app, ["run", "--dataset", "ml-100k", "--models", "pop", "--output",
                              "no", "--split-path", "2024", "--items", "a: b.csv",
                              "--item-id", "true", "--data-dir", "x: y", "--cutoffs", "5, 10",
                              "--set", 'models.0.name="no"'])
    assert "stopped before running" in res.output, res.output
    cfg = captured_config[0]
    assert (cfg.output, cfg.split_path, cfg.dataset.items.path, cfg.dataset.items.id,
            cfg.dataset.data_dir) == ("no", "2024", "a: b.csv", "true", "x: y")
    assert cfg.protocol.cutoffs == [5, 10] and cfg.models[0].label == "no"


@pytest.mark.parametrize("output", ["2024", "a: b"])
def test_output_that_yaml_would_not_read_as_text_names_the_folder(
        tmp_path, monkeypatch, data_dir, output) -> None:
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["run", "--dataset", "ml-100k", "--models", "pop", "--output",
                              output, "--data-dir", str(data_dir), "--quiet", "--set",
                              "save_models=false"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / output / "results.json").is_file()
    assert f"results written to {output}/" in res.output


def test_compare_runs_every_seed_like_run(tmp_path, data_dir) -> None:
    """Sampled candidates depend on the seed, so every seed is really fitted and evaluated."""
    out = tmp_path / "cmp"
    res = runner.invoke(app, ["compare", "--dataset", "ml-100k", "--models", "pop,itemknn",
                              "--seeds", "2", "--output", str(out), "--data-dir",
                              str(data_dir), "--n-boot", "50", "--quiet", "--set",
                              "save_models=false", "--set", "protocol.candidates=sampled"])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert "2 seeds 42..43 (mean ± std)" in results["protocol_text"]
    for row in results["results"]:
        assert [r["seed"] for r in row["per_seed"]] == [42, 43]
        assert not any("same_as_seed" in r for r in row["per_seed"])
        mean = np.mean([r["test"]["ndcg@10"] for r in row["per_seed"]])
        assert row["test"]["ndcg@10"] == pytest.approx(mean, abs=1e-6)
        assert {"test_std", "test_ci95", "test_bootstrap_ci95"} <= row.keys()
        per_user = np.load(out / "holistic" / f"{row['model']}.npz")
        assert per_user["m:ndcg@10"].mean() == pytest.approx(mean, abs=1e-5)
    assert results["significance"] and (out / "report.md").is_file()
