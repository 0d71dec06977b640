"""Time-to-quality of genrec against RecBole 1.2.1: wall time to reach a validation NDCG@10.

Reproduce (from the repository root; the RecBole side runs in its own venv, RecBole is never a
genrec dependency and is never imported here)::

    GENREC_DATA_DIR=../shared/datasets .venv/bin/python benchmarks/recbole_ttq.py \
        --recbole-python /work/recbole-venv/bin/python --budget-min 45

Same data, split and SASRec shape as ``recbole_speed.py`` (whose set-up this imports): ML-1M
``sequences_min5_chronological.txt``, leave-one-out by position, max length 200, width 64,
2 layers, 1 head, feed-forward 64, dropout 0.2, CE over all items, batch 128, lr 1e-3. Both
sides are validated on the same 6,040 validation targets (each user's second-to-last item;
both sides check it against the sequences file) with one metric definition: full ranking over
all items, the user's training items excluded, NDCG@10 of the held-out item. genrec validates
with its own evaluator after every epoch (its trainer's validation hook); RecBole's model is
trained in a loop of its own (RecBole's model, loss, Adam and shuffled prefix loader) and
validated every ``--check-every`` batches, NDCG@10 computed from its full scores by
``_ttq_ndcg.py``, which this script checks against genrec's evaluator on genrec's scores.

The two sides run CONCURRENTLY, one torch thread each, so they share the machine's load; both
start training at the same moment (RecBole prepares its data, then waits for the go). Each
has the same wall budget (``--budget-min``, validation included) and stops earlier on
patience. Every check records the training wall time excluding validation, the wall time
including it, and the NDCG@10. Time-to-quality: for the level both reach (the lower of the
two best NDCG@10 within budget) and fixed levels, the first time each side reached it and the
ratio RecBole / genrec.

Writes ``benchmarks/results/ml-1m/recbole-ttq.json`` and ``recbole-ttq.png`` next to it
(RecBole's progress log goes to ``recbole-ttq.recbole.log``). ``--reanalyse`` trains nothing:
it recomputes the levels, ratios and plot of an existing result from the curves it holds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _ttq_ndcg import ndcg_single_target
from recbole_speed import ROOT, genrec_recipe, git_state, load_now

from genrec.evaluation.evaluator import evaluate
from genrec.models.base import FitContext
from genrec.models.sasrec import SASRec
from genrec.runs.experiment import validation_callback

RECBOLE_SIDE = Path(__file__).resolve().parent / "_recbole_ttq_side.py"
MARKER = "RECBOLE_TTQ_JSON "
LEVELS = (0.05, 0.10, 0.12, 0.14, 0.16, 0.18, 0.20)


def check_metric(model: SASRec, valid_set: Any, protocol: Any) -> dict[str, Any]:
    """Compare ``_ttq_ndcg`` with genrec's evaluator on the model's own validation scores."""
    only = protocol.model_copy(update={"metrics": ["ndcg"], "cutoffs": [10]})
    ref = evaluate(model, valid_set, only).per_user["ndcg@10"]
    hist = valid_set.histories
    with torch.no_grad():
        short = hist.truncate(protocol.max_history_length)
        scores = np.concatenate([model.score(short.slice(lo, min(lo + 2048, len(short)))).numpy()
                                 for lo in range(0, len(short), 2048)])
    targets = valid_set.target_items
    assert (np.diff(valid_set.target_indptr) == 1).all(), "one target per user"
    ours = ndcg_single_target(scores, targets, hist.indptr, hist.items, k=10)
    diff = np.abs(ours - ref)
    out = {"users": len(ref), "genrec_evaluator": float(ref.mean()), "numpy": float(ours.mean()),
           "max_abs_diff_per_user": float(diff.max()),
           "users_differing": int((diff > 1e-9).sum())}
    assert out["users_differing"] == 0, f"NDCG routine disagrees with genrec's evaluator: {out}"
    return out


def check_targets(ds: Any, valid_set: Any, sequences: Path) -> str:
    """Assert genrec's validation targets and histories are the sequences file's."""
    seqs = {}
    with open(sequences) as f:
        for line in f:
            user, *items = line.split()
            seqs[user] = items
    users = ds.user_map.to_raw(valid_set.histories.users)
    targets = ds.item_map.to_raw(valid_set.target_items)
    hist = valid_set.histories
    raw_hist = ds.item_map.to_raw(hist.items)
    assert len(users) == len(seqs) == len(set(users)), "validation users"
    for i, (u, t) in enumerate(zip(users, targets, strict=True)):
        assert str(t) == seqs[str(u)][-2], (u, t)
        got = [str(x) for x in raw_hist[hist.indptr[i]:hist.indptr[i + 1]]]
        assert got == seqs[str(u)][:-2], f"history of user {u}"
    return (f"{len(users)} users: target = second-to-last item, history = the items before it, "
            "verified")


def genrec_run(recipe: Path, budget_min: float, patience: int | None,
               go: Any) -> dict[str, Any]:
    """Prepare genrec's SASRec, call ``go()`` (which returns once RecBole is ready), train with
    validation after every epoch within the budget, and return its curve."""
    cfg, ds, sp, mcfg = genrec_recipe(recipe, max_minutes=budget_min, patience=patience)
    valid_set = sp.valid_set()
    inner = validation_callback(valid_set, cfg.protocol)
    points: list[dict[str, Any]] = []
    clock = {"start": 0.0, "valid": 0.0}

    def validate(model: Any) -> float:
        wall = time.perf_counter() - clock["start"]
        t0 = time.perf_counter()
        ndcg = inner(model)
        secs = time.perf_counter() - t0
        points.append({"epochs": len(points) + 1, "train_seconds": wall - clock["valid"],
                       "wall_seconds": wall, "valid_seconds": secs, "ndcg@10": ndcg,
                       "load": load_now()})
        clock["valid"] += secs
        print(f"[genrec  {time.strftime('%H:%M:%S')}] epoch {len(points)}: ndcg@10 {ndcg:.4f}, "
              f"train {wall - clock['valid'] + secs:.0f}s, valid {secs:.1f}s", flush=True)
        return ndcg

    model = SASRec(mcfg)
    out_go = go()
    load_start = load_now()
    clock["start"] = time.perf_counter()
    c0 = time.process_time()
    model.fit(sp.train, FitContext(validate=validate, valid_metric=cfg.protocol.valid_metric,
                                   seed=cfg.protocol.seed))
    cpu = time.process_time() - c0
    res = model.train_result_
    return {
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "model": mcfg.model_dump(mode="json"),
        "params": sum(p.numel() for p in model.net_.parameters()),
        "dataset": {"users": ds.n_users, "items": ds.n_items,
                    "interactions": len(ds.interactions), "valid_users": len(valid_set)},
        "budget_minutes": budget_min, "patience_epochs": patience,
        "stopped_by": ("patience" if res.stopped_early else
                       "budget" if res.out_of_time else "epochs"),
        "cpu_seconds": cpu, "load_average_at_start": load_start,
        "load_average_at_end": load_now(), "recbole_ready": out_go,
        "points": points, "history": res.history,
        "valid_targets": check_targets(ds, valid_set, _sequences()),
        "metric_check": check_metric(model, valid_set, cfg.protocol),
    }


def _sequences() -> Path:
    return Path(os.environ.get("GENREC_DATA_DIR", ".")) / "ml-1m" / \
        "sequences_min5_chronological.txt"


def first_reach(points: list[dict[str, Any]], level: float, budget_s: float
                ) -> dict[str, Any] | None:
    """The first check within budget whose NDCG@10 reaches ``level``, with the check before
    it (``previous``: the level was crossed between the two; time 0 before the first)."""
    before = {"train_seconds": 0.0, "wall_seconds": 0.0, "ndcg@10": None}
    for p in points:
        if p["wall_seconds"] <= budget_s and p["ndcg@10"] >= level:
            return {"train_seconds": round(p["train_seconds"], 1),
                    "wall_seconds": round(p["wall_seconds"], 1),
                    "ndcg@10": round(p["ndcg@10"], 5),
                    **({"epochs": p["epochs"]} if "epochs" in p else {}),
                    **({"batches": p["batches"]} if "batches" in p else {}),
                    "previous": {k: (round(v, 5) if isinstance(v, float) else v)
                                 for k, v in before.items()}}
        before = {k: p[k] for k in ("train_seconds", "wall_seconds", "ndcg@10")}
    return None


def time_to_quality(g: list[dict[str, Any]], r: list[dict[str, Any]], budget_s: float,
                    levels: list[float]) -> dict[str, Any]:
    """Best NDCG@10 within budget per side, the common level and the time to each level."""
    best_g = max((p["ndcg@10"] for p in g if p["wall_seconds"] <= budget_s), default=0.0)
    best_r = max((p["ndcg@10"] for p in r if p["wall_seconds"] <= budget_s), default=0.0)
    common = min(best_g, best_r)
    rows = []
    named = [(f"{x:.2f}", x) for x in levels]
    if common > 0:  # both sides validated within budget
        named.insert(0, ("common", common))
    for name, level in named:
        tg, tr = first_reach(g, level, budget_s), first_reach(r, level, budget_s)
        row: dict[str, Any] = {"level": name, "ndcg@10": round(level, 5), "genrec": tg,
                               "recbole": tr}
        if tg and tr:
            row["ratio_recbole_over_genrec"] = {
                k: round(tr[k] / tg[k], 2) for k in ("train_seconds", "wall_seconds")}
            # Each side crossed the level somewhere between its previous check and this one:
            # the ratio of the true crossing times lies in these bounds.
            row["ratio_bounds_wall"] = [
                round(tr["previous"]["wall_seconds"] / tg["wall_seconds"], 2),
                (round(tr["wall_seconds"] / tg["previous"]["wall_seconds"], 2)
                 if tg["previous"]["wall_seconds"] > 0 else None)]
        rows.append(row)
    return {"best_within_budget": {"genrec": round(best_g, 5), "recbole": round(best_r, 5)},
            "common_level": round(common, 5), "levels": rows}


def plot(g: list[dict[str, Any]], r: list[dict[str, Any]], common: float, budget_s: float,
         check_every: int, path: Path) -> None:
    """Validation NDCG@10 against wall time (validation included), both sides."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for pts, label, style in ((g, "genrec (every epoch)", "o-"),
                              (r, f"RecBole 1.2.1 (every {check_every} batches)", "s-")):
        ax.plot([p["wall_seconds"] / 60 for p in pts], [p["ndcg@10"] for p in pts], style,
                ms=3, label=label)
    ax.axhline(common, color="grey", ls="--", lw=1, label=f"common level {common:.4f}")
    ax.axvline(budget_s / 60, color="grey", ls=":", lw=1, label="budget")
    ax.set_xlabel("wall minutes since start of training (validation included)")
    ax.set_ylabel("validation NDCG@10 (full ranking, seen excluded)")
    ax.set_title("SASRec on ML-1M, 1 torch thread each, run concurrently")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    plt.close(fig)


