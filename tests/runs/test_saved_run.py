"""``open_saved_model``: a run folder reopened with a saved model re-evaluates to the test
metrics the run recorded, refuses a record that no longer matches, and says which model to
name when a run saved several or none (real ML-100K)."""

from __future__ import annotations

import pytest

from genrec.config import ExperimentConfig
from genrec.runs import SavedRun, open_saved_model
from genrec.runs.experiment import run_experiment

RUN = {"dataset": {"name": "ml-100k", "preprocess": {"min_item_interactions": 50}},
       "protocol": {"cutoffs": [10, 20]}, "threads": 1}
POP = {"kind": "pop"}
EASE = {"kind": "ease", "l2": 100.0}


def _run(tmp_path, name: str, models: list[dict], **extra) -> str:
    out = tmp_path / name
    run_experiment(ExperimentConfig.model_validate(
        {**RUN, "models": models, "output": str(out), **extra}))
    return str(out)


def test_saved_run_reproduces_and_refuses_a_changed_record(tmp_path, data_dir,
                                                           monkeypatch) -> None:
    monkeypatch.setenv("GENREC_DATA_DIR", str(data_dir))
    both = _run(tmp_path, "both", [POP, EASE])

    saved = open_saved_model(both, "ease")
    assert isinstance(saved, SavedRun) and saved.name == "ease"
    assert saved.record is not None and saved.record["model"] == "ease"
    assert saved.model.config.l2 == 100.0  # type: ignore[attr-defined]
    summary = saved.evaluate_test().summary()
    assert set(saved.record["test"]) <= set(summary)
    gaps = saved.reproduction_gaps(summary)
    assert set(gaps) == set(saved.record["test"]) and max(gaps.values()) <= 1e-6
    assert saved.check_reproduces(summary, ["ndcg@10", "recall@10"]) <= 1e-6

    # A record that no longer matches the model (as after a code or data change) is refused,
    # naming the metric.
    saved.record["test"]["ndcg@10"] += 0.01
    with pytest.raises(ValueError, match=r"re-evaluated ndcg@10 .* differs"):
        saved.check_reproduces(summary)
    with pytest.raises(ValueError, match="not both recorded and recomputed"):
        saved.reproduction_gaps(summary, ["no_such_metric@10"])

    # Two saved models: one must be named; an unknown name lists the saved ones.
    with pytest.raises(ValueError, match=r"\['ease', 'pop'\]: choose one"):
        open_saved_model(both)
    with pytest.raises(FileNotFoundError, match="saved models: \\['ease', 'pop'\\]"):
        open_saved_model(both, "sasrec")


def test_run_without_saved_models_or_results(tmp_path, data_dir, monkeypatch) -> None:
    monkeypatch.setenv("GENREC_DATA_DIR", str(data_dir))
    bare = _run(tmp_path, "bare", [EASE], save_models=False)
    with pytest.raises(FileNotFoundError, match="save_models: false"):
        open_saved_model(bare, "ease")

    one = _run(tmp_path, "one", [EASE])
    (tmp_path / "one" / "results.json").unlink()
    saved = open_saved_model(one)  # the only saved model; no record to check against
    assert saved.name == "ease" and saved.record is None
    with pytest.raises(ValueError, match="records no test metrics"):
        saved.check_reproduces(saved.evaluate_test().summary())


def test_a_model_left_by_an_earlier_run_in_the_folder_is_refused(tmp_path, data_dir,
                                                                 monkeypatch, caplog) -> None:
    # A second run into the same folder (another model, another split) once left the first
    # run's models/pop behind, and open_saved_model evaluated it under the new split.
    monkeypatch.setenv("GENREC_DATA_DIR", str(data_dir))
    out = _run(tmp_path, "reused", [POP])
    with caplog.at_level("WARNING", logger="genrec.runs.experiment"):
        _run(tmp_path, "reused", [EASE], protocol={"split": {"kind": "random"}})
    assert "holds an earlier run" in caplog.text
    with pytest.raises(ValueError, match=r"models/pop is not a model of this run"):
        open_saved_model(out, "pop")
    assert open_saved_model(out).name == "ease"  # the only model of this run


def test_a_run_on_relative_paths_reopens_from_another_folder(tmp_path, monkeypatch) -> None:
    # Relative dataset paths are read from the working directory; the run's config.yaml
    # records them absolute, so export / serve / report work from anywhere.
    data = tmp_path / "data"
    data.mkdir()
    rows = [f"u{u},i{(u * 7 + j) % 40},{1000 + 10 * u + j}" for u in range(30) for j in range(8)]
    (data / "inter.csv").write_text("user,item,timestamp\n" + "\n".join(rows) + "\n")
    monkeypatch.chdir(data)
    out = tmp_path / "run"
    run_experiment(ExperimentConfig.model_validate({
        "dataset": {"path": "inter.csv", "preprocess": {"min_user_interactions": 1,
                                                        "min_item_interactions": 1}},
        "models": [POP], "output": str(out), "threads": 1}))
    monkeypatch.chdir(tmp_path)
    saved = open_saved_model(out)
    assert saved.config.dataset.path == str(data / "inter.csv")
    with pytest.raises(Exception, match=r"not found \(looked in .*working directory"):
        run_experiment(ExperimentConfig.model_validate({
            "dataset": {"path": "inter.csv"}, "models": [POP], "output": str(tmp_path / "x")}))
