"""Why the collaborative-filtering models trail EASE: evidence on one split.

Two measurements on the tuned recipes of a dataset (``configs/<dataset>/tuned/*.yaml``, one
split, the recipes' protocol, seed 42):

1. **Where the gap is**: every recipe is fitted with the glue (``fit_and_evaluate``) and its
   per-user test Recall@10 / NDCG@10 is broken down by the target item's training popularity,
   by the user's history length, and by whether the target was ever consumed together with
   the user's *last* item by another training user (the item-to-item signal EASE's weight
   matrix holds directly).
2. **Is it the rank?** EASE's item-item matrix ``B`` is replaced by its best rank-``r``
   approximation (``torch.svd_lowrank``; ``U_r S_r V_rᵀ``), which is a factor model of width
   ``r`` scored exactly as EASE is, and evaluated for several ``r``: if rank 64-256 (the CF
   models' widths) already loses most of EASE's lead, the CF models' deficit is a capacity
   limit of low-rank scoring on this data, not a training failure.

3. **Does width close it?** (``--width-runs``) The same breakdown for saved ``genrec run``
   folders of one CF recipe at larger widths (``--set models.0.dim=512``): their models are
   reloaded, re-evaluated on the run's own split (the recorded test metrics must be
   reproduced) and set beside EASE truncated to the same rank from ``cf-gap.json``.

Usage::

    GENREC_DATA_DIR=../shared/datasets GENREC_THREADS=2 python benchmarks/cf_gap.py \\
        --dataset amazon-beauty --ranks 32 64 128 256 512 1024 2048
    GENREC_DATA_DIR=../shared/datasets python benchmarks/cf_gap.py --dataset amazon-beauty \\
        --width-runs runs/bprmf-wide/dim512 runs/bprmf-wide/dim1024

Writes ``benchmarks/results/<dataset>/cf-gap.json`` (``cf-width.json`` with ``--width-runs``,
or ``<--name>.json``) and prints the Markdown tables.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from genrec._io import atomic_write_text
from genrec.config import load_config
from genrec.evaluation.evaluator import evaluate
from genrec.runs.experiment import environment, fit_and_evaluate, open_saved_model, prepare

METRICS = ("recall@10", "ndcg@10")
POP_EDGES = (0, 5, 20, 50)          # target's training count: <=5, 6-20, 21-50, >50
LEN_EDGES = (0, 4, 8)               # history length: <=4, 5-8, >8


def _groups(data: Any, pop_edges: tuple[int, ...] = POP_EDGES,
            len_edges: tuple[int, ...] = LEN_EDGES) -> dict[str, dict[str, np.ndarray]]:
    """Boolean user masks of the test set, by target popularity, history length and
    co-occurrence of the target with the last history item in training."""
    ts = data.test_set
    h = ts.histories
    target = ts.target_items[ts.target_indptr[:-1]]
    last = h.items[h.indptr[1:] - 1]
    counts = data.split.train.item_counts()
    pop = counts[target]
    lengths = h.lengths
    train = data.split.train
    x = sp.csr_matrix((np.ones(len(train.users), dtype=np.float32),
                       (train.users, train.items)),
                      shape=(int(train.users.max()) + 1, h.n_items))
    x.data[:] = 1.0
    co = (x.T @ x).tocsr()
    together = np.asarray(co[last, target]).ravel() > 0

    def bucket(values: np.ndarray, edges: tuple[int, ...], unit: str) -> dict[str, np.ndarray]:
        out = {}
        for i, (lo, hi) in enumerate(zip(edges, (*edges[1:], None), strict=True)):
            if hi is None:
                out[f"{unit} >{lo}"] = values > lo
            else:  # the first bucket includes 0 (a target never seen in training)
                out[f"{unit} {0 if i == 0 else lo + 1}-{hi}"] = \
                    ((values > lo) | (i == 0)) & (values <= hi)
        return out

    return {"target popularity": bucket(pop, pop_edges, "count"),
            "history length": bucket(lengths, len_edges, "len"),
            "target co-consumed with last item": {"yes": together, "no": ~together}}


def _breakdown(per_user: dict[str, np.ndarray], groups: dict[str, dict[str, np.ndarray]]
               ) -> dict[str, Any]:
    return {g: {b: {"users": int(m.sum()),
                    **{k: round(float(per_user[k][m].mean()), 6) if m.any() else None
                       for k in METRICS}}
                for b, m in masks.items()} for g, masks in groups.items()}


def main() -> None:
    """Fit the tuned recipes, break their test metrics down, then EASE at several ranks."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--models", nargs="+", default=["ease", "bprmf", "lightgcn", "simplex"])
    ap.add_argument("--ranks", type=int, nargs="+", default=[32, 64, 128, 256, 512, 1024])
    ap.add_argument("--recipe-dir", help="where the recipes are (default configs/<dataset>/tuned, "
                                         "then configs/<dataset>)")
    ap.add_argument("--pop-edges", type=int, nargs="+", default=list(POP_EDGES),
                    help="bucket edges of the target's training count (ML-1M: 0 100 500 1000)")
    ap.add_argument("--len-edges", type=int, nargs="+", default=list(LEN_EDGES),
                    help="bucket edges of the history length (ML-1M: 0 50 150 400)")
    ap.add_argument("--note", default="")
    ap.add_argument("--dry-run", action="store_true", help="print, write nothing")
    ap.add_argument("--results-dir", help="where cf-gap.json / cf-width.json go "
                    "(default benchmarks/results/<dataset>)")
    ap.add_argument("--width-runs", nargs="+", metavar="RUN",
                    help="instead: break down these saved genrec run folders of one CF model "
                         "at other widths, beside EASE at the same rank (cf-width.json)")
    ap.add_argument("--name", default="cf-width",
                    help="output file stem of --width-runs (e.g. cf-lightgcn for the saved "
                         "seeds of a model the gap run did not fit)")
    args = ap.parse_args()
    results = Path(args.results_dir or ROOT / "benchmarks" / "results" / args.dataset)
    if args.width_runs:
        width_runs(args.dataset, [Path(r) for r in args.width_runs], args.note, args.dry_run,
                   results, args.name)
        return
    folder = ROOT / (args.recipe_dir or f"configs/{args.dataset}/tuned")
    # A recipe not in the tuned folder is taken from configs/<dataset>/ (ML-1M keeps its tuned
    # EASE and ItemKNN recipes there, beside the GPU recipes).
    recipes = {m: folder / f"{m}.yaml" if (folder / f"{m}.yaml").exists()
               else ROOT / f"configs/{args.dataset}/{m}.yaml" for m in args.models}
    cfgs = {m: load_config(p, ["seeds=1", "save_models=false", "checkpoints=false",
                               f"output=runs/cf-gap/{args.dataset}"])
            for m, p in recipes.items()}
    first = cfgs[args.models[0]]
    data = prepare(first)
    groups = _groups(data, tuple(args.pop_edges), tuple(args.len_edges))
    doc: dict[str, Any] = {"dataset": args.dataset, "protocol_text": first.protocol.describe(),
                           "recipes": {m: os.path.relpath(p, ROOT) for m, p in recipes.items()},
                           "group_edges": {"target popularity": list(args.pop_edges),
                                           "history length": list(args.len_edges)},
                           "groups_users": {g: {b: int(m.sum()) for b, m in ms.items()}
                                            for g, ms in groups.items()},
                           "models": {}, "ease_rank": []}
    ease = None
    for name, cfg in cfgs.items():
        if (cfg.dataset, cfg.protocol) != (first.dataset, first.protocol):
            raise SystemExit(f"{recipes[name]}: another dataset or protocol than the others")
        model, row, test = fit_and_evaluate(cfg.models[0], data, cfg)
        doc["models"][name] = {"fit_seconds": row["fit_seconds"], "valid": row["valid"],
                               "test": {k: row["test"][k] for k in METRICS},
                               "by_group": _breakdown(test.per_user, groups)}
        print(f"{name}: test {row['test']['recall@10']:.4f} / {row['test']['ndcg@10']:.4f}",
              flush=True)
        if name == "ease":
            ease = model
    if ease is not None:
        b = ease.weights_.float()
        kw = {"batch_size": first.eval_batch_size}
        for r in sorted(args.ranks):
            if r >= b.shape[0]:
                continue
            t0 = time.process_time()
            u, s, v = torch.svd_lowrank(b, q=r, niter=4)
            low = copy.copy(ease)
            low.weights_ = ((u * s) @ v.T).contiguous()
            svd_s = time.process_time() - t0
            valid = evaluate(low, data.valid_set, first.protocol.with_valid_metric(), **kw)
            test = evaluate(low, data.test_set, first.protocol, **kw)
            rel = float(torch.linalg.matrix_norm(b - low.weights_) / torch.linalg.matrix_norm(b))
            doc["ease_rank"].append({
                "rank": r, "svd_cpu_seconds": round(svd_s, 1),
                "relative_frobenius_error": round(rel, 4),
                "valid_ndcg@10": round(valid.summary()["ndcg@10"], 6),
                "test": {k: round(test.summary()[k], 6) for k in METRICS},
                "by_group": _breakdown(test.per_user, groups)})
            print(f"EASE rank {r}: test {doc['ease_rank'][-1]['test']}", flush=True)
    doc["benchmark"] = {"command": " ".join(["python benchmarks/cf_gap.py", *sys.argv[1:]]),
                        "note": args.note, "cpus": os.cpu_count(),
                        "processor": platform.machine(), "load_average_at_end": os.getloadavg(),
                        "environment": environment(first.threads)}
    dest = results / "cf-gap.json"
    if args.dry_run:
        print(markdown(doc))
        return
    atomic_write_text(dest, json.dumps(doc, indent=2) + "\n")
    print(markdown(doc))
    print(f"-> {dest}")


