"""Cost of every pipeline stage against data size: seconds and peak RSS, each stage in a fresh
process, on synthetic data from ``genrec data synth``.

Stages, in order (each reads what the previous one wrote under ``--work``):

1. ``generate``    :func:`genrec.data.synth.generate` (items = interactions / 100).
2. ``load``        the Parquet reader the generator writes for, plus the item metadata.
3. ``preprocess``  dedup + 5-core (:func:`genrec.data.preprocess.preprocess`).
4. ``split``       leave-one-out split.
5. ``itemknn``     fit ItemKNN (the item-item model that stays sparse past EASE's limit).
6. ``sasrec``      one epoch of SASRec with sampled softmax + logQ correction; the item table
                   gets sparse gradients and a lazy Adam (``--sasrec-sparse``, default true:
                   the large-catalogue recipe; ``sparse_embeddings`` in the model config).
7. ``sasrec_step`` CPU seconds per optimizer step of that SASRec with the dense item-table
                   update and with the sparse one, in the same process on the same rows
                   (``--step-count`` steps each over the first users): their ratio.
8. ``evaluate``    full ranking of every item for ``--eval-users`` sampled test users
                   (``protocol.eval_users``), chunked, for ItemKNN and SASRec.
9. ``export``      a serving bundle of SASRec.
10. ``serve``      load the bundle and answer ``--requests`` single-user requests.

Stages of one size may run in separate calls with the same ``--work`` (and ``--keep``) and
``--results``: each call replaces only the (stage, size) rows it ran. ``--merge`` adds the
rows of other result files (``--fresh``: to an empty document rather than ``--results``'s).

The timed part of a stage excludes writing its output for the next stage (``io_seconds``);
the peak RSS is the child's whole life. Writes ``benchmarks/results/synthetic/scale.json``
(merged: a rerun of some sizes keeps the others) and ``scale.png`` (time and peak RSS against
interactions, log-log, one line per stage) with the least-squares growth exponent per stage.

Usage::

    GENREC_THREADS=1 python benchmarks/scale.py --sizes 1000000 5000000 20000000
    GENREC_THREADS=1 python benchmarks/scale.py --sizes 50000000 \
        --stages generate load preprocess split
    python benchmarks/scale.py --plot-only
    python benchmarks/scale.py --fresh --merge a.json b.json --results scale.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml

from genrec.data.interactions import Dataset, Interactions
from genrec.data.preprocess import PreprocessConfig, preprocess
from genrec.data.sources import DataConfig, load_raw
from genrec.data.splits import Split, split
from genrec.data.synth import SynthConfig, generate
from genrec.evaluation.evaluator import evaluate
from genrec.evaluation.protocol import Protocol
from genrec.models.base import FitContext
from genrec.models.itemknn import ItemKNN
from genrec.models.registry import load_model
from genrec.models.sasrec import SASRec, SASRecConfig
from genrec.runs.threads import apply_threads
from genrec.serving.bundle import export_bundle, load_bundle
from genrec.serving.service import ModelService

RESULTS = Path(__file__).resolve().parent / "results" / "synthetic" / "scale.json"
STAGES = ("generate", "load", "preprocess", "split", "itemknn", "sasrec", "sasrec_step",
          "evaluate", "export", "serve")
ITEMS_PER_ROW = 0.01
#: ItemKNN counts co-occurrences on each user's last 200 items: the exact fit costs the sum of
#: squared history lengths, which the heavy-tailed synthetic activity makes superlinear.
KNN_USER_ITEMS = 200


# ---------------------------------------------------------------------------------------------
# Child side: one stage, one process


def _threads() -> None:

    apply_threads(int(os.environ.get("GENREC_THREADS", "1")))
    torch.set_num_threads(int(os.environ.get("GENREC_THREADS", "1")))


def _data_cfg(work: Path) -> Any:

    doc = yaml.safe_load((work / "data" / "dataset.yaml").read_text())
    return DataConfig(**doc.get("dataset", doc))


def _prepared(work: Path) -> tuple[Any, Any]:
    ds = Dataset.load(work / "prep")
    return ds, Split.load(work / "split", ds)


def _protocol(args: argparse.Namespace) -> Any:
    return Protocol(eval_users=args.eval_users, cutoffs=[10], metrics=["ndcg", "recall"])


def _sparse_flag(value: str) -> Any:
    return {"true": True, "false": False}.get(value, value)


def _sasrec_cfg(sparse: Any = True) -> Any:
    return SASRecConfig(loss="sampled_softmax", n_negatives=256, max_len=50,
                        sparse_embeddings=sparse,
                        train={"epochs": 1, "batch_size": 256, "patience": None,
                               "device": "cpu", "progress": False})


def _n_steps(train: Interactions, batch: int) -> int:
    """Optimizer steps of one epoch: users with a next item to predict, in batches."""
    return math.ceil(int((train.histories().lengths >= 2).sum()) / batch)


def _step_costs(train: Interactions, steps: int, seed: int) -> dict[str, Any]:
    """Per-step CPU and wall seconds of one SASRec epoch over the first ``steps`` batches of
    users (all items kept), dense and sparse item-table updates; two rounds of both, the
    faster of each kept (the first fit of a process pays one-off warm-up costs)."""
    batch = _sasrec_cfg().train.batch_size
    n_users = steps * batch
    sub = Interactions(train.frame.filter(pl.col("user") < n_users), n_users, train.n_items)
    out: dict[str, Any] = {"steps": steps, "batch_size": batch}
    n = _n_steps(sub, batch)
    for _ in range(2):
        for name, sparse in (("dense", False), ("sparse", True)):
            model = SASRec(_sasrec_cfg(sparse))
            c0 = time.process_time()
            model.fit(sub, FitContext(seed=seed, progress=False))
            cpu = time.process_time() - c0
            row = {"steps": n, "cpu_seconds_per_step": round(cpu / n, 4),
                   "epoch_wall_seconds_per_step": round(
                       model.train_result_.history[0]["seconds"] / n, 4),
                   "sparse": bool(model.net_.sparse)}
            if name not in out or row["cpu_seconds_per_step"] < out[name]["cpu_seconds_per_step"]:
                out[name] = row
    out["dense_over_sparse_cpu"] = round(out["dense"]["cpu_seconds_per_step"]
                                         / out["sparse"]["cpu_seconds_per_step"], 3)
    return out


def _stage(name: str, n_rows: int, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run one stage; return its timed seconds, the seconds spent writing and facts."""
    _threads()
    out: dict[str, Any] = {}
    io = 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    if name == "baseline":  # imports only: the floor under every stage's peak RSS
        secs, cpu = 0.0, 0.0
    elif name == "generate":
        r = generate(SynthConfig(n_interactions=n_rows, n_items=max(2, int(n_rows * ITEMS_PER_ROW)),
                                 seed=args.seed), work / "data")
        out |= {"n_users": r.n_users, "n_items": r.n_items}
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    elif name == "load":
        ds = load_raw(_data_cfg(work))
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        out |= {"users": ds.n_users, "items": ds.n_items, "rows": len(ds.interactions)}
        t1 = time.perf_counter()
        ds.save(work / "raw")
        io = time.perf_counter() - t1
    elif name == "preprocess":
        ds = Dataset.load(work / "raw")
        t0, c0 = time.perf_counter(), time.process_time()
        ds = preprocess(ds, PreprocessConfig(min_user_interactions=5, min_item_interactions=5))
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        out |= {"users": ds.n_users, "items": ds.n_items, "rows": len(ds.interactions)}
        t1 = time.perf_counter()
        ds.save(work / "prep")
        io = time.perf_counter() - t1
    elif name == "split":
        ds = Dataset.load(work / "prep")
        t0, c0 = time.perf_counter(), time.process_time()
        sp = split(ds)
        vs, ts = sp.valid_set(), sp.test_set()
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        out |= {"train": len(sp.train), "valid_users": len(vs), "test_users": len(ts)}
        t1 = time.perf_counter()
        sp.save(work / "split")
        io = time.perf_counter() - t1
    elif name in ("itemknn", "sasrec"):
        _, sp = _prepared(work)
        model = (ItemKNN(max_user_items=KNN_USER_ITEMS) if name == "itemknn"
                 else SASRec(_sasrec_cfg(_sparse_flag(args.sasrec_sparse))))
        t0, c0 = time.perf_counter(), time.process_time()
        model.fit(sp.train, FitContext(seed=args.seed, progress=False))
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        if name == "itemknn":
            out["similarity_nnz"] = int(model.similarity_.nnz)
        else:
            out["sparse_embeddings"] = bool(model.net_.sparse)
            out["steps"] = _n_steps(sp.train, model.config.train.batch_size)
        t1 = time.perf_counter()
        model.save(work / "models" / name)
        io = time.perf_counter() - t1
    elif name == "sasrec_step":
        _, sp = _prepared(work)
        t0, c0 = time.perf_counter(), time.process_time()
        out |= _step_costs(sp.train, args.step_count, args.seed)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    elif name == "evaluate":
        _, sp = _prepared(work)
        test = sp.test_set()
        proto = _protocol(args)
        t0, c0 = time.perf_counter(), time.process_time()
        for kind in ("itemknn", "sasrec"):
            model = load_model(work / "models" / kind)
            t = time.perf_counter()
            res = evaluate(model, test, proto, batch_size=args.eval_batch)
            out[kind] = {"seconds": round(time.perf_counter() - t, 2),
                         "users": len(res.users),
                         **{k: round(v, 4) for k, v in res.summary().items()}}
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        out["protocol"] = proto.describe()
    elif name == "export":
        ds, sp = _prepared(work)
        model = load_model(work / "models" / "sasrec")
        t0, c0 = time.perf_counter(), time.process_time()
        export_bundle(model, ds, work / "bundle", histories=sp.train.concat(sp.valid),
                      overwrite=True)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    elif name == "serve":
        bundle = load_bundle(work / "bundle")
        svc = ModelService(bundle)
        load_s = time.perf_counter() - t0
        users = bundle_users(work)
        rng = np.random.default_rng(args.seed)
        lat = []
        for u in rng.choice(users, size=args.requests, replace=False):
            t = time.perf_counter()
            svc.recommend(user=str(u), k=10)
            lat.append(time.perf_counter() - t)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        ms = np.asarray(lat) * 1000
        out |= {"load_seconds": round(load_s, 2), "requests": args.requests,
                "p50_ms": round(float(np.percentile(ms, 50)), 2),
                "p99_ms": round(float(np.percentile(ms, 99)), 2)}
    else:
        raise SystemExit(f"unknown stage {name}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": round(secs, 2), "cpu_seconds": round(cpu, 2), "io_seconds": round(io, 2),
            "peak_rss_mb": round(peak, 1), "load_average_1m": round(os.getloadavg()[0], 2),
            **out}


