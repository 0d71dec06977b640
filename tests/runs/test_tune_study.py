"""genrec tune's stored study on ML-100K: pruning on the validation curve, parallel workers,
resuming, refusing another search, the time budget and interrupted trials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import optuna
import pytest

from genrec.config import ExperimentConfig, load_config
from genrec.runs import tuning
from genrec.runs.tuning import tune
from genrec.runs.tuning_study import STUDY_NAME, study_lock

MIN_ITEM = 50
"""Items with fewer interactions are dropped (603 left): EASE fits in milliseconds."""

BAD_LR = 1e-5


def _config(out: Path, data_dir: Path, model: dict[str, Any], space: dict[str, Any],
            **tune_args: Any) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "dataset": {"name": "ml-100k", "data_dir": str(data_dir),
                    "preprocess": {"min_item_interactions": MIN_ITEM}},
        "protocol": {"cutoffs": [10]},
        "models": [model], "output": str(out), "threads": 1,
        "tune": {"space": space} | tune_args})


def _ease(out: Path, data_dir: Path, **tune_args: Any) -> ExperimentConfig:
    space = {"models.0.l2": {"type": "float", "low": 10, "high": 2000, "log": True}}
    return _config(out, data_dir, {"kind": "ease"}, space, **tune_args)


def _bprmf(out: Path, data_dir: Path, pruner: str) -> ExperimentConfig:
    """A good and a bad BPR-MF learning rate, the bad one tried second (grid order of seed
    1), when the good one has set the bar."""
    model = {"kind": "bprmf", "dim": 16, "train": {
        "epochs": 4, "batch_size": 1024, "lr": 0.01, "patience": None, "progress": False,
        "device": "cpu"}}
    space = {"models.0.train.lr": {"type": "categorical", "choices": [0.01, BAD_LR]}}
    return _config(out, data_dir, model, space, sampler="grid", seed=1, pruner=pruner,
                   prune_from_round=2, prune_startup_trials=1, halving_rate=2)


@pytest.mark.slow
@pytest.mark.parametrize("pruner", ["median", "halving"])
def test_a_bad_learning_rate_is_pruned_before_its_last_epoch(pruner, tmp_path, data_dir
                                                             ) -> None:
    t = tune(_bprmf(tmp_path, data_dir, pruner))["tuning"]
    trials = {r["params"]["models.0.train.lr"]: r for r in t["trials"]}
    assert t["trials"][-1]["params"]["models.0.train.lr"] == BAD_LR, "grid order changed"
    bad, good = trials[BAD_LR], trials[0.01]
    assert good["state"] == "complete" and len(good["curve"]) == 4
    # Its curve stops at round 2, the first at which a trial may be pruned, far below the
    # good trial there, which ran all 4 epochs and wins.
    assert bad["state"] == "pruned" and bad["pruned_at_round"] == 2 and len(bad["curve"]) == 2
    assert bad["curve"][-1] < good["curve"][1]
    assert "valid" not in bad and t["n_pruned"] == 1 and t["pruner"] == pruner
    assert t["best_params"]["models.0.train.lr"] == 0.01
    md = (tmp_path / "results.md").read_text()
    assert "1 pruned" in md and "| pruned (" in md


@pytest.mark.slow
def test_two_workers_run_the_budget_with_distinct_trials(tmp_path, data_dir) -> None:
    results = tune(_ease(tmp_path, data_dir, n_trials=5, workers=2))
    t = results["tuning"]
    assert t["workers"] == 2 and t["n_trials"] == 5
    assert [r["number"] for r in t["trials"]] == list(range(5))
    assert all(r["state"] == "complete" for r in t["trials"])
    assert len({r["params"]["models.0.l2"] for r in t["trials"]}) == 5
    assert sorted(r["worker"] for r in t["trials"]) == [0, 0, 0, 1, 1]  # shares 3 + 2
    assert t["best_valid"] == max(r["valid"] for r in t["trials"])
    # The parent wrote the split the workers read; the chosen l2 was refitted and tested.
    assert (tmp_path / "split" / "split.json").is_file()
    (row,) = results["results"]
    assert row["params"]["l2"] == t["best_params"]["models.0.l2"]


def test_a_rerun_continues_the_study(tmp_path, data_dir) -> None:
    first = tune(_ease(tmp_path, data_dir, n_trials=2))["tuning"]
    assert first["continued_from"] == 0 and (tmp_path / "study.journal").is_file()
    second = tune(_ease(tmp_path, data_dir, n_trials=4))["tuning"]
    assert second["continued_from"] == 2 and second["n_trials"] == 4
    assert second["trials"][:2] == first["trials"]  # kept, not rerun
    l2s = [r["params"]["models.0.l2"] for r in second["trials"]]
    assert len(set(l2s)) == 4  # the resumed sampler does not redraw the first points
    # A trial a killed run left running is marked interrupted and does not use the budget.
    study = optuna.load_study(study_name=STUDY_NAME,
                              storage=optuna.storages.JournalStorage(
                                  optuna.storages.journal.JournalFileBackend(
                                      str(tmp_path / "study.journal"))))
    study.ask()
    third = tune(_ease(tmp_path, data_dir, n_trials=4))["tuning"]
    assert third["n_interrupted"] == 1 and third["continued_from"] == 4
    assert [r["state"] for r in third["trials"]] == ["complete"] * 4 + ["interrupted"]
    assert third["trials"][:4] == second["trials"] and third["run_seconds"] < 5


def test_a_rerun_of_another_search_is_refused(tmp_path, data_dir) -> None:
    tune(_ease(tmp_path, data_dir, n_trials=1))
    before = {f: (tmp_path / f).read_bytes() for f in ("config.yaml", "study.journal")}
    changes = [  # (section, key, value, what the error names)
        ("space", "models.0.l2", {"type": "float", "low": 10, "high": 3000, "log": True},
         "space.models.0.l2.high: 2000.0 in the study, 3000.0 now"),
        ("preprocess", "min_item_interactions", MIN_ITEM + 10, "data.items"),
        ("protocol", "valid_metric", "recall@10", "protocol.valid_metric"),
    ]
    for section, key, value, message in changes:
        raw = _ease(tmp_path, data_dir, n_trials=2).model_dump(mode="json")
        {"space": raw["tune"]["space"], "preprocess": raw["dataset"]["preprocess"],
         "protocol": raw["protocol"]}[section][key] = value
        with pytest.raises(ValueError, match="holds a study of another search") as e:
            tune(ExperimentConfig.model_validate(raw))
        assert message in str(e.value)
    # Neither the study nor the folder's config was touched.
    assert {f: (tmp_path / f).read_bytes() for f in before} == before


def test_the_time_budget_spans_reruns(tmp_path, data_dir, monkeypatch) -> None:
    real = tuning._fit_and_validate

    def slow(*args: Any) -> Any:
        time.sleep(0.4)
        return real(*args)

    monkeypatch.setattr(tuning, "_fit_and_validate", slow)
    cfg = _ease(tmp_path, data_dir, n_trials=20, timeout_minutes=0.01)  # 0.6 s
    t = tune(cfg)["tuning"]
    # No trial starts after 0.6 s; the one running then finishes and is recorded.
    assert 1 <= t["n_trials"] <= 3 and all(r["state"] == "complete" for r in t["trials"])
    assert t["wall_seconds"] >= 0.6
    again = tune(cfg)["tuning"]
    assert again["trials"] == t["trials"] and again["continued_from"] == t["n_trials"]
    stored = json.loads((tmp_path / "results.json").read_text())["tuning"]
    assert stored["wall_seconds"] >= t["wall_seconds"]


def _stored_study(journal: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal)))
    return optuna.load_study(study_name=STUDY_NAME, storage=storage)


def _stored_wall_seconds(journal: Path) -> float:
    return float(_stored_study(journal).user_attrs.get("wall_seconds", 0.0))


def _stored_complete_trials(journal: Path) -> int:
    return len(_stored_study(journal).get_trials(states=(optuna.trial.TrialState.COMPLETE,)))


@pytest.mark.slow
def test_a_killed_run_has_still_spent_its_time(tmp_path, data_dir) -> None:
    """SIGKILL skips every ``finally``: the spent wall time must already be in the study, so
    the rerun continues with what is left of ``timeout_minutes``, not a fresh budget."""
    cfg = _ease(tmp_path, data_dir, n_trials=1000, timeout_minutes=10)
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    child = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from genrec.config import ExperimentConfig
        from genrec.runs import tuning
        tuning.RECORD_EVERY = 0.2
        real = tuning._fit_and_validate
        def slow(*args):
            time.sleep(0.3)
            return real(*args)
        tuning._fit_and_validate = slow
        tuning.tune(ExperimentConfig.model_validate_json(
            Path({str(tmp_path / "cfg.json")!r}).read_text()))
        """)
    proc = subprocess.Popen([sys.executable, "-c", child], start_new_session=True)
    journal = tmp_path / "study.journal"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            # 2 s recorded and 3 finished trials (on a loaded box a trial can take > 0.7 s)
            if (journal.is_file() and _stored_wall_seconds(journal) >= 2.0
                    and _stored_complete_trials(journal) >= 3):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the tuning process ended before it was killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    recorded = _stored_wall_seconds(journal)
    assert recorded >= 2.0
    # The rerun asks for 1.5 s in all: the killed run has spent more, so nothing new runs.
    again = tune(_ease(tmp_path, data_dir, n_trials=1000, timeout_minutes=0.025))["tuning"]
    assert again["continued_from"] >= 3  # the killed run's finished trials are kept
    assert again["n_trials"] == again["continued_from"] + again["n_interrupted"]
    assert again["wall_seconds"] >= recorded


