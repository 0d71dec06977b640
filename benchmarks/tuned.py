"""Tune one model with ``genrec tune``, run the chosen recipe over several seeds, keep both.

Usage::

    GENREC_DATA_DIR=../shared/datasets GENREC_THREADS=1 python benchmarks/tuned.py \
        --space configs/tune/bprmf.yaml --dataset ml-100k --recipe configs/ml-100k/bprmf.yaml

Steps (each a ``genrec`` command, so the benchmark is what a user would run):

1. ``genrec tune SPACE --output runs/tuned/<dataset>/<model>`` (the study is stored there, so
   a killed benchmark continues its study when rerun);
2. ``genrec run <that folder>/best.yaml --set seeds=N`` (the chosen configuration, tested
   with protocol seeds 42.. on the same split: mean, std, t-interval and bootstrap interval);
3. writes ``benchmarks/results/<dataset>/tuned-<model>.json`` (the study: every trial, the
   budget and the choice; the seeded results; the command and the machine) and, with
   ``--recipe``, the chosen recipe with its search space and ``seeds``, headed by a comment
   naming the study it came from.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from genrec._io import atomic_write_text
from genrec.config import apply_overrides
from genrec.evaluation.stats import pairwise_significance, t_interval
from genrec.runs.experiment import open_saved_model
from genrec.runs.seeds import seed_row

PAIRED_METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")
REPRODUCE_TOL = 1e-6
"""Largest difference allowed between a run's recorded test metric and its re-evaluation
(both rounded to 6 decimals)."""
SAME_RESULT_TOL = 1e-4
"""``--table``: test Recall@10 and NDCG@10 of one model kind this close are one result run
twice (Sports' ItemKNN gives NDCG@10 0.026665 or 0.026675 as its score ties break)."""


def _genrec(*args: str, quiet: bool = False) -> None:
    """Run a genrec command. Without ``quiet`` it logs every trial, epoch and evaluation (what
    a study running for hours in the background needs in its log); with it, warnings only."""
    subprocess.run([sys.executable, "-m", "genrec.cli", *args, *(["--quiet"] if quiet else [])],
                   check=True, cwd=ROOT)


def _stop(signum: int, _frame: Any) -> None:
    """SIGTERM (``kill``, ``pkill``) unwinds like Ctrl-C, so ``subprocess.run`` kills the
    ``genrec`` child it is waiting on instead of leaving it running without its parent."""
    raise SystemExit(128 + signum)


def main() -> None:
    """Tune, run the seeds, write the JSON (and the recipe)."""
    signal.signal(signal.SIGTERM, _stop)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", help="a search-space config (configs/tune/*.yaml)")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--table", action="store_true",
                    help="print the BENCHMARKS.md table of the dataset's tuned-*.json instead")
    ap.add_argument("--compare", nargs="+", metavar="RECIPE",
                    help="instead: run these tuned recipes together (one split, same seeds) "
                         "and keep their paired tests in tuned-compare.json (two recipes of "
                         "one kind are named after their files)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--skip-seeds", action="store_true",
                    help="tune and write the recipe only; a later --compare of the recipes "
                         "runs the seeds once for all of them and fills in each tuned JSON")
    ap.add_argument("--name", help="output file stem (default tuned-<model>)")
    ap.add_argument("--recipe", help="also write the chosen recipe to this config path")
    ap.add_argument("--note", default="", help="how the run was made (load, concurrency)")
    ap.add_argument("--seed-runs", nargs="+", metavar="RESULTS_JSON",
                    help="instead: fill tuned-<--name>.json's seeded row from separate one-seed "
                         "`genrec run` results of its recipe (seeds run side by side; no "
                         "per-user bootstrap or paired tests then); with --recipe and a --name "
                         "starting tuned-seeds, a recipe run without a study (kept as that file)")
    ap.add_argument("--paired-runs", nargs="+", metavar="LABEL=RUN[,RUN...]",
                    help="instead: reload the saved models of separate one-seed runs (one "
                         "comma-separated list of run folders per model), re-evaluate them on "
                         "their test users (the recorded metrics must reproduce) and keep the "
                         "paired tests between the models on the seed-averaged per-user metrics "
                         "in <--name>.json")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="config override for the search, as for genrec tune --set")
    ap.add_argument("--quiet", action="store_true",
                    help="the genrec commands log warnings only (default: every trial and epoch)")
    args = ap.parse_args()
    if args.table:
        print(table(args.dataset))
        return
    if args.paired_runs:
        if not args.name:
            ap.error("--paired-runs needs --name (the output file stem)")
        paired_runs(args.dataset, args.name, args.paired_runs, args.note)
        return
    if args.seed_runs:
        if not args.name:
            ap.error("--seed-runs needs --name (the tuned JSON's stem, e.g. tuned-lightgcn)")
        seed_runs(args.dataset, args.name, args.seed_runs, recipe=args.recipe)
        return
    if args.compare:
        compare(args.dataset, args.compare, args.seeds, args.note, args.name or "tuned-compare",
                quiet=args.quiet)
        return
    if not args.space:
        ap.error("give --space (or --table or --compare)")
    space_cfg = yaml.safe_load(Path(args.space).read_text())
    model = space_cfg["models"][0]["kind"]
    name = args.name or f"tuned-{model}"
    out = ROOT / "runs" / "tuned" / args.dataset / name
    sets = [f"dataset.name={args.dataset}", *args.sets]
    _genrec("tune", args.space, "--output", str(out), *[f"--set={s}" for s in sets],
            quiet=args.quiet)
    tuned = json.loads((out / "results.json").read_text())
    if args.skip_seeds:
        # The seeds come later from --compare (one run of every recipe on the same seeds,
        # which also gives the paired tests); until then the study stands alone.
        seeded = {"protocol": tuned["protocol"], "protocol_text": tuned["protocol_text"],
                  "dataset": tuned["dataset"], "results": [], "environment": tuned["environment"]}
    else:
        _genrec("run", str(out / "best.yaml"), "--output", str(out / "seeds"),
                f"--set=seeds={args.seeds}", "--set=save_models=false",
                "--set=checkpoints=false", quiet=args.quiet)
        seeded = json.loads((out / "seeds" / "results.json").read_text())

    t = tuned["tuning"]
    study = {k: t[k] for k in ("metric", "sampler", "seed", "pruner", "workers",
                               "timeout_minutes", "space", "n_trials", "n_failed", "n_pruned",
                               "wall_seconds", "best_trial", "best_params", "best_valid")}
    study["trials"] = [{k: r[k] for k in ("number", "state", "params", "valid", "fit_seconds",
                                          "epochs_run", "best_epoch", "pruned_at_round")
                        if k in r} for r in t["trials"]]
    command = " ".join(["python benchmarks/tuned.py", "--space", args.space, "--dataset",
                        args.dataset, "--seeds", str(args.seeds),
                        *(["--skip-seeds"] if args.skip_seeds else []),
                        *(["--recipe", args.recipe] if args.recipe else []),
                        *[f"--set {s}" for s in args.sets]])
    doc = {"model": model, "study": study, "tuned_single_run": tuned["results"][0],
           "protocol": seeded["protocol"], "protocol_text": seeded["protocol_text"],
           "dataset": seeded["dataset"], "results": seeded["results"],
           "environment": seeded["environment"],
           "benchmark": {"command": command, "note": args.note, "cpus": os.cpu_count(),
                         "processor": platform.machine(),
                         "gpu": seeded["environment"].get("gpu"),
                         "load_average_at_end": os.getloadavg()}}
    dest = ROOT / "benchmarks" / "results" / args.dataset / f"{name}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dest, json.dumps(doc, indent=2) + "\n")

    if args.recipe:
        recipe = recipe_config(Path(args.space), sets, t["best_params"], args.seeds,
                               f"runs/{args.dataset}/{model}")
        header = recipe_header(model, args.dataset, f"{args.space} "
                               + " ".join(f"--set {x}" for x in sets), t,
                               None if args.skip_seeds else args.seeds,
                               str(dest.relative_to(ROOT)), command)
        path = ROOT / args.recipe
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, header + yaml.safe_dump(recipe, sort_keys=False))

    if args.skip_seeds:
        print(f"{model} on {args.dataset}: {t['n_trials']} trials ({t['n_pruned']} pruned) in "
              f"{t['wall_seconds']:.0f}s; best valid {t['best_valid']:.4f} -> {dest}")
        return
    r = seeded["results"][0]
    print(f"{model} on {args.dataset}: {t['n_trials']} trials ({t['n_pruned']} pruned) in "
          f"{t['wall_seconds']:.0f}s; {args.seeds} seeds: test ndcg@10 "
          f"{r['test']['ndcg@10']:.4f} ± {r['test_std']['ndcg@10']:.4f}, recall@10 "
          f"{r['test']['recall@10']:.4f} -> {dest}")


def recipe_header(model: str, dataset: str, tune_args: str, study: dict, seeds: int | None,
                  results: str, command: str) -> str:
    """The comment heading a recipe written by ``--recipe``: the study's choice, and whether
    its ``seeds`` ran (``seeds=None``: ``--skip-seeds``, a later ``--compare`` or
    ``--seed-runs`` runs them)."""
    params = ", ".join(f"{k.removeprefix('models.0.')}={v:.4g}" if isinstance(v, float)
                       else f"{k.removeprefix('models.0.')}={v}"
                       for k, v in study["best_params"].items())
    ran = ("Study results (its seeds not run: --skip-seeds)" if seeds is None
           else f"Study and {seeds}-seed results")
    return (f"# {model} on {dataset}: the recipe chosen by `genrec tune {tune_args}`\n"
            f"# (trial {study['best_trial']} of {study['n_trials']}, {study['n_pruned']} pruned, "
            f"{study['sampler']} sampler, {study['pruner']} pruner, valid "
            f"{study['metric']}={study['best_valid']:.4f}): {params}.\n"
            f"# {ran}: {results}; reproduce with {command}\n"
            "# genrec run this file: the recipe over its seeds; genrec tune this file: "
            "the search again (the tune section).\n")


def recipe_config(space: Path, sets: list[str], best_params: dict, seeds: int,
                  output: str) -> dict:
    """The search config as written, with the search's ``--set`` overrides (the dataset, and
    e.g. ``models.0.item_text=init``) and the chosen values applied: a short recipe that keeps
    the search it came from (its tune section) next to the choice."""
    recipe = apply_overrides(yaml.safe_load(space.read_text()), sets)
    for key, value in best_params.items():
        *path, last = key.split(".")
        node = recipe
        for part in path:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        node[last] = value
    recipe["seeds"] = seeds
    recipe["output"] = output
    return recipe


def compare_config(cfgs: list[dict[str, Any]], recipes: list[str]) -> dict[str, Any]:
    """One run's config from the recipes ``cfgs`` (read from ``recipes``): their data and
    protocol (which must agree) and the first model of each. Two recipes of one kind get
    distinct names, their files' stems, unless they name themselves."""
    merged = {k: v for k, v in cfgs[0].items() if k != "tune"}
    for c in cfgs[1:]:
        if (c["dataset"], c["protocol"]) != (merged["dataset"], merged["protocol"]):
            raise SystemExit("--compare: the recipes differ in dataset or protocol")
    merged["models"] = [dict(c["models"][0]) for c in cfgs]
    kinds = [m["kind"] for m in merged["models"]]
    for m, recipe in zip(merged["models"], recipes, strict=True):
        if kinds.count(m["kind"]) > 1 and not m.get("name"):
            m["name"] = Path(recipe).stem
    return merged


def compare(dataset: str, recipes: list[str], seeds: int, note: str,
            name: str = "tuned-compare", *, quiet: bool = False) -> None:
    """Run the models of ``recipes`` (same data and protocol) in one ``genrec run`` with
    ``seeds`` seeds: the paired tests between them on the same test users and seeds, kept in
    ``<name>.json``. Deterministic models (EASE, ItemKNN) give the same per-user metrics in
    every run, so two compare runs that share one of them are paired through it."""
    cfgs = [yaml.safe_load((ROOT / r).read_text()) for r in recipes]
    out = ROOT / "runs" / "tuned" / dataset / name
    merged = compare_config(cfgs, recipes) | {"output": str(out), "seeds": seeds,
                                              "save_models": False, "checkpoints": False}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "recipes.yaml", yaml.safe_dump(merged, sort_keys=False))
    _genrec("run", str(out / "recipes.yaml"), quiet=quiet)
    results = json.loads((out / "results.json").read_text())
    results["benchmark"] = {
        "command": " ".join(["python benchmarks/tuned.py --dataset", dataset, "--seeds",
                             str(seeds), "--name", name, "--compare", *recipes]),
        "note": note, "cpus": os.cpu_count(), "processor": platform.machine(),
        "load_average_at_end": os.getloadavg()}
    dest = ROOT / "benchmarks" / "results" / dataset / f"{name}.json"
    atomic_write_text(dest, json.dumps(results, indent=2) + "\n")
    # A study tuned with --skip-seeds gets its seeded results from this run (the same
    # recipe, split and seeds a per-model run would use).
    for row in results["results"]:
        tuned_json = dest.with_name(f"tuned-{row['model']}.json")
        if tuned_json.exists():
            doc = json.loads(tuned_json.read_text())
            if not doc["results"]:
                doc["results"] = [row]
                doc["environment"] = results["environment"]
                doc["benchmark"]["seeds_from"] = str(dest.relative_to(ROOT))
                atomic_write_text(tuned_json, json.dumps(doc, indent=2) + "\n")
    print(f"paired tests of {len(cfgs)} tuned recipes on {dataset} -> {dest}")


def seed_runs(dataset: str, name: str, paths: list[str], *, recipe: str | None = None) -> dict:
    """The seeded row of ``<name>.json`` from one-seed runs of its recipe: mean, std and
    t-interval over the seeds, as ``genrec run --set seeds=N`` computes them.

    With ``recipe`` (and ``name`` starting ``tuned-seeds``) the file is written anew for a
    recipe run without a study (e.g. a GPU recipe trained to patience on CPU, one process per
    seed): it names the recipe, and ``study`` is null. The runs must be of that recipe's model
    kind on one dataset, with one protocol apart from the seed and the same model parameters.
    """
    dest = ROOT / "benchmarks" / "results" / dataset / f"{name}.json"
    if recipe is not None and not name.startswith("tuned-seeds"):
        raise SystemExit("--seed-runs --recipe writes a file without a study: its --name must "
                         "start with tuned-seeds (e.g. tuned-seeds-sasrec)")
    if recipe is None:
        doc = json.loads(dest.read_text())
    else:
        kind = yaml.safe_load((ROOT / recipe).read_text())["models"][0]["kind"]
        doc = {"model": kind, "study": None, "recipe": recipe}
    runs, docs = [], []
    for path in paths:
        res = json.loads((ROOT / path).read_text())
        r = res["results"][0]
        if r["model"] != doc["model"]:
            raise SystemExit(f"{path}: a {r['model']} run, not {doc['model']}")
        docs.append(res)
        run = {"seed": res["protocol"]["seed"], "valid": r["valid"], "test": r["test"],
               "fit_seconds": r["fit_seconds"], "eval_seconds": r["eval_seconds"]}
        if r.get("training", {}).get("history"):
            # A run resumed across processes records only its last process in fit_seconds;
            # the epochs' own seconds add up over all of them.
            t = r["training"]
            run |= {"epochs_run": t["epochs_run"], "best_epoch": t["best_epoch"],
                    "epoch_seconds": round(sum(h["seconds"] for h in t["history"]), 1)}
        runs.append(run)
    if len({r["seed"] for r in runs}) != len(runs):
        raise SystemExit("--seed-runs: two runs share a seed")
    if recipe is not None:
        # No study file vouches for the runs here: they must be one experiment but the seed.
        def same(res: dict) -> tuple:
            return (res["dataset"]["name"], res["results"][0]["params"],
                    {k: v for k, v in res["protocol"].items() if k != "seed"})
        for path, res in zip(paths[1:], docs[1:], strict=True):
            if same(res) != same(docs[0]):
                raise SystemExit(f"--seed-runs: {path} differs from {paths[0]} in dataset, "
                                 "protocol or model parameters (only the seed may differ)")
        if docs[0]["dataset"]["name"] != dataset:
            raise SystemExit(f"--seed-runs: the runs are on {docs[0]['dataset']['name']}, "
                             f"not {dataset}")
        first = min(docs, key=lambda d: d["protocol"]["seed"])
        doc |= {"protocol": first["protocol"], "protocol_text": first["protocol_text"],
                "dataset": first["dataset"], "environment": first["environment"],
                "benchmark": {"command": " ".join(["python benchmarks/tuned.py --dataset",
                                                   dataset, "--name", name, "--recipe", recipe,
                                                   "--seed-runs", *paths]),
                              "cpus": os.cpu_count(), "processor": platform.machine()}}
    runs.sort(key=lambda r: r["seed"])
    # The glue's aggregation (means, std, t-interval); no per-user bootstrap from here.
    doc["results"] = [seed_row(doc["model"], runs) | {"test_bootstrap_ci95": None}]
    doc["benchmark"]["seeds_from"] = paths
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dest, json.dumps(doc, indent=2) + "\n")
    r = doc["results"][0]
    print(f"{doc['model']} on {dataset}: {len(runs)} seeds, test ndcg@10 {r['test']['ndcg@10']:.4f}"
          f" ± {r['test_std']['ndcg@10']:.4f}, recall@10 {r['test']['recall@10']:.4f} -> {dest}")
    return doc


def _fingerprint(data) -> str:
    """A hash of the test set: users' histories and targets, in order."""
    ts = data.test_set
    h = hashlib.sha256()
    for a in (ts.histories.users, ts.histories.indptr, ts.histories.items, ts.target_indptr,
              ts.target_items):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def rerun_test(run: Path) -> dict:
    """A saved one-model run re-evaluated on its own test set: the seed, the recorded and
    re-computed test metrics (they must agree) and the per-user arrays."""
    try:  # one saved model per run, with its results.json row
        saved = open_saved_model(run)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"{e}; --paired-runs takes one-model runs with their saved "
                         "model") from None
    cfg, data, kind = saved.config, saved.data, saved.name
    res = saved.evaluate_test()
    test = {k: round(float(v), 6) for k, v in res.summary().items()}
    try:
        saved.check_reproduces(test, PAIRED_METRICS, REPRODUCE_TOL)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    return {"run": str(run), "model": kind, "seed": cfg.protocol.seed,
            "protocol": cfg.protocol.model_dump(mode="json", exclude={"seed"}),
            "protocol_text": cfg.protocol.describe(), "dataset": cfg.dataset.name,
            "test_set": _fingerprint(data), "test": {k: test[k] for k in PAIRED_METRICS},
            "fit_seconds": saved.record["fit_seconds"],  # type: ignore[index]  # checked above
            "_per_user": {k: np.asarray(res.per_user[k], dtype=np.float64)
                          for k in PAIRED_METRICS}}


def paired_runs(dataset: str, name: str, specs: list[str], note: str,
                dest: Path | None = None) -> dict:
    """Paired tests between models whose seeds ran as separate ``genrec run``s: every saved
    model is re-evaluated on the same test users, its per-user metrics averaged over its
    seeds, and each pair of models tested (t and Wilcoxon, Holm within each metric), as
    ``--compare`` does for seeds run together. Writes ``benchmarks/results/<dataset>/<name>.json``."""
    models: dict[str, dict] = {}
    per_model: dict[str, dict[str, np.ndarray]] = {}
    first = None
    for spec in specs:
        label, eq, paths = spec.partition("=")
        if not eq or not paths:
            raise SystemExit(f"--paired-runs {spec!r}: expected LABEL=RUN[,RUN...]")
        runs = [rerun_test(ROOT / p) for p in paths.split(",")]
        for r in runs:
            first = first or r
            if (r["dataset"], r["protocol"], r["test_set"]) != (
                    dataset, first["protocol"], first["test_set"]):
                raise SystemExit(f"{r['run']}: another dataset, protocol or test set than "
                                 f"{first['run']}")
        seeds = [r["seed"] for r in runs]
        if len(set(seeds)) != len(seeds):
            raise SystemExit(f"--paired-runs {label}: two runs share a seed")
        per_model[label] = {k: np.mean([r["_per_user"][k] for r in runs], axis=0)
                            for k in PAIRED_METRICS}
        models[label] = {
            "model": runs[0]["model"], "seeds": seeds,
            "runs": [{k: v for k, v in r.items() if not k.startswith("_") and k not in
                      ("protocol", "protocol_text", "dataset")} for r in runs],
            "test": {k: round(float(np.mean([r["test"][k] for r in runs])), 6)
                     for k in PAIRED_METRICS},
            "test_std": {k: round(float(np.std([r["test"][k] for r in runs], ddof=1)), 6)
                         if len(runs) > 1 else 0.0 for k in PAIRED_METRICS},
            "test_ci95": {k: [round(x, 6) for x in t_interval([r["test"][k] for r in runs])]
                          for k in PAIRED_METRICS}}
    assert first is not None
    table = pairwise_significance(per_model, list(PAIRED_METRICS))
    doc = {"dataset": dataset, "protocol_text": first["protocol_text"],
           "test_users": len(next(iter(per_model.values()))["recall@10"]),
           "models": models,
           "significance": [{k: (round(v, 6) if isinstance(v, float) else v)
                             for k, v in r.items()} for r in table.to_dicts()],
           "benchmark": {"command": " ".join(["python benchmarks/tuned.py --dataset", dataset,
                                              "--name", name, "--paired-runs", *specs]),
                         "note": note, "cpus": os.cpu_count(),
                         "processor": platform.machine()}}
    dest = dest or ROOT / "benchmarks" / "results" / dataset / f"{name}.json"
    atomic_write_text(dest, json.dumps(doc, indent=2) + "\n")
    print(paired_markdown(doc))
    print(f"-> {dest}")
    return doc


def paired_markdown(doc: dict) -> str:
    """The pairs of a ``--paired-runs`` document as a Markdown table."""
    lines = ["| metric | A | B | mean A | mean B | A − B | t p_holm | Wilcoxon p_holm |",
             "|---|---|---|---|---|---|---|---|"]
    for r in doc["significance"]:
        lines.append(f"| {r['metric']} | {r['model_a']} | {r['model_b']} | {r['mean_a']:.4f} | "
                     f"{r['mean_b']:.4f} | {r['diff']:+.4f} | {r['t_p_holm']:.2g} | "
                     f"{r['w_p_holm']:.2g} |")
    return "\n".join(lines)


def _seeded_cells(r: dict[str, Any]) -> str:
    """The seeds, test Recall@10 / NDCG@10 (mean ± std [t-interval]) and bootstrap cells of
    one seeded result row."""
    def cell(m: str) -> str:
        lo, hi = r["test_ci95"][m]
        return f"{r['test'][m]:.4f} ± {r['test_std'][m]:.4f} [{lo:.4f}, {hi:.4f}]"

    boot = r.get("test_bootstrap_ci95")
    return (f"{len(r['seeds'])} | {cell('recall@10')} | {cell('ndcg@10')} | "
            + (f"[{boot['ndcg@10'][0]:.4f}, {boot['ndcg@10'][1]:.4f}] |" if boot
               else "– (separate seed runs) |"))


def _same_result(kind: str, test: dict[str, float],
                 seeded: list[tuple[str, dict[str, float]]]) -> bool:
    """Whether a row of this model kind with these test metrics is already listed: same
    Recall@10 and NDCG@10 within ``SAME_RESULT_TOL`` (a deterministic re-run whose ties broke
    another way, or the same seeds kept in two files)."""
    return any(k == kind and all(abs(t[m] - test[m]) <= SAME_RESULT_TOL
                                 for m in ("recall@10", "ndcg@10"))
               for k, t in seeded)


def table(dataset: str) -> str:
    """Markdown rows of ``dataset``'s tuned and carried recipes, best test NDCG@10 first.

    Studies are the ``tuned-*.json`` files; a study kept without seeds (``--skip-seeds``, its
    recipe not yet run by a ``--compare``) goes last. A recipe seeded by a ``--compare`` run
    (``tuned-compare*.json``) that is not a study's own (``--recipe``), e.g. one carried over
    from another dataset, gets a row naming its recipe file and the compare run, unless it
    repeats a seeded row of its model; so does a recipe seeded without a study by separate
    one-seed runs (``tuned-seeds*.json``). Seeds
    kept only in a paired file of separate runs (``tuned-paired-*.json``) get a row naming the
    file and the run folders, unless the same result is already listed."""
    folder = ROOT / "benchmarks" / "results" / dataset
    rows: list[tuple[float, str]] = []
    studied, study_recipes = set(), set()
    seeded: list[tuple[str, dict[str, float]]] = []  # (kind, test metrics) of rows with seeds
    seed_tests: list[tuple[str, int, dict[str, float]]] = []  # (kind, seed, test) of their seeds

    def listed(kind: str, r: dict[str, Any]) -> None:
        """Record a listed seeded row (its mean and its seeds), for the repeats below."""
        seeded.append((kind, r["test"]))
        seed_tests.extend((kind, x["seed"], x["test"]) for x in r.get("per_seed", []))

    def recipe_row(r: dict[str, Any], label: str, source: str) -> tuple[float, str]:
        """The row of a recipe seeded outside a study: its file, and where its seeds are."""
        return (-r["test"]["ndcg@10"], f"| {label} | {source} | – | – | "
                f"{r['valid']['ndcg@10']:.4f} (mean) | " + _seeded_cells(r))

    for p in sorted(folder.glob("tuned-*.json")):
        if p.stem.startswith(("tuned-compare", "tuned-paired", "tuned-seeds")):
            continue
        d = json.loads(p.read_text())
        studied.add(d["model"])
        command = d.get("benchmark", {}).get("command", "").split()
        if "--recipe" in command:
            study_recipes.add(command[command.index("--recipe") + 1])
        st, r = d["study"], (d["results"] or [None])[0]
        chosen = ", ".join(f"{k.removeprefix('models.0.')}={v:.3g}" if isinstance(v, float)
                           else f"{k.removeprefix('models.0.')}={v}"
                           for k, v in st["best_params"].items())
        label = d["model"] + ("" if p.stem == f"tuned-{d['model']}" else f" ({p.stem})")
        study = (f"| {label} | {chosen} | {st['n_trials']} ({st['n_pruned']}) | "
                 f"{st['wall_seconds'] / 60:.1f} | {st['best_valid']:.4f} | ")
        if r is None:
            rows.append((1.0, study + "– | – (study only) | – | – |"))
        else:
            listed(d["model"], r)
            rows.append((-r["test"]["ndcg@10"], study + _seeded_cells(r)))
    for p in sorted(folder.glob("tuned-compare*.json")):
        d = json.loads(p.read_text())
        # the run's rows are in the order of its recipes (compare_config)
        recipes = d["benchmark"]["command"].split("--compare", 1)[1].split()
        for r, recipe in zip(d["results"], recipes, strict=True):
            # A study's own recipe (its --recipe file) has its seeds in the study's row. Any
            # other recipe of a studied model (carried from another dataset, another width)
            # is listed unless it repeats a seeded row, so a study still without seeds does
            # not hide the seeded recipes of its model.
            if recipe in study_recipes:
                continue
            kind = yaml.safe_load((ROOT / recipe).read_text())["models"][0]["kind"]
            if kind in studied and _same_result(kind, r["test"], seeded):
                continue
            listed(kind, r)
            rows.append(recipe_row(r, f"{r['model']} ({p.stem})", f"not tuned here: `{recipe}`"))
    # A recipe run over seeds without a study (--seed-runs --recipe): its file names the
    # recipe; listed unless it repeats a seeded row of its model.
    for p in sorted(folder.glob("tuned-seeds*.json")):
        d = json.loads(p.read_text())
        r = d["results"][0]
        if _same_result(d["model"], r["test"], seeded):
            continue
        listed(d["model"], r)
        rows.append(recipe_row(r, f"{d['model']} ({p.stem})", f"not tuned: `{d['recipe']}`"))
    # Seeds that exist only in a paired file of separate runs (--paired-runs): the file does
    # not record which recipe its runs came from, so such a row names the file and its run
    # folders and is never merged into a study's row. A result already listed (same model
    # kind, test Recall@10 and NDCG@10 within SAME_RESULT_TOL: a deterministic baseline
    # re-run, whose ties may break another way) is not repeated, nor are runs listed by an
    # earlier file, nor runs that are some of the seeds of a listed row.
    listed_runs = set()
    paired = [(p.stem, label, m) for p in sorted(folder.glob("tuned-paired-*.json"))
              for label, m in json.loads(p.read_text())["models"].items()]
    # a model's own file (tuned-paired-<label>) names its row before the files of others
    paired.sort(key=lambda e: e[0] != f"tuned-paired-{e[1]}")
    for stem, label, m in paired:
        runs = tuple(Path(r["run"]).name for r in m["runs"])
        # runs that are some of the seeds of a listed row (the same seed and test metrics),
        # e.g. the one seed whose saved model was left to pair with a baseline, add nothing
        subset = all(_same_result(m["model"], x["test"],
                                  [(k, t) for k, s, t in seed_tests if s == x["seed"]])
                     for x in m["runs"])
        if _same_result(m["model"], m["test"], seeded) or runs in listed_runs or subset:
            continue
        listed_runs.add(runs)
        name = m["model"] + ("" if label == m["model"] else f" {label}")
        rows.append((-m["test"]["ndcg@10"],
                     f"| {name} ({stem}) | separate runs: {', '.join(runs)} | – | – | – | "
                     + _seeded_cells(m)))
    rows.sort(key=lambda kr: kr[0])
    lines = [("| model | chosen on valid | trials (pruned) | study min | best valid N@10 | "
             "seeds | R@10 mean ± std [95% t-interval] | N@10 mean ± std [95% t-interval] | "
             "N@10 bootstrap 95% (users) |"), "|---" * 9 + "|"]
    return "\n".join(lines + [line for _, line in rows])


if __name__ == "__main__":
    main()
