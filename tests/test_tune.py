"""genrec tune: Optuna search on validation only, test once for the chosen config (ML-100K)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from genrec.cli import app
from genrec.config import ExperimentConfig, load_config
from genrec.runs import experiment, tuning
from genrec.runs.tuning import tune

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MIN_ITEM = 50
"""Items with fewer interactions are dropped: EASE fits in milliseconds on the 603 left."""


def _config(out: Path, data_dir: Path, space: dict[str, Any], **tune_args: Any
            ) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "dataset": {"name": "ml-100k", "data_dir": str(data_dir),
                    "preprocess": {"min_item_interactions": MIN_ITEM}},
        "models": [{"kind": "ease"}], "output": str(out),
        "tune": {"space": space} | tune_args})


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, data_dir) -> tuple[Path, dict[str, Any], list[str]]:
    """Four TPE trials of EASE's l2, with every evaluation and the final fit recorded."""
    out = tmp_path_factory.mktemp("tune")
    events: list[str] = []
    prepared: list[experiment.Prepared] = []
    real_prepare, real_fit = experiment.prepare, experiment.fit_and_evaluate
    real_evaluate = experiment.evaluate

    def prepare(cfg: ExperimentConfig, **kw: Any) -> experiment.Prepared:
        prepared.append(real_prepare(cfg, **kw))
        return prepared[-1]

    def evaluate(model: Any, evalset: Any, *args: Any, **kw: Any) -> Any:
        events.append({id(prepared[0].valid_set): "valid",
                       id(prepared[0].test_set): "test"}.get(id(evalset), "other"))
        return real_evaluate(model, evalset, *args, **kw)

    def fit_and_evaluate(*args: Any, **kw: Any) -> Any:
        events.append("final fit")
        return real_fit(*args, **kw)

    cfg = _config(out, data_dir, {"models.0.l2": {"type": "float", "low": 10, "high": 2000,
                                                  "log": True}}, n_trials=4)
    cfg = cfg.model_copy(update={"seeds": 3})  # a recipe for 3 seeds; the refit is one fit
    with pytest.MonkeyPatch.context() as mp:
        # The tuner reaches all three through the module (trials evaluate with
        # experiment.evaluate, the final fit with experiment.fit_and_evaluate).
        mp.setattr(experiment, "prepare", prepare)
        mp.setattr(experiment, "fit_and_evaluate", fit_and_evaluate)
        mp.setattr(experiment, "evaluate", evaluate)
        results = tune(cfg)
    return out, results, events


def test_tune_selects_the_best_trial_on_validation(tuned) -> None:
    out, results, _ = tuned
    assert json.loads((out / "results.json").read_text()) == results
    t = results["tuning"]
    assert t["metric"] == "ndcg@10" and t["n_trials"] == len(t["trials"]) == 4
    valids = [r["valid"] for r in t["trials"]]
    assert all(r["state"] == "complete" for r in t["trials"])
    assert t["best_valid"] == max(valids)
    best = t["trials"][valids.index(max(valids))]
    assert t["best_trial"] == best["number"] and t["best_params"] == best["params"]
    assert len({r["params"]["models.0.l2"] for r in t["trials"]}) == 4
    assert all(10 <= r["params"]["models.0.l2"] <= 2000 for r in t["trials"])
    # Only the final model has a test block; EASE is deterministic, so its refit scores the
    # same on validation as its trial did.
    (row,) = results["results"]
    assert row["model"] == "ease" and row["params"]["l2"] == t["best_params"]["models.0.l2"]
    assert row["test"]["ndcg@10"] > 0 and not any("test" in r for r in t["trials"])
    assert row["valid"]["ndcg@10"] == pytest.approx(t["best_valid"], abs=1e-6)
    assert "seeds" not in results["protocol_text"]
    md = (out / "results.md").read_text()
    assert "## Tuning: 4 trials" in md and f"| {t['best_trial']} (best) |" in md
    assert (out / "models" / "ease").is_dir()


def test_trials_never_evaluate_the_test_set(tuned) -> None:
    _, _, events = tuned
    assert events == ["valid"] * 4 + ["final fit", "valid", "test"]


def test_best_yaml_is_the_chosen_config(tuned) -> None:
    out, results, _ = tuned
    best = load_config(out / "best.yaml")
    assert best.tune is None and best.output == str(out / "best") and best.seeds == 3
    assert best.models[0].l2 == results["tuning"]["best_params"]["models.0.l2"]
    assert best.dataset.name == "ml-100k" and best.protocol.valid_metric == "ndcg@10"


