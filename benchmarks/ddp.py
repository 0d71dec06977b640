"""Data-parallel training throughput: SASRec on ML-1M with 1 and 2 processes (torchrun, gloo).

Each run is ``torchrun --standalone --nproc_per_node N benchmarks/ddp.py --worker ...``: every
process uses one torch thread (``OMP_NUM_THREADS=1``), the global batch stays
``--batch-size`` (each process takes every N-th row of it, the loop's DistributedSampler
scheme), no validation runs, and rank 0 writes the loop's per-epoch history. Throughput is
training sequences per second of epoch wall time (the epoch's own seconds, after start-up and
data loading). Runs alternate 1, 2, 1, 2, ... over ``--seeds`` so that the machine's other load
falls on both; the headline is the mean over seeds with a 95% t-interval, and the speed-up
is the ratio of the means.

Usage::

    GENREC_DATA_DIR=../shared/datasets python benchmarks/ddp.py --seeds 0 1 2 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from genrec._io import atomic_write_text
from genrec.config import load_config
from genrec.evaluation.stats import t_interval
from genrec.models.base import FitContext
from genrec.models.sasrec import SASRec
from genrec.runs.experiment import prepare

ROOT = Path(__file__).resolve().parents[1]


def worker(a: argparse.Namespace) -> None:
    """One process of a (possibly distributed) training run; rank 0 writes the history."""
    torch.set_num_threads(1)
    cfg = load_config(None, [f"dataset.data_dir={a.data_dir}", f"dataset.name={a.dataset}"])
    data = prepare(cfg, write=False)
    model = SASRec(max_len=a.max_len, dim=64, n_layers=2, n_heads=1, dropout=0.2,
                   train={"epochs": a.epochs, "batch_size": a.batch_size, "lr": 1e-3,
                          "device": "cpu", "progress": False})
    t0 = time.perf_counter()
    model.fit(data.split.train, FitContext(seed=a.seed, progress=False))
    if int(os.environ.get("RANK", "0")) == 0:
        seqs = int((data.split.train.histories().lengths >= 2).sum())
        Path(a.out).write_text(json.dumps({
            "world": int(os.environ.get("WORLD_SIZE", "1")), "sequences": seqs,
            "fit_seconds": time.perf_counter() - t0,
            "history": model.train_result_.history}))


def run(nproc: int, seed: int, a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """One torchrun launch; the epoch throughputs it measured."""
    out = tmp / f"n{nproc}-s{seed}.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", str(Path(__file__).resolve()), "--worker",
           "--seed", str(seed), "--out", str(out), "--epochs", str(a.epochs),
           "--batch-size", str(a.batch_size), "--max-len", str(a.max_len),
           "--dataset", a.dataset, "--data-dir", a.data_dir]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=os.environ | {"OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-4000:])
    r = json.loads(out.read_text())
    epochs = [{"epoch": h["epoch"], "seconds": round(h["seconds"], 2),
               "samples_per_s": round(r["sequences"] / h["seconds"], 1),
               "loss": round(h["loss"], 4)} for h in r["history"]]
    return {"processes": nproc, "seed": seed, "sequences": r["sequences"], "epochs": epochs,
            "samples_per_s": sum(e["samples_per_s"] for e in epochs) / len(epochs),
            "launch_seconds": round(time.perf_counter() - t0, 1),
            "load_avg_before": load_before}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments; run the worker, or every launch and the report."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--max-len", type=int, default=200)
    p.add_argument("--dataset", default="ml-1m")
    p.add_argument("--data-dir", default=os.environ.get("GENREC_DATA_DIR", ""))
    a = p.parse_args(argv)
    if a.worker:
        worker(a)
        return 0
    runs = []
    with tempfile.TemporaryDirectory(prefix="genrec-ddp-") as tmp:
        for seed in a.seeds:
            for nproc in (1, 2):
                r = run(nproc, seed, a, Path(tmp))
                runs.append(r)
                print(json.dumps(r), file=sys.stderr)
    summary = {}
    for nproc in (1, 2):
        xs = [r["samples_per_s"] for r in runs if r["processes"] == nproc]
        summary[str(nproc)] = {"samples_per_s_mean": round(sum(xs) / len(xs), 1),
                               "ci95": list(t_interval(xs)) if len(xs) > 1 else None,
                               "runs": xs}
    speedup = summary["2"]["samples_per_s_mean"] / summary["1"]["samples_per_s_mean"]
    report = {
        "benchmark": "ddp",
        "command": "python benchmarks/ddp.py " + " ".join(sys.argv[1:] if argv is None
                                                          else argv),
        "dataset": a.dataset, "model": "sasrec",
        "model_config": {"max_len": a.max_len, "dim": 64, "n_layers": 2, "n_heads": 1,
                         "dropout": 0.2, "loss": "ce", "batch_size_global": a.batch_size,
                         "epochs": a.epochs},
        "backend": "gloo (CPU)", "threads_per_process": 1,
        "throughput": summary, "speedup_2_over_1": round(speedup, 3),
        "scaling_efficiency": round(speedup / 2, 3), "runs": runs,
        "environment": {"python": platform.python_version(), "machine": platform.machine(),
                        "cpus": os.cpu_count(), "load_avg_end": os.getloadavg()},
    }
    out = a.out or ROOT / "benchmarks" / "results" / a.dataset / "ddp.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    print(json.dumps({"throughput": summary, "speedup_2_over_1": report["speedup_2_over_1"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
