"""``benchmarks/tuned.py``: the recipe written after a study keeps the search's ``--set``
overrides (a study of SASRec with ``models.0.item_text=init`` must not write a recipe of plain
SASRec) and the chosen values, and it validates as a config."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from genrec.config import ExperimentConfig

_ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("tuned_bench", _ROOT / "benchmarks" / "tuned.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_recipe_keeps_the_search_overrides_and_the_choice() -> None:
    space = _ROOT / "configs" / "tune" / "sasrec.yaml"
    sets = ["dataset.name=amazon-beauty", "models.0.item_text=init",
            "models.0.train.patience=5", "tune.workers=2"]
    best = {"models.0.dim": 128, "models.0.train.lr": 0.0012}
    recipe = bench.recipe_config(space, sets, best, 3, "runs/amazon-beauty/sasrec")
    model = recipe["models"][0]
    assert recipe["dataset"]["name"] == "amazon-beauty"
    assert model["item_text"] == "init"
    assert model["train"]["patience"] == 5
    assert (model["dim"], model["train"]["lr"]) == (128, 0.0012)
    assert recipe["tune"]["workers"] == 2 and recipe["seeds"] == 3
    # the search file itself is untouched, and the recipe is a valid experiment
    assert "item_text" not in yaml.safe_load(space.read_text())["models"][0]
    cfg = ExperimentConfig.model_validate(recipe)
    assert cfg.seeds == 3


@pytest.mark.parametrize(("seeds", "says", "never"), [
    (3, "# Study and 3-seed results: benchmarks/results/yelp/tuned-hstu.json;", "not run"),
    (None, "# Study results (its seeds not run: --skip-seeds): benchmarks/results/yelp/",
     "3-seed")])
def test_recipe_header_says_whether_the_seeds_ran(seeds, says, never) -> None:
    study = {"best_trial": 1, "n_trials": 6, "n_pruned": 3, "sampler": "tpe",
             "pruner": "median", "metric": "ndcg@10", "best_valid": 0.025273,
             "best_params": {"models.0.dim": 128, "models.0.train.lr": 0.00019476}}
    header = bench.recipe_header("hstu", "yelp", "configs/x.yaml --set tune.workers=2", study,
                                 seeds, "benchmarks/results/yelp/tuned-hstu.json", "CMD")
    lines = header.splitlines()
    assert len(lines) == 4 and all(line.startswith("# ") for line in lines)
    assert lines[0] == ("# hstu on yelp: the recipe chosen by `genrec tune configs/x.yaml "
                        "--set tune.workers=2`")
    assert lines[1] == ("# (trial 1 of 6, 3 pruned, tpe sampler, median pruner, valid "
                        "ndcg@10=0.0253): dim=128, train.lr=0.0001948.")
    assert lines[2].startswith(says) and lines[2].endswith("reproduce with CMD")
    assert never not in header


RUN = {"dataset": {"name": "ml-100k", "preprocess": {"min_item_interactions": 50}},
       "protocol": {"cutoffs": [10, 20]}, "threads": 1}
BPR = {"kind": "bprmf", "dim": 16, "train": {"epochs": 2, "batch_size": 2048, "lr": 0.01,
                                            "device": "cpu", "progress": False}}


@pytest.mark.slow
def test_paired_runs_match_seeds_run_together(tmp_path, data_dir, monkeypatch) -> None:
    """Seeds run as separate processes, reloaded and paired, give the paired tests that
    ``genrec run`` computes when the same models and seeds run together."""
    from genrec.runs.experiment import run_experiment

    monkeypatch.setenv("GENREC_DATA_DIR", str(data_dir))
    runs: dict[str, list[str]] = {"bprmf": [], "ease": []}
    for seed in (42, 43):
        for label, m in (("bprmf", BPR), ("ease", {"kind": "ease", "l2": 100.0})):
            out = tmp_path / f"{label}-{seed}"
            run_experiment(ExperimentConfig.model_validate(
                {**RUN, "models": [m], "protocol": {**RUN["protocol"], "seed": seed},
                 "output": str(out)}))
            runs[label].append(str(out))
    together = tmp_path / "together"
    run_experiment(ExperimentConfig.model_validate(
        {**RUN, "models": [BPR, {"kind": "ease", "l2": 100.0}], "seeds": 2,
         "output": str(together)}))
    expected = json.loads((together / "results.json").read_text())
    doc = bench.paired_runs("ml-100k", "paired", [f"{k}={','.join(v)}" for k, v in runs.items()],
                            "", dest=tmp_path / "paired.json")
    assert doc["models"]["bprmf"]["seeds"] == [42, 43]
    got = {(r["metric"], r["model_a"], r["model_b"]): r for r in doc["significance"]}
    for row in expected["significance"]:
        mine = got[(row["metric"], row["model_a"], row["model_b"])]
        for k in ("mean_a", "mean_b", "diff", "t_p", "w_p"):
            assert mine[k] == pytest.approx(row[k], abs=2e-6), (row["metric"], k)
    means = {r["model"]: r["test"] for r in expected["results"]}
    assert doc["models"]["bprmf"]["test"]["ndcg@10"] == pytest.approx(
        means["bprmf"]["ndcg@10"], abs=2e-6)
    stds = {r["model"]: r["test_std"] for r in expected["results"]}
    assert doc["models"]["bprmf"]["test_std"]["ndcg@10"] == pytest.approx(
        stds["bprmf"]["ndcg@10"], abs=2e-6)
    # A run without its saved model, or with another test set, is refused.
    with pytest.raises(SystemExit, match="re-evaluated|another dataset"):
        bench.paired_runs("ml-1m", "x", [f"ease={runs['ease'][0]}"], "",
                          dest=tmp_path / "x.json")


def test_table_lists_a_study_without_seeds_last_and_names_its_file() -> None:
    # The committed LastFM files: tuned studies with seeded rows, and a second SASRec study
    # kept without seeds (pruning from round 15) under its own name.
    rows = bench.table("lastfm").splitlines()[2:]
    assert rows[0].startswith("| ease |")
    assert rows[-1].startswith("| sasrec (tuned-sasrec-prune15) |")
    assert "– (study only)" in rows[-1]
    assert all("(study only)" not in r for r in rows[:-1])


def test_table_lists_carried_recipes_from_compare_runs_with_their_files() -> None:
    # The committed Sports files: SASRec has no Sports study, only a --compare run of the
    # recipe carried from Beauty, and BPR-MF's study has no seeds, so its carried recipes are
    # listed; EASE, ItemKNN and SimpleX have seeded studies, so their compare rows are not
    # listed twice.
    rows = bench.table("amazon-sports").splitlines()[2:]
    carried = [r for r in rows if "not tuned here" in r]
    assert [r.split(" | ")[0] for r in carried] == [
        "| sasrec (tuned-compare-sasrec)", "| bprmf (tuned-compare-bprmf-wide)",
        "| bprmf (tuned-compare-bprmf)"]
    assert "`configs/amazon-sports/tuned/bprmf-wide.yaml`" in carried[1]
    wide = json.loads((_ROOT / "benchmarks/results/amazon-sports/"
                       "tuned-compare-bprmf-wide.json").read_text())["results"][2]
    assert f"{wide['test']['ndcg@10']:.4f} ± {wide['test_std']['ndcg@10']:.4f}" in carried[1]
    names = [r.split(" | ")[0] for r in rows]
    # LightGCN's seeds are separate runs (tuned-paired-lightgcn.json); the ItemKNN run paired
    # with them repeats the study's result (NDCG@10 0.026675 vs 0.026665: ties) and is not listed
    assert sorted(names) == sorted(set(names)) and len(rows) == 8
    # the BPR-MF study has no seeds yet: last, and the carried BPR-MF rows stay listed
    assert names[-1] == "| bprmf" and "– (study only)" in rows[-1]
    assert "| lightgcn (tuned-paired-lightgcn)" in names
    lightgcn = rows[names.index("| lightgcn (tuned-paired-lightgcn)")]
    assert "lightgcn-seed42, lightgcn-seed43, lightgcn-seed44 |" in lightgcn
    assert " | 3 | " in lightgcn
    assert sum(n.startswith("| itemknn") for n in names) == 1
    # best test NDCG@10 first
    ndcg = [float(r.split(" | ")[7].split()[0]) for r in rows[:-1]]
    assert ndcg == sorted(ndcg, reverse=True)


def test_a_seeded_study_hides_the_carried_row_it_repeats(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Sports' committed files, with the BPR-MF study (committed without seeds: the test above
    # lists it last, beside both carried BPR-MF rows) given the width-512 run's seeds: that
    # carried row is then the study's own result and is not repeated; the width-128 one stays.
    results = tmp_path / "benchmarks" / "results" / "amazon-sports"
    results.mkdir(parents=True)
    for f in (_ROOT / "benchmarks" / "results" / "amazon-sports").glob("tuned-*.json"):
        (results / f.name).write_text(f.read_text())
    configs = tmp_path / "configs" / "amazon-sports" / "tuned"
    configs.mkdir(parents=True)
    for f in (_ROOT / "configs" / "amazon-sports" / "tuned").glob("*.yaml"):
        (configs / f.name).write_text(f.read_text())
    study = json.loads((results / "tuned-bprmf.json").read_text())
    assert study["results"] == []
    study["results"] = [json.loads((results / "tuned-compare-bprmf-wide.json").read_text())
                        ["results"][2]]
    (results / "tuned-bprmf.json").write_text(json.dumps(study))
    monkeypatch.setattr(bench, "ROOT", tmp_path)
    rows = bench.table("amazon-sports").splitlines()[2:]
    names = [r.split(" | ")[0] for r in rows]
    assert "| bprmf (tuned-compare-bprmf-wide)" not in names
    assert "| bprmf (tuned-compare-bprmf)" in names and len(rows) == 7
    assert "(study only)" not in rows[names.index("| bprmf")]
    assert "dim=512, l2=0.00308" in rows[names.index("| bprmf")]


def test_table_lists_seeds_kept_only_in_paired_files_once() -> None:
    # The committed Yelp files: the SASRec and HSTU studies have no seeds of their own; their
    # seeds are separate runs kept in tuned-paired-*.json files (SASRec's runs in three of
    # them). Beauty's BERT4Rec has no study at all; its SASRec and EASE paired rows repeat
    # the studies' seeded results and are not listed again.
    rows = bench.table("yelp").splitlines()[2:]
    paired = [r for r in rows if "separate runs:" in r]
    assert [r.split(" | ")[0] for r in paired] == [
        "| sasrec (tuned-paired-sasrec)", "| itemknn itemknn-wide (tuned-paired-itemknn-wide)",
        "| hstu hstu-lowlr (tuned-paired-hstu-lowlr)", "| hstu (tuned-paired-hstu)"]
    doc = json.loads((_ROOT / "benchmarks/results/yelp/tuned-paired-sasrec.json").read_text())
    m = doc["models"]["sasrec"]
    assert f"{m['test']['ndcg@10']:.4f} ± {m['test_std']['ndcg@10']:.4f}" in paired[0]
    assert "sasrec-seed42, sasrec-seed43, sasrec-seed44 |" in paired[0]
    assert sum("| sasrec" in r for r in rows) == 2  # the paired row and the study-only row
    beauty = bench.table("amazon-beauty").splitlines()[2:]
    assert [r.split(" | ")[0] for r in beauty if "separate runs:" in r] == [
        "| bert4rec (tuned-paired-bert4rec)"]
    ndcg = [float(r.split(" | ")[7].split()[0]) for r in beauty]
    assert ndcg == sorted(ndcg, reverse=True)


def test_compare_names_two_recipes_of_one_kind_by_their_files() -> None:
    """``--compare`` of two SASRec recipes (Yelp's carried and its study's choice) builds one
    valid run holding both, named after their files; a recipe's own name is kept."""
    recipes = ["configs/yelp/sasrec-from-beauty.yaml", "configs/yelp/tuned/sasrec.yaml",
               "configs/yelp/ease.yaml"]
    cfgs = [yaml.safe_load((_ROOT / r).read_text()) for r in recipes]
    merged = bench.compare_config(cfgs, recipes)
    cfg = ExperimentConfig.model_validate(merged)
    assert [m.label for m in cfg.models] == ["sasrec-from-beauty", "sasrec", "ease"]
    assert cfg.models[0].dropout != cfg.models[1].dropout
    assert "name" not in cfgs[0]["models"][0]  # the recipes read are not changed
    cfgs[1]["models"][0]["name"] = "study"
    assert [m["name"] for m in bench.compare_config(cfgs, recipes)["models"][:2]] == [
        "sasrec-from-beauty", "study"]
    other = yaml.safe_load((_ROOT / "configs/ml-1m/ease.yaml").read_text())
    with pytest.raises(SystemExit, match="differ in dataset or protocol"):
        bench.compare_config([cfgs[0], other], recipes[:2])