def bundle_users(work: Path) -> list[str]:
    """Raw ids of the users the bundle knows (served by id)."""
    return pl.read_parquet(work / "bundle" / "users.parquet")["user"].cast(pl.String).to_list()


# ---------------------------------------------------------------------------------------------
# Parent side: sizes x stages, results, plot


def _fit_exponent(x: list[float], y: list[float]) -> float | None:
    """Least-squares slope of log y on log x (None with fewer than two sizes)."""
    if len(x) < 2:
        return None
    return round(float(np.polyfit(np.log(x), np.log(np.maximum(y, 1e-3)), 1)[0]), 3)


def _summary(runs: list[dict[str, Any]], floor_mb: float = 0.0) -> dict[str, Any]:
    """Fitted exponents per stage for time and peak RSS (also of the RSS above the imports'
    ``floor_mb``), over the sizes each stage ran."""
    out: dict[str, Any] = {}
    for stage in STAGES:
        rows = sorted((r for r in runs if r["stage"] == stage and r.get("ok")),
                      key=lambda r: r["n_interactions"])
        x = [r["n_interactions"] for r in rows]
        cpu = [r for r in rows if "cpu_seconds" in r]
        out[stage] = {"sizes": x,
                      "time_exponent": _fit_exponent(x, [r["seconds"] for r in rows]),
                      "cpu_exponent": _fit_exponent([r["n_interactions"] for r in cpu],
                                                    [r["cpu_seconds"] for r in cpu]),
                      "rss_exponent": _fit_exponent(x, [r["peak_rss_mb"] for r in rows]),
                      "rss_above_imports_exponent": _fit_exponent(
                          x, [r["peak_rss_mb"] - floor_mb for r in rows])}
        if stage == "sasrec_step":  # how one step's CPU cost grows with the catalogue
            for mode in ("dense", "sparse"):
                out[stage][f"{mode}_step_cpu_exponent"] = _fit_exponent(
                    x, [r[mode]["cpu_seconds_per_step"] for r in rows])
    return out