def _f(x: float | None) -> str:
    """A metric cell: four decimals, or a dash for a group without users."""
    return "–" if x is None else f"{x:.4f}"


REPRODUCE_TOL = 1e-6
"""Largest difference allowed between a run's recorded test metric and its re-evaluation."""


def width_runs(dataset: str, runs: list[Path], note: str, dry_run: bool, results: Path,
               name: str = "cf-width") -> None:
    """Reload saved runs of one CF model at several widths, break their test metrics down by
    user group, and set each beside EASE truncated to its rank (from ``results/cf-gap.json``;
    the table goes to ``results/<name>.json``)."""
    gap = json.loads((results / "cf-gap.json").read_text())
    ease_rank = {e["rank"]: e for e in gap["ease_rank"]}
    edges = gap.get("group_edges", {})  # the gap run's buckets (files before them: the defaults)
    pop_edges = tuple(edges.get("target popularity", POP_EDGES))
    len_edges = tuple(edges.get("history length", LEN_EDGES))
    rows = []
    for run in runs:
        saved = open_saved_model(run)
        cfg, data, recorded, kind = saved.config, saved.data, saved.record, saved.name
        if cfg.dataset.name != dataset or cfg.protocol.describe() != gap["protocol_text"]:
            raise SystemExit(f"{run}: not the dataset and protocol of cf-gap.json")
        test = saved.evaluate_test()
        summary = test.summary()
        try:
            saved.check_reproduces(summary, METRICS, REPRODUCE_TOL)
        except ValueError as e:
            raise SystemExit(str(e)) from None
        assert recorded is not None  # check_reproduces refuses a run without its record
        dim = int(recorded["params"]["dim"])
        training = recorded.get("training", {})
        rows.append({"run": str(run), "model": kind, "dim": dim, "seed": cfg.protocol.seed,
                     "params": recorded["params"], "fit_seconds": recorded["fit_seconds"],
                     "epochs_run": training.get("epochs_run"),
                     "best_epoch": training.get("best_epoch"),
                     "stopped_early": training.get("stopped_early"),
                     "valid_ndcg@10": recorded["valid"]["ndcg@10"],
                     "test": {k: round(summary[k], 6) for k in METRICS},
                     "by_group": _breakdown(test.per_user, _groups(data, pop_edges, len_edges)),
                     "ease_same_rank": ease_rank.get(dim)})
        print(f"{kind} dim {dim}: test {rows[-1]['test']}", flush=True)
    kind = rows[0]["model"]
    # The gap run's recipe of this model kind, whose own width the gap run measured. Matched
    # by kind, not name: a recipe is named after its file (Sports' bprmf-from-beauty).
    recipes = {m: load_config(ROOT / p) for m, p in gap["recipes"].items() if m in gap["models"]}
    same = next((m for m, r in recipes.items() if r.models[0].kind == kind), None)
    if same is not None:
        recipe = recipes[same]  # its width and seed only
        dim = int(recipe.models[0].dim)  # type: ignore[attr-defined]
        base = gap["models"][same]
        rows.insert(0, {"run": gap["recipes"][same], "model": kind, "dim": dim,
                        "seed": recipe.protocol.seed, "fit_seconds": base["fit_seconds"],
                        "epochs_run": None, "best_epoch": None,
                        "valid_ndcg@10": base["valid"]["ndcg@10"], "test": base["test"],
                        "by_group": base["by_group"], "ease_same_rank": ease_rank.get(dim)})
    doc = {"dataset": dataset, "protocol_text": gap["protocol_text"], "runs": rows,
           "ease_full": gap["models"].get("ease"), "cf_gap_models": {
               m: {"valid_ndcg@10": v["valid"]["ndcg@10"], "test": v["test"]}
               for m, v in gap["models"].items()},
           "benchmark": {"command": " ".join(["python benchmarks/cf_gap.py", *sys.argv[1:]]),
                         "note": note, "cpus": os.cpu_count(), "processor": platform.machine(),
                         "environment": environment(1)}}
    print(width_markdown(doc))
    if not dry_run:
        dest = results / f"{name}.json"
        atomic_write_text(dest, json.dumps(doc, indent=2) + "\n")
        print(f"-> {dest}")