def test_sigterm_stops_the_genrec_child_with_the_benchmark(tmp_path: Path) -> None:
    """``kill`` of a running study must not leave its ``genrec`` child running unseen (it once
    went on for 30 minutes and slowed every measurement beside it): ``main`` installs
    ``_stop`` for SIGTERM, and ``subprocess.run`` kills the child it waits on as it unwinds."""
    pid_file = tmp_path / "child.pid"
    child_code = ("import os, pathlib, time; "
                  f"pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid())); "
                  "time.sleep(120)")
    driver = (
        "import importlib.util, signal, subprocess, sys\n"
        f"spec = importlib.util.spec_from_file_location('tb', {str(_ROOT / 'benchmarks' / 'tuned.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "signal.signal(signal.SIGTERM, m._stop)\n"
        f"subprocess.run([sys.executable, '-c', {child_code!r}], check=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", driver])
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()):
        assert proc.poll() is None, "the driver exited before starting its child"
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    child = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left running
        os.kill(child, 0)


def test_seed_runs_of_a_recipe_without_a_study(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # The committed ML-1M SASRec runs (one process per seed, each resumed across sessions),
    # kept as a recipe without a study: the mean and t-interval of the seeds, the epochs'
    # own seconds (fit_seconds of a resumed run is its last process only), and a table row
    # naming the recipe.
    from genrec.evaluation.stats import t_interval

    results = tmp_path / "benchmarks" / "results" / "ml-1m"
    results.mkdir(parents=True)
    (tmp_path / "configs" / "ml-1m").mkdir(parents=True)
    (tmp_path / "configs" / "ml-1m" / "sasrec.yaml").write_text(
        (_ROOT / "configs" / "ml-1m" / "sasrec.yaml").read_text())
    runs = []
    for seed in (42, 43):
        src = _ROOT / "benchmarks" / "results" / "ml-1m" / f"sasrec-cpu-seed{seed}.json"
        (results / src.name).write_text(src.read_text())
        runs.append(json.loads(src.read_text()))
    paths = [f"benchmarks/results/ml-1m/sasrec-cpu-seed{s}.json" for s in (42, 43)]
    monkeypatch.setattr(bench, "ROOT", tmp_path)
    doc = bench.seed_runs("ml-1m", "tuned-seeds-sasrec", paths, recipe="configs/ml-1m/sasrec.yaml")
    assert doc["study"] is None and doc["recipe"] == "configs/ml-1m/sasrec.yaml"
    row = doc["results"][0]
    hr = [r["results"][0]["test"]["recall@10"] for r in runs]
    assert row["seeds"] == [42, 43]
    assert row["test"]["recall@10"] == pytest.approx(sum(hr) / 2, abs=1e-6)
    assert row["test_ci95"]["recall@10"] == pytest.approx(t_interval(hr), abs=1e-6)
    history = runs[1]["results"][0]["training"]["history"]
    assert row["per_seed"][1]["epochs_run"] == 155
    assert row["per_seed"][1]["epoch_seconds"] == pytest.approx(
        sum(h["seconds"] for h in history), abs=0.1)
    assert row["per_seed"][1]["epoch_seconds"] > 10 * row["per_seed"][1]["fit_seconds"]
    written = json.loads((results / "tuned-seeds-sasrec.json").read_text())
    assert written["results"] == json.loads(json.dumps(doc["results"]))
    assert "--recipe configs/ml-1m/sasrec.yaml --seed-runs" in written["benchmark"]["command"]

    rows = bench.table("ml-1m").splitlines()[2:]
    assert len(rows) == 1 and rows[0].startswith("| sasrec (tuned-seeds-sasrec) | not tuned: "
                                                 "`configs/ml-1m/sasrec.yaml` |")
    assert f"{row['test']['ndcg@10']:.4f} ± {row['test_std']['ndcg@10']:.4f}" in rows[0]

    # Runs of another experiment than the first (here: another dropout) are refused, and so
    # are a shared seed and a file name that would read as a study.
    other = json.loads(json.dumps(runs[1]))
    other["results"][0]["params"]["dropout"] = 0.5
    (results / "other.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="only the seed may differ"):
        bench.seed_runs("ml-1m", "tuned-seeds-sasrec",
                        [paths[0], "benchmarks/results/ml-1m/other.json"],
                        recipe="configs/ml-1m/sasrec.yaml")
    with pytest.raises(SystemExit, match="share a seed"):
        bench.seed_runs("ml-1m", "tuned-seeds-sasrec", [paths[0], paths[0]],
                        recipe="configs/ml-1m/sasrec.yaml")
    with pytest.raises(SystemExit, match="must start with tuned-seeds"):
        bench.seed_runs("ml-1m", "tuned-sasrec", paths, recipe="configs/ml-1m/sasrec.yaml")


def test_table_does_not_repeat_seeds_kept_in_a_paired_file() -> None:
    # The committed ML-1M files: SASRec's 3 seeds as a recipe without a study, and its seed
    # 44 (the one whose saved model survived) paired with EASE in tuned-paired-sasrec.json.
    # That paired row is one of the seeds already listed, so it is not a row of its own.
    rows = bench.table("ml-1m").splitlines()[2:]
    names = [r.split(" | ")[0] for r in rows]
    assert names[0] == "| sasrec (tuned-seeds-sasrec)"
    assert " | 3 | " in rows[0] and "not tuned: `configs/ml-1m/sasrec.yaml`" in rows[0]
    assert sum(n.startswith("| sasrec") for n in names) == 1
    paired = json.loads((_ROOT / "benchmarks/results/ml-1m/tuned-paired-sasrec.json")
                        .read_text())
    assert paired["models"]["sasrec"]["seeds"] == [44]
    assert sum(n.startswith("| ease") for n in names) == 1