def test_a_second_tune_on_the_same_study_is_refused(tmp_path, data_dir) -> None:
    cfg = _ease(tmp_path, data_dir, n_trials=1)
    with study_lock(tmp_path / "study.journal"), \
            pytest.raises(RuntimeError, match="another genrec tune is running"):
        tune(cfg)


@pytest.mark.slow
def test_tiger_tunes_its_tokenizer_and_its_network(tmp_path, data_dir) -> None:
    """A nested tokenizer key and a network key in one space: each trial re-tokenizes, trains
    with validation rounds (its curve is recorded) and the best configuration is refitted."""
    model = {"kind": "tiger", "item_vectors": "text",
             "text": {"encoder": "hashing:32", "cache": False},
             "tokenizer": {"kind": "rqkmeans", "n_levels": 2, "codebook_size": 8},
             "dim": 32, "n_heads": 2, "ff_dim": 64, "n_layers": 1, "max_len": 5,
             "beam_size": 10, "train": {"epochs": 2, "eval_every": 1, "batch_size": 256,
                                        "lr": 3e-3, "device": "cpu", "progress": False}}
    space = {"models.0.tokenizer.codebook_size": {"type": "categorical", "choices": [8, 16]},
             "models.0.dim": {"type": "categorical", "choices": [32]}}
    out = tune(_config(tmp_path, data_dir, model, space, sampler="grid", pruner="none"))
    t = out["tuning"]
    assert t["n_trials"] == 2 and all(r["state"] == "complete" for r in t["trials"])
    sizes = sorted(r["params"]["models.0.tokenizer.codebook_size"] for r in t["trials"])
    assert sizes == [8, 16]
    assert all(len(r["curve"]) == 2 for r in t["trials"])  # one value per validation round
    best = load_config(tmp_path / "best.yaml").models[0]
    assert best.tokenizer.codebook_size == t["best_params"]["models.0.tokenizer.codebook_size"]
    assert out["results"][0]["model"] == "tiger" and "ndcg@10" in out["results"][0]["test"]


def test_a_damaged_journal_is_named_not_a_parse_traceback(tmp_path, data_dir) -> None:
    cfg = _ease(tmp_path / "out", data_dir)
    journal = tmp_path / "out" / "study.journal"
    journal.parent.mkdir(parents=True)
    journal.write_text('garbage\n{"op_code": 0}\n')
    with pytest.raises(ValueError, match="study.journal: not a readable Optuna journal"):
        tune(cfg)
    # One line cut off mid-write (no newline): Optuna skips it, so the file holds no study;
    # it is refused, not appended to.
    journal.write_text('{"op_code": 0, "wor')
    with pytest.raises(ValueError, match="holds no study"):
        tune(cfg)
    assert journal.read_text() == '{"op_code": 0, "wor'
