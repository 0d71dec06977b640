"""Several seeds per model: aggregation, intervals, paired tests, and the first seed equal to
a plain run (ML-100K, a tiny SASRec and EASE)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from genrec.cli import app
from genrec.config import load_config
from genrec.models.base import FitContext
from genrec.models.registry import MODELS, build_model, load_model, model_config
from genrec.runs.experiment import prepare, run_experiment
from genrec.runs.seeds import fits_once

SASREC = ["models.1.max_len=20", "models.1.dim=16", "models.1.n_layers=1", "models.1.n_heads=1",
          "models.1.train.epochs=2", "models.1.train.batch_size=256",
          "models.1.train.progress=false", "models.1.train.device=cpu"]


@pytest.mark.slow
def test_three_seeds_report_mean_spread_intervals_and_tests(data_dir: Path,
                                                            tmp_path: Path) -> None:
    common = [f"dataset.data_dir={data_dir}", "protocol.cutoffs=[10]", *SASREC]
    many = run_experiment(load_config(None, [f"output={tmp_path / 'three'}", "seeds=3", *common],
                                      models=["ease", "sasrec"]))
    one = run_experiment(load_config(None, [f"output={tmp_path / 'one'}", *common],
                                     models=["ease", "sasrec"]))
    rows = {r["model"]: r for r in many["results"]}
    for kind, row in rows.items():
        assert row["seeds"] == [42, 43, 44] and len(row["per_seed"]) == 3
        for m, mean in row["test"].items():
            values = [r["test"][m] for r in row["per_seed"]]
            assert mean == pytest.approx(np.mean(values), abs=1e-6)
            assert row["test_std"][m] == pytest.approx(np.std(values, ddof=1), abs=1e-6)
            lo, hi = row["test_ci95"][m]
            # the 95% t-interval over 3 seeds: mean ± t(0.975, 2) * std / sqrt(3)
            half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / np.sqrt(3)
            assert lo == pytest.approx(mean - half, abs=2e-6)
            assert hi == pytest.approx(mean + half, abs=2e-6)
            blo, bhi = row["test_bootstrap_ci95"][m]
            assert blo <= mean + 1e-6 <= bhi + 2e-6
        # The first seed is the plain run: same seed, same split, same numbers.
        plain = next(r for r in one["results"] if r["model"] == kind)
        assert row["per_seed"][0]["test"] == plain["test"]
        assert (tmp_path / "three" / "models" / kind / "config.json").is_file()
    # SASRec is refitted per seed and saved per seed; EASE does not depend on the seed, so it
    # is fitted once and its later seeds repeat the first, marked as such.
    assert (tmp_path / "three" / "models" / "sasrec-seed-44" / "config.json").is_file()
    assert not (tmp_path / "three" / "models" / "ease-seed-44").exists()
    assert [r.get("same_as_seed") for r in rows["ease"]["per_seed"]] == [None, 42, 42]
    assert all("same_as_seed" not in r for r in rows["sasrec"]["per_seed"])
    assert rows["ease"]["test_std"]["ndcg@10"] == 0.0
    assert rows["sasrec"]["test_std"]["ndcg@10"] > 0.0
    # three distinct fits, not one fit reported three times
    assert len({r["test"]["ndcg@10"] for r in rows["sasrec"]["per_seed"]}) == 3
    assert len({r["valid"]["ndcg@10"] for r in rows["sasrec"]["per_seed"]}) == 3
    sig = many["significance"]
    assert {t["metric"] for t in sig} >= {"ndcg@10", "recall@10"}
    assert all({t["model_a"], t["model_b"]} == {"ease", "sasrec"} for t in sig)
    md = (tmp_path / "three" / "results.md").read_text()
    assert "±" in md and "Paired tests" in md and "t-interval" in md
    assert "Fitted once: ease (" in md


def test_seeds_flag_is_the_config_key(data_dir: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["run", "--dataset", "ml-100k", "--models", "pop", "--seeds",
                                 "2", "--data-dir", str(data_dir), "--output",
                                 str(tmp_path), "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["results"][0]["seeds"] == [42, 43] and "±" in r.output


def test_models_that_say_they_ignore_the_seed_fit_the_same_on_every_seed(
        data_dir: Path) -> None:
    """The glue fits a ``seed_dependent = False`` model once for all seeds: check the claim
    on real data (two seeds, identical scores) for every such model of the registry."""
    cfg = load_config(None, [f"dataset.data_dir={data_dir}"], models=["ease"])
    data = prepare(cfg, write=False)
    train, hist = data.split.train, data.test_set.histories.slice(0, 200)
    kinds = [k for k, cls in MODELS.items() if not cls.seed_dependent]
    assert set(kinds) >= {"pop", "itemknn", "ease", "graph_heuristic"}
    for kind in kinds:
        scores = [build_model(model_config(kind)).fit(train, FitContext(
            items=data.dataset.items, seed=seed, progress=False)).score(hist)
            for seed in (1, 2)]
        assert np.array_equal(np.asarray(scores[0]), np.asarray(scores[1])), kind


def test_fits_once_only_for_seed_free_models_under_full_ranking(data_dir: Path) -> None:
    full = load_config(None, [f"dataset.data_dir={data_dir}", "seeds=3"],
                       models=["ease", "sasrec"])
    sampled = load_config(None, [f"dataset.data_dir={data_dir}", "seeds=3",
                                 "protocol.candidates=sampled"], models=["ease"])
    assert fits_once(full.models[0], full) and not fits_once(full.models[1], full)
    # Sampled candidates are drawn with the seed: every seed is evaluated again.
    assert not fits_once(sampled.models[0], sampled)


def test_two_configurations_of_one_kind_share_a_run_under_their_names(data_dir: Path,
                                                                      tmp_path: Path) -> None:
    """Two EASE configurations in one run (names set), on 2 seeds: each has its row, its
    model folder and its params, and they are paired with each other."""
    path = tmp_path / "two.yaml"
    path.write_text("models:\n  - {kind: ease, l2: 10}\n"
                    "  - {kind: ease, name: ease-strong, l2: 2000}\n")
    cfg = load_config(path, [f"dataset.data_dir={data_dir}", f"output={tmp_path / 'run'}",
                             "seeds=2", "protocol.cutoffs=[10]"])
    res = run_experiment(cfg)
    rows = {r["model"]: r for r in res["results"]}
    assert list(rows) == ["ease", "ease-strong"]
    assert "kind" not in rows["ease"] and rows["ease-strong"]["kind"] == "ease"
    assert rows["ease"]["params"]["l2"] == 10 and rows["ease-strong"]["params"]["l2"] == 2000
    assert "name" not in rows["ease-strong"]["params"]
    assert rows["ease"]["test"] != rows["ease-strong"]["test"]  # two models, not one twice
    for name in rows:
        saved = json.loads((tmp_path / "run" / "models" / name / "config.json").read_text())
        assert saved["l2"] == rows[name]["params"]["l2"]
    sig = res["significance"]
    assert sig and all({t["model_a"], t["model_b"]} == {"ease", "ease-strong"} for t in sig)
    # The named model reloads from its folder with its name and settings.
    loaded = load_model(tmp_path / "run" / "models" / "ease-strong")
    assert (loaded.config.label, loaded.config.l2) == ("ease-strong", 2000)
    assert "ease-strong" in (tmp_path / "run" / "results.md").read_text()