def _plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.6))
    for stage in STAGES:
        rows = sorted((r for r in doc["runs"] if r["stage"] == stage and r.get("ok")),
                      key=lambda r: r["n_interactions"])
        if not rows:
            continue
        ex = doc["exponents"][stage]
        for ax, key, e in ((axes[0], "seconds", ex["time_exponent"]),
                           (axes[1], "cpu_seconds", ex["cpu_exponent"]),
                           (axes[2], "peak_rss_mb", ex["rss_exponent"])):
            have = [r for r in rows if key in r]
            if not have:
                continue
            label = stage + (f" (slope {e:.2f})" if e is not None else "")
            ax.plot([r["n_interactions"] for r in have], [max(r[key], 1e-2) for r in have],
                    marker="o", label=label)
    for ax, title in ((axes[0], "wall seconds"), (axes[1], "CPU seconds (all threads)"),
                      (axes[2], "peak RSS (MB), imports included")):
        if not ax.lines:
            continue
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("interactions (items = interactions / 100)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"genrec stage costs, 1 thread, {doc['machine']['cpus']}-core CPU box")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def _baseline_rss() -> float:
    """Peak RSS (MB) of a child that only imports what the stages import."""
    proc = subprocess.run([sys.executable, __file__, "--stage", "baseline", "--rows", "0"],
                          check=True, capture_output=True, text=True)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("SCALE_RESULT "))
    return float(json.loads(line.removeprefix("SCALE_RESULT "))["peak_rss_mb"])


