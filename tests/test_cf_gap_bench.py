"""``benchmarks/cf_gap.py`` on ML-100K: the gap run (EASE at several ranks beside a CF recipe),
then ``--width-runs``, which reopens saved ``genrec run`` folders of the CF recipe at other
widths, reproduces their recorded test metrics and sets each beside EASE at the same rank."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from genrec.config import load_config
from genrec.runs.experiment import run_experiment

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "cf_gap.py"
_spec = importlib.util.spec_from_file_location("cf_gap_bench", _PATH)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

RECIPE = {
    "dataset": {"name": "ml-100k", "preprocess": {"min_item_interactions": 50}},
    "protocol": {"cutoffs": [5, 10]},
    "threads": 1,
}


def _recipes(folder: Path) -> None:
    folder.mkdir()
    ease = {**RECIPE, "models": [{"kind": "ease", "l2": 100.0}]}
    bpr = {**RECIPE, "models": [{"kind": "bprmf", "dim": 16, "l2": 1e-3, "train": {
        "epochs": 2, "batch_size": 2048, "lr": 0.01, "device": "cpu", "progress": False}}]}
    (folder / "ease.yaml").write_text(yaml.safe_dump(ease))
    # named after its origin, not its kind, as Sports' bprmf-from-beauty.yaml is
    (folder / "bprmf-carried.yaml").write_text(yaml.safe_dump(bpr))


@pytest.mark.slow
def test_width_runs_beside_ease_at_the_same_rank(tmp_path, data_dir, monkeypatch) -> None:
    monkeypatch.setenv("GENREC_DATA_DIR", str(data_dir))
    recipes, results = tmp_path / "recipes", tmp_path / "results"
    _recipes(recipes)
    monkeypatch.setattr(sys, "argv", ["cf_gap.py", "--dataset", "ml-100k", "--models", "ease",
                                      "bprmf-carried", "--ranks", "16", "32", "--recipe-dir",
                                      str(recipes), "--results-dir", str(results),
                                      "--pop-edges", "0", "100", "--len-edges", "0", "50"])
    bench.main()
    gap = json.loads((results / "cf-gap.json").read_text())
    assert [e["rank"] for e in gap["ease_rank"]] == [16, 32]
    # The buckets follow the edges given, and each grouping covers every test user once.
    users = gap["groups_users"]
    assert set(users["target popularity"]) == {"count 0-100", "count >100"}
    assert set(users["history length"]) == {"len 0-50", "len >50"}
    assert len({sum(g.values()) for g in users.values()}) == 1
    # The wider model: the same recipe at dim 32, run as a user would, saved in its folder.
    cfg = load_config(recipes / "bprmf-carried.yaml",
                      ["models.0.dim=32", f"output={tmp_path / 'w32'}"])
    run_experiment(cfg)
    monkeypatch.setattr(sys, "argv", ["cf_gap.py", "--dataset", "ml-100k", "--width-runs",
                                      str(tmp_path / "w32"), "--results-dir", str(results)])
    bench.main()
    doc = json.loads((results / "cf-width.json").read_text())
    recorded = json.loads((tmp_path / "w32" / "results.json").read_text())["results"][0]
    base, wide = doc["runs"]
    assert (base["dim"], wide["dim"]) == (16, 32)
    # the recipe's row from the gap run, found by its model kind under its file's name
    assert base["test"] == gap["models"]["bprmf-carried"]["test"]
    assert wide["test"] == {k: recorded["test"][k] for k in ("recall@10", "ndcg@10")}
    assert wide["ease_same_rank"]["rank"] == 32 and base["ease_same_rank"]["rank"] == 16
    groups = wide["by_group"]["target co-consumed with last item"]
    assert set(groups) == {"yes", "no"}
    assert set(wide["by_group"]["history length"]) == {"len 0-50", "len >50"}  # the gap run's
    table = bench.width_markdown(doc)
    assert "| bprmf | 32 | 2 (" in table and "| ease (full) |" in table
    # --name writes another file and leaves cf-width.json as it was
    before = (results / "cf-width.json").read_text()
    monkeypatch.setattr(sys, "argv", ["cf_gap.py", "--dataset", "ml-100k", "--width-runs",
                                      str(tmp_path / "w32"), "--results-dir", str(results),
                                      "--name", "cf-w32"])
    bench.main()
    assert (results / "cf-width.json").read_text() == before
    assert json.loads((results / "cf-w32.json").read_text())["runs"] == doc["runs"]
