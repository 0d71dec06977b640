"""``benchmarks/tiger_beam.py`` on a real ML-100K TIGER run: reopening a run folder and its
saved model reproduces the recorded test metrics at the trained beam width, other widths are
evaluated on the same users, and the seeds are summarised with paired tests between widths."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from genrec.config import ExperimentConfig
from genrec.runs.experiment import run_experiment

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "tiger_beam.py"
_spec = importlib.util.spec_from_file_location("tiger_beam_bench", _PATH)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.slow
def test_beam_widths_of_a_saved_run(tmp_path, data_dir) -> None:
    cfg = ExperimentConfig.model_validate({
        "dataset": {"name": "ml-100k", "data_dir": str(data_dir),
                    "preprocess": {"min_item_interactions": 50}},
        "protocol": {"cutoffs": [5, 10]},
        "models": [{"kind": "tiger", "item_vectors": "text",
                    "text": {"encoder": "hashing:32", "cache": False},
                    "tokenizer": {"kind": "rqkmeans", "n_levels": 2, "codebook_size": 16},
                    "dim": 32, "n_heads": 2, "ff_dim": 64, "n_layers": 1, "max_len": 5,
                    "beam_size": 10,
                    "train": {"epochs": 2, "batch_size": 256, "lr": 3e-3, "device": "cpu",
                              "progress": False}}],
        "output": str(tmp_path / "run"), "threads": 1})
    run_experiment(cfg)
    run = bench.evaluate_run(tmp_path / "run", [10, 20])
    assert run["trained_beam"] == 10 and run["reproduces_recorded"]["ok"]
    assert run["seed"] == 42 and run["dataset"] == "ml-100k"
    wide = run["_per_user"][20]["recall@10"]
    assert wide.shape == run["_per_user"][10]["recall@10"].shape
    # A wider beam finds at least the same best item per user for most users: top-1 can only
    # change when a path pruned at width 10 overtakes it, so recall@5 moves by a few users.
    assert abs(run["per_beam"]["20"]["test"]["recall@5"]
               - run["per_beam"]["10"]["test"]["recall@5"]) < 0.05
    out = bench.summarize_variant("tiger", [run, run], [10, 20], ["recall@10", "ndcg@10"])
    assert out["seeds"] == [42, 42]
    r10 = out["per_beam"]["10"]
    assert r10["test"]["recall@10"] == pytest.approx(
        float(np.mean(run["_per_user"][10]["recall@10"])), abs=1e-6)
    assert r10["test_std"]["recall@10"] == 0.0
    pairs = {(p["metric"], p["model_a"], p["model_b"]) for p in out["paired_between_beams"]}
    assert pairs == {(m, "tiger@beam10", "tiger@beam20") for m in ("recall@10", "ndcg@10")}
    assert all("_per_user" not in r for r in out["runs"])
    # Between variants: seed-averaged per-user metrics of each, paired over the same users.
    worse = dict(run, _per_user={b: {m: np.zeros_like(v) for m, v in d.items()}
                                 for b, d in run["_per_user"].items()})
    other = bench.summarize_variant("zero", [worse, worse], [10, 20], ["recall@10", "ndcg@10"])
    between = bench.paired_between_variants([out, other], [10, 20], ["recall@10", "ndcg@10"])
    assert set(between) == {"10", "20"}
    r10 = {p["metric"]: p for p in between["10"]}
    assert r10["recall@10"]["model_a"] == "tiger" and r10["recall@10"]["model_b"] == "zero"
    assert r10["recall@10"]["diff"] == pytest.approx(
        float(np.mean(run["_per_user"][10]["recall@10"])), abs=1e-6)
    assert r10["recall@10"]["w_p_holm"] < 0.05
    other_seeds = dict(other, seeds=[43, 43])
    with pytest.raises(SystemExit, match="other seeds"):
        bench.paired_between_variants([out, other_seeds], [10], ["recall@10"])
    other_users = dict(other, _users=other["_users"][::-1])
    with pytest.raises(SystemExit, match="other users"):
        bench.paired_between_variants([out, other_users], [10], ["recall@10"])