def _write(doc: dict[str, Any], path: Path) -> None:
    if "import_rss_mb" not in doc:
        doc["import_rss_mb"] = _baseline_rss()
    doc["exponents"] = _summary(doc["runs"], doc["import_rss_mb"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, path)
    _plot(doc, path.with_suffix(".png"))


def _merge(runs: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``runs`` with every (stage, size) of ``new`` replaced by ``new``'s row."""
    keys = {(r["stage"], r["n_interactions"]) for r in new}
    return [r for r in runs if (r["stage"], r["n_interactions"]) not in keys] + new


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=[1_000_000, 5_000_000, 20_000_000])
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--work", default="/tmp/genrec-scale", help="scratch folder (per size)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-users", type=int, default=10_000,
                    help="test users sampled by the protocol (protocol.eval_users)")
    ap.add_argument("--eval-batch", type=int, default=256, help="users per scoring chunk")
    ap.add_argument("--requests", type=int, default=200, help="serve: single-user requests")
    ap.add_argument("--sasrec-sparse", default="true", choices=["auto", "true", "false"],
                    help="sasrec: sparse_embeddings of the trained model")
    ap.add_argument("--step-count", type=int, default=40,
                    help="sasrec_step: optimizer steps timed for each of dense and sparse")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folders")
    ap.add_argument("--plot-only", action="store_true")
    ap.add_argument("--results", type=Path, default=RESULTS, help="JSON to write (and the PNG)")
    ap.add_argument("--merge", type=Path, nargs="+", default=[],
                    help="add the rows (and commands) of these result files, then write")
    ap.add_argument("--fresh", action="store_true",
                    help="with --merge: start from an empty document, not --results's rows")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        print("SCALE_RESULT " + json.dumps(_stage(args.stage, args.rows, Path(args.work), args)))
        return
    res: Path = args.results
    fresh = args.fresh or not res.exists()
    doc: dict[str, Any] = {"runs": []} if fresh else json.loads(res.read_text())
    for other in args.merge:
        more = json.loads(other.read_text())
        # Settings and machine of the files merged in win: their rows are the newer ones.
        doc |= {k: v for k, v in more.items() if k not in ("runs", "exponents", "commands")}
        doc["runs"] = _merge(doc["runs"], more["runs"])
        doc["commands"] = list(dict.fromkeys(doc.get("commands", []) + more.get("commands", [])))
    if args.plot_only or args.merge:
        _write(doc, res)
        return
    command = "GENREC_THREADS=1 python benchmarks/scale.py " + " ".join(sys.argv[1:])
    doc["commands"] = [c for c in doc.get("commands", []) if c != command] + [command]
    doc |= {
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version(),
                        "threads": int(os.environ.get("GENREC_THREADS", "1"))},
            "rule": "items = interactions / 100 (SynthConfig defaults otherwise, seed 0); "
                    "preprocess: dedup + 5-core; leave-one-out split",
            "settings": {"eval_users": args.eval_users, "eval_batch": args.eval_batch,
                         "requests": args.requests,
                         "itemknn": f"k=100, shrink=10, max_user_items={KNN_USER_ITEMS}",
                         "sasrec": _sasrec_cfg(_sparse_flag(args.sasrec_sparse)
                                               ).model_dump(mode="json"),
                         "sasrec_step": f"{args.step_count} steps each, dense vs sparse"}}
    for n in args.sizes:
        work = Path(args.work) / str(n)
        work.mkdir(parents=True, exist_ok=True)
        for stage in args.stages:
            cmd = [sys.executable, __file__, "--stage", stage, "--rows", str(n),
                   "--work", str(work), "--seed", str(args.seed),
                   "--eval-users", str(args.eval_users), "--eval-batch", str(args.eval_batch),
                   "--requests", str(args.requests), "--sasrec-sparse", args.sasrec_sparse,
                   "--step-count", str(args.step_count)]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            line = next((ln for ln in proc.stdout.splitlines()
                         if ln.startswith("SCALE_RESULT ")), None)
            row: dict[str, Any] = {"stage": stage, "n_interactions": n,
                                   "n_items": int(n * ITEMS_PER_ROW), "wall_seconds": round(wall, 2)}
            if proc.returncode == 0 and line:
                row |= {"ok": True, **json.loads(line.removeprefix("SCALE_RESULT "))}
            else:
                row |= {"ok": False, "returncode": proc.returncode,
                        "error": proc.stderr.strip().splitlines()[-3:]}
            print(json.dumps(row), flush=True)
            doc["runs"] = _merge(doc["runs"], [row])
            _write(doc, res)
            if not row["ok"]:
                break
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