def reanalyse(args: argparse.Namespace) -> None:
    """Recompute ``time_to_quality`` and the plot of an existing result from its curves."""
    result = json.loads(args.output.read_text())
    budget_s = result["budget_minutes"] * 60.0
    g, r = result["genrec"]["points"], result["recbole"]["points"]
    result["time_to_quality"] = time_to_quality(g, r, budget_s, args.levels)
    result["reanalysed"] = {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": (
        ".venv/bin/python benchmarks/recbole_ttq.py " + shlex.join(sys.argv[1:]))}
    png = args.output.with_suffix(".png")
    plot(g, r, result["time_to_quality"]["common_level"], budget_s,
         result["recbole"]["check_every_batches"], png)
    tmp = args.output.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, args.output)
    report(result["time_to_quality"], result["budget_minutes"])


def report(ttq: dict[str, Any], budget_min: float) -> None:
    """Print the best levels and the time to each level."""
    print(f"best NDCG@10 within {budget_min:g} min: genrec "
          f"{ttq['best_within_budget']['genrec']:.4f}, RecBole "
          f"{ttq['best_within_budget']['recbole']:.4f}")
    for row in ttq["levels"]:
        tg, tr = row["genrec"], row["recbole"]
        shown = (f"genrec {tg['wall_seconds']:.0f}s" if tg else "genrec -") + ", " + \
                (f"RecBole {tr['wall_seconds']:.0f}s" if tr else "RecBole -")
        ratio = row.get("ratio_recbole_over_genrec")
        bounds = row.get("ratio_bounds_wall")
        print(f"  NDCG@10 >= {row['ndcg@10']:.4f} ({row['level']}): {shown}"
              + (f" -> {ratio['wall_seconds']:.2f}x (bounds {bounds[0]}-{bounds[1]})"
                 if ratio and bounds else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recbole-python",
                    help="python of a venv with recbole 1.2.1 installed (required to train)")
    ap.add_argument("--recipe", type=Path, default=ROOT / "configs" / "ml-1m" / "sasrec.yaml")
    ap.add_argument("--budget-min", type=float, default=45.0, help="wall budget per side")
    ap.add_argument("--check-every", type=int, default=250,
                    help="RecBole training batches between validations (7,668 per epoch)")
    ap.add_argument("--genrec-patience", type=int, default=20, help="epochs (the recipe's)")
    ap.add_argument("--recbole-patience", type=int, default=10, help="checks")
    ap.add_argument("--levels", type=float, nargs="*", default=list(LEVELS))
    ap.add_argument("--output", type=Path,
                    default=ROOT / "benchmarks" / "results" / "ml-1m" / "recbole-ttq.json")
    ap.add_argument("--reanalyse", action="store_true",
                    help="train nothing: recompute the levels and the plot of --output from "
                         "the curves it holds")
    args = ap.parse_args()
    if args.reanalyse:
        reanalyse(args)
        return
    if not args.recbole_python:
        ap.error("--recbole-python is required (except with --reanalyse)")
    sequences = _sequences()
    if not sequences.is_file():
        ap.error(f"no sequences file at {sequences}; set GENREC_DATA_DIR")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    args.output.parent.mkdir(parents=True, exist_ok=True)

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_before = load_now()
    rb_json = Path(tempfile.mkdtemp(prefix="recbole-ttq-")) / "recbole.json"
    rb_log = args.output.with_suffix(".recbole.log")
    cmd = [args.recbole_python, str(RECBOLE_SIDE), "--sequences", str(sequences.resolve()),
           "--output", str(rb_json), "--threads", "1", "--budget-min", str(args.budget_min),
           "--check-every", str(args.check_every), "--patience", str(args.recbole_patience)]
    env = os.environ | {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "OMP_NUM_THREADS": "1"}
    with open(rb_log, "w") as log_file:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=log_file, text=True)
        print(f"RecBole side started (log: {rb_log}); preparing genrec ...", flush=True)

        def go() -> dict[str, Any]:
            t0 = time.perf_counter()
            assert proc.stdout is not None and proc.stdin is not None
            line = proc.stdout.readline()
            if line.strip() != "READY":
                proc.kill()
                raise SystemExit(f"RecBole side failed before training: {line!r}; see {rb_log}")
            proc.stdin.write("GO\n")
            proc.stdin.flush()
            print("both sides training", flush=True)
            return {"waited_seconds": round(time.perf_counter() - t0, 1),
                    "load_average": load_now()}

        g = genrec_run(args.recipe, args.budget_min, args.genrec_patience, go)
        load_genrec_done = load_now()
        print("genrec done; waiting for RecBole ...", flush=True)
        stdout, _ = proc.communicate()
    if proc.returncode != 0 or MARKER not in stdout:
        raise SystemExit(f"RecBole side failed (exit {proc.returncode}); see {rb_log}")
    r = json.loads(rb_json.read_text())
    r["command"] = shlex.join(cmd)

    budget_s = args.budget_min * 60.0
    ttq = time_to_quality(g["points"], r["points"], budget_s, args.levels)
    png = args.output.with_suffix(".png")
    plot(g["points"], r["points"], ttq["common_level"], budget_s, args.check_every, png)
    result = {
        "what": "SASRec on ML-1M: wall time to reach a validation NDCG@10, genrec vs RecBole "
                "1.2.1, run concurrently on the same machine, one torch thread each",
        "started": started,
        "command": ("GENREC_DATA_DIR=../shared/datasets .venv/bin/python "
                    "benchmarks/recbole_ttq.py " + shlex.join(sys.argv[1:])),
        "metric": "validation NDCG@10: each user's second-to-last item, full ranking over all "
                  "items, the user's training items excluded (genrec: its evaluator; RecBole: "
                  "benchmarks/_ttq_ndcg.py on its full scores, checked equal to genrec's "
                  "evaluator on genrec's scores: genrec.metric_check)",
        "times": "train_seconds: wall since start of training minus validation time; "
                 "wall_seconds: including validation (the time the check began). Only checks "
                 "with wall_seconds <= budget count for time-to-quality.",
        "validation_cadence": {"genrec": "after every epoch (48 batches of 128 user sequences)",
                               "recbole": f"every {args.check_every} batches of 128 prefixes "
                                          f"(of {r['dataset']['batches_per_epoch']:,} per "
                                          "epoch) and at the end of the budget"},
        "differences": [
            ("genrec: pre-LN blocks, AdamW (weight decay 0) with grad-norm clip 1.0 (its "
            "recipe); RecBole: post-LN, Adam, no clipping"),
            ("an epoch: genrec one row per user with a loss at every position; RecBole one "
            "sample per training target (every prefix)"),
        ],
        "budget_minutes": args.budget_min,
        "time_to_quality": ttq,
        "genrec": g,
        "recbole": r,
        "plot": png.name,
        "genrec_source": git_state(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.machine(), "python": platform.python_version(),
                    "torch_threads_each_side": 1,
                    "load_average_before": load_before,
                    "load_average_genrec_done": load_genrec_done,
                    "load_average_after": load_now()},
    }
    tmp = args.output.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, args.output)
    report(ttq, args.budget_min)
    print(f"-> {args.output}, {png}")


if __name__ == "__main__":
    main()