def width_markdown(doc: dict[str, Any]) -> str:
    """The width table: each run beside EASE truncated to its rank and full EASE."""
    lines = [("| model | width | epochs (best) | fit s | valid N@10 | test R@10 | test N@10 | "
              "R@10, target co-consumed with last item | R@10, not | EASE at that rank: R@10 / "
              "N@10 |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["runs"]:
        c = r["by_group"]["target co-consumed with last item"]
        e = r["ease_same_rank"]
        epochs = "–" if r["epochs_run"] is None else f"{r['epochs_run']} ({r['best_epoch']})"
        lines.append(f"| {r['model']} | {r['dim']} | {epochs} | "
                     f"{r['fit_seconds']:.0f} | {r['valid_ndcg@10']:.4f} | "
                     f"{r['test']['recall@10']:.4f} | {r['test']['ndcg@10']:.4f} | "
                     f"{_f(c['yes']['recall@10'])} | {_f(c['no']['recall@10'])} | "
                     + (f"{e['test']['recall@10']:.4f} / {e['test']['ndcg@10']:.4f} |" if e
                        else "– |"))
    full = doc["ease_full"]
    if full:
        c = full["by_group"]["target co-consumed with last item"]
        lines.append(f"| ease (full) | – | – | {full['fit_seconds']:.0f} | "
                     f"{full['valid']['ndcg@10']:.4f} | {full['test']['recall@10']:.4f} | "
                     f"{full['test']['ndcg@10']:.4f} | {_f(c['yes']['recall@10'])} | "
                     f"{_f(c['no']['recall@10'])} | – |")
    return "\n".join(lines)


def markdown(doc: dict[str, Any]) -> str:
    """The two BENCHMARKS.md tables: test Recall@10 by user group, and EASE by rank."""
    models = doc["models"]
    head = "| group | users | " + " | ".join(models) + " |"
    lines = [head, "|---" * (2 + len(models)) + "|"]
    lines.append("| all | " + str(sum(doc["groups_users"]["history length"].values())) + " | "
                 + " | ".join(f"{m['test']['recall@10']:.4f}" for m in models.values()) + " |")
    for g, bs in doc["groups_users"].items():
        for b, n in bs.items():
            cells = [models[m]["by_group"][g][b]["recall@10"] for m in models]
            lines.append(f"| {g}: {b} | {n} | " + " | ".join(
                "–" if c is None else f"{c:.4f}" for c in cells) + " |")
    if doc["ease_rank"]:
        lines += ["", ("| EASE rank | rel. error of B | valid N@10 | test R@10 | test N@10 | "
                      "R@10, target co-consumed with last item | R@10, not |"),
                  "|---|---|---|---|---|---|---|"]
        full = models.get("ease")
        for e in doc["ease_rank"]:
            c = e["by_group"]["target co-consumed with last item"]
            lines.append(f"| {e['rank']} | {e['relative_frobenius_error']:.3f} | "
                         f"{e['valid_ndcg@10']:.4f} | {e['test']['recall@10']:.4f} | "
                         f"{e['test']['ndcg@10']:.4f} | {_f(c['yes']['recall@10'])} | "
                         f"{_f(c['no']['recall@10'])} |")
        if full:
            c = full["by_group"]["target co-consumed with last item"]
            lines.append(f"| full | 0 | {full['valid']['ndcg@10']:.4f} | "
                         f"{full['test']['recall@10']:.4f} | {full['test']['ndcg@10']:.4f} | "
                         f"{_f(c['yes']['recall@10'])} | {_f(c['no']['recall@10'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