@pytest.mark.parametrize(("space", "extra", "message"), [
    ({"models.0.l2": {"type": "float", "low": 100, "high": 10}}, {}, "must not exceed"),
    ({"models.0.l2": {"type": "float", "low": 0, "high": 10, "log": True}}, {}, "low > 0"),
    ({"protocol.seed": {"type": "int", "low": 1, "high": 3}}, {}, "setting of the model"),
    ({"models.1.l2": {"type": "float", "low": 1, "high": 10}}, {}, "setting of the model"),
    ({"models.0.kind": {"type": "categorical", "choices": ["ease", "pop"]}}, {}, "kind"),
    ({"models.0.l2": {"type": "float", "low": 1, "high": 10}}, {"sampler": "grid"},
     "categorical"),
    ({"models.0.l2": {"type": "float", "low": 1, "high": 10, "step": 1}}, {}, "Extra inputs"),
    ({}, {}, "at least 1"),
])
def test_bad_space_fails_at_config_validation(space, extra, message, tmp_path) -> None:
    with pytest.raises(ValidationError, match=message):
        _config(tmp_path, tmp_path, space, **extra)


@pytest.mark.parametrize(("space", "message"), [
    ({"models.0.l3": {"type": "float", "low": 1, "high": 10}}, "tune.space.models.0.l3"),
    ({"models.0.l2": {"type": "float", "low": 0, "high": 10}}, "greater than 0"),
    ({"models.0.train.lr": {"type": "float", "low": 1e-4, "high": 1e-3}}, "not permitted"),
])
def test_space_the_model_rejects_fails_before_loading_data(space, message, tmp_path) -> None:
    cfg = _config(tmp_path / "out", tmp_path, space)
    with pytest.raises(ValueError, match=message):
        tune(cfg)
    assert not (tmp_path / "out").exists()


def test_one_model_per_tuned_config(tmp_path) -> None:
    cfg = _config(tmp_path, tmp_path, {"models.0.l2": {"type": "float", "low": 1, "high": 9}})
    cfg = cfg.model_copy(update={"models": [*cfg.models, *load_config(None, models=["pop"])
                                            .models]})
    with pytest.raises(ValueError, match="one model per config"):
        tune(cfg)


def test_grid_sampler_tries_every_choice_once(tmp_path, data_dir) -> None:
    choices = [50.0, 200.0, 800.0]
    cfg = _config(tmp_path, data_dir, {"models.0.l2": {"type": "categorical",
                                                       "choices": choices}},
                  sampler="grid", n_trials=10)
    t = tune(cfg)["tuning"]
    assert t["n_trials"] == 3
    assert sorted(r["params"]["models.0.l2"] for r in t["trials"]) == choices


def test_a_failing_trial_is_recorded_and_the_search_goes_on(tmp_path, data_dir,
                                                             monkeypatch) -> None:
    real = tuning._fit_and_validate

    def fit(mcfg: Any, *args: Any) -> Any:
        if mcfg.l2 == 200.0:
            raise ValueError("diverged")
        return real(mcfg, *args)

    monkeypatch.setattr(tuning, "_fit_and_validate", fit)
    cfg = _config(tmp_path, data_dir, {"models.0.l2": {"type": "categorical",
                                                       "choices": [200.0, 50.0]}},
                  sampler="grid")
    t = tune(cfg)["tuning"]
    failed = [r for r in t["trials"] if r["state"] == "failed"]
    assert t["n_failed"] == 1 and failed[0]["error"] == "diverged"
    assert t["best_params"] == {"models.0.l2": 50.0}


def test_cli_tune(tmp_path, data_dir) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["tune", str(CONFIGS / "tune-ease-ml100k.yaml"), "--n-trials", "2",
                              "--output", str(tmp_path), "--data-dir", str(data_dir), "--set",
                              f"dataset.preprocess.min_item_interactions={MIN_ITEM}", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "best of 2 trials" in res.output and f"{tmp_path}/best.yaml" in res.output
    assert "protocol: split=leave-one-out" in res.output and "ease" in res.output
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["tuning"]["trials"]) == 2
    res = runner.invoke(app, ["tune", str(CONFIGS / "tune-ease-ml100k.yaml"), "--n-trials", "0",
                              "--output", str(tmp_path)])
    assert res.exit_code == 2 and "invalid configuration" in res.output
    assert "Traceback" not in res.output
