"""Speed of genrec against RecBole 1.2.1: one SASRec training epoch and one full-ranking test.

Reproduce (from the repository root; the RecBole side runs in its own venv, RecBole is never a
genrec dependency and is never imported here)::

    GENREC_DATA_DIR=../shared/datasets .venv/bin/python benchmarks/recbole_speed.py \
        --recbole-python /work/recbole-venv/bin/python

Both libraries get ML-1M (``sequences_min5_chronological.txt``, 6,040 users, 3,416 items),
leave-one-out by position, and the recipe's SASRec shape (``configs/ml-1m/sasrec.yaml``):
max length 200, width 64, 2 layers, 1 head, feed-forward width 64, dropout 0.2, full-softmax
CE over all items, batch 128, Adam lr 1e-3, the same number of torch threads.

What an epoch is differs, and the JSON says so: RecBole's sequential loader makes one sample
per training target (every prefix, 981,491 samples, 7,668 batches), genrec trains each user's
sequence once with a loss at every position (6,040 rows, 48 batches). Both see every
training target once per epoch. A RecBole epoch takes over an hour on 2 cores, so it is timed
on a fixed number of batches after a warm-up and extrapolated by batch count; genrec's epoch
is timed whole, through its trainer. Evaluation is timed on all 6,040 test users, ranking all
3,416 items with seen items excluded. Each measurement runs ``--repeats`` times; the fastest
counts and all are kept.

Writes ``benchmarks/results/ml-1m/recbole-speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from genrec.config import load_config
from genrec.data.splits import split
from genrec.evaluation.evaluator import evaluate
from genrec.models.base import FitContext
from genrec.models.sasrec import SASRec
from genrec.runs.experiment import load_data

ROOT = Path(__file__).resolve().parents[1]
RECBOLE_SIDE = Path(__file__).resolve().parent / "_recbole_side.py"
MARKER = "RECBOLE_SPEED_JSON "
TARGETS = {"train_epoch_speedup": 3.0, "eval_speedup": 10.0}


def load_now() -> list[float]:
    """The 1, 5 and 15-minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def genrec_recipe(recipe: Path, **train_updates: Any) -> tuple[Any, Any, Any, Any]:
    """The recipe's config, dataset, split and first model config, that model trained on the
    CPU without a progress bar and with ``train_updates`` replacing its ``train`` fields
    (also used by ``recbole_ttq.py``)."""
    cfg = load_config(recipe)
    ds = load_data(cfg.dataset)
    sp = split(ds, cfg.protocol.split)
    mcfg = cfg.models[0]
    train = mcfg.train.model_copy(update={"device": "cpu", "progress": False, **train_updates})
    return cfg, ds, sp, mcfg.model_copy(update={"train": train})


def genrec_side(recipe: Path, repeats: int) -> dict[str, Any]:
    """Fit genrec's SASRec for one epoch (no validation) and evaluate it on the test users,
    ``repeats`` times each (every repeat is a fresh model from the same seed)."""
    cfg, ds, sp, mcfg = genrec_recipe(recipe, epochs=1, max_minutes=None)
    test_set = sp.test_set()
    n_rows = int((sp.train.histories().lengths >= 2).sum())  # users with a next item

    train_runs, eval_runs = [], []
    for _ in range(repeats):
        model = SASRec(mcfg)
        t0, c0 = time.perf_counter(), time.process_time()
        model.fit(sp.train, FitContext(seed=cfg.protocol.seed))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        rec = model.train_result_.history[0]
        train_runs.append({"epoch_seconds": rec["seconds"], "fit_call_seconds": wall,
                           "cpu_seconds": cpu, "loss": rec["loss"],
                           "load_after": load_now()})
    for _ in range(repeats):
        c0 = time.process_time()
        res = evaluate(model, test_set, cfg.protocol)
        eval_runs.append({"seconds": res.seconds, "cpu_seconds": time.process_time() - c0,
                          "metrics": {k: res.summary()[k] for k in ("recall@10", "ndcg@10")},
                          "load_after": load_now()})
    best_train = min(train_runs, key=lambda r: r["epoch_seconds"])
    best_eval = min(eval_runs, key=lambda r: r["seconds"])
    batch = mcfg.train.batch_size
    return {
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "dataset": {"users": ds.n_users, "items": ds.n_items,
                    "interactions": len(ds.interactions), "test_users": len(test_set)},
        "model": mcfg.model_dump(mode="json"),
        "params": sum(p.numel() for p in model.net_.parameters()),
        "train": {"rows": n_rows, "total_batches": -(-n_rows // batch), "extrapolated": False,
                  "runs": train_runs, "epoch_seconds": best_train["epoch_seconds"]},
        "eval": {"users": len(test_set), "batch_size": 2048,
                 "protocol": cfg.protocol.model_dump(mode="json"),
                 "model_state": "after the 1-epoch fit above (speed does not depend on the "
                                "weights)",
                 "runs": eval_runs, "seconds": best_eval["seconds"],
                 "metrics": best_eval["metrics"]},
    }


def recbole_side(python: str, sequences: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``_recbole_side.py`` with RecBole's interpreter and read its JSON line."""
    cmd = [python, str(RECBOLE_SIDE), "--sequences", str(sequences.resolve()),
           "--threads", str(args.threads), "--repeats", str(args.repeats),
           "--warmup-batches", str(args.warmup_batches),
           "--timed-batches", str(args.timed_batches)]
    env = os.environ | {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",
                        "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"RecBole side failed (exit {proc.returncode})")
    out = json.loads(lines[-1][len(MARKER):])
    out["command"] = shlex.join(cmd)
    return out


def git_state() -> dict[str, Any]:
    """The commit measured and whether the working tree had uncommitted changes."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True,
                              check=False).stdout
    changed = git("status", "--porcelain", "--untracked-files=no").splitlines()
    return {"commit": git("rev-parse", "HEAD").strip(),
            "uncommitted_changes": [line[3:] for line in changed]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recbole-python", required=True,
                    help="python of a venv with recbole 1.2.1 installed")
    ap.add_argument("--recipe", type=Path, default=ROOT / "configs" / "ml-1m" / "sasrec.yaml")
    ap.add_argument("--sequences", type=Path, default=None,
                    help="ML-1M sequences file (default: "
                         "$GENREC_DATA_DIR/ml-1m/sequences_min5_chronological.txt)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads, both libraries")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--warmup-batches", type=int, default=10, help="RecBole, not timed")
    ap.add_argument("--timed-batches", type=int, default=200, help="RecBole, timed")
    ap.add_argument("--output", type=Path,
                    default=ROOT / "benchmarks" / "results" / "ml-1m" / "recbole-speed.json")
    args = ap.parse_args()
    sequences = args.sequences or (Path(os.environ.get("GENREC_DATA_DIR", "."))
                                   / "ml-1m" / "sequences_min5_chronological.txt")
    if not sequences.is_file():
        ap.error(f"no sequences file at {sequences}; set GENREC_DATA_DIR or --sequences")
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    load_before = load_now()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    print("genrec side ...", flush=True)
    g = genrec_side(args.recipe, args.repeats)
    print(f"  epoch {g['train']['epoch_seconds']:.1f}s, eval {g['eval']['seconds']:.2f}s",
          flush=True)
    load_between = load_now()
    print("RecBole side ...", flush=True)
    r = recbole_side(args.recbole_python, sequences, args)
    print(f"  epoch {r['train']['epoch_seconds']:.1f}s (extrapolated), "
          f"eval {r['eval']['seconds']:.2f}s", flush=True)
    load_after = load_now()

    train_x = r["train"]["epoch_seconds"] / g["train"]["epoch_seconds"]
    eval_x = r["eval"]["seconds"] / g["eval"]["seconds"]
    targets_train = r["dataset"]["train_samples"]
    result = {
        "what": "SASRec on ML-1M: one training epoch and one full-ranking test evaluation, "
                "genrec vs RecBole 1.2.1, same machine, same run",
        "started": started,
        "command": ("GENREC_DATA_DIR=../shared/datasets .venv/bin/python "
                    "benchmarks/recbole_speed.py " + shlex.join(sys.argv[1:])),
        "config": {
            "data": str(sequences.name), "split": "leave-one-out by position "
            "(RecBole: eval_args split LS valid_and_test, order TO, mode full)",
            "model": "SASRec, max_len 200, dim 64, 2 layers, 1 head, feed-forward 64, "
                     "dropout 0.2, CE over all items",
            "train": "batch 128, Adam lr 1e-3 (genrec: AdamW with weight decay 0, grad-norm "
                     "clip 1.0 as in its recipe; RecBole: adam, no clipping)",
            "torch_threads": args.threads,
            "differences": [
                ("genrec: pre-LN blocks, ReLU feed-forward, tied output embeddings; RecBole: "
                 "post-LN, hidden_act set to relu, tied output embeddings"),
                ("genrec's test evaluation computes its recipe's default protocol (6 metrics at "
                 "K = 5, 10, 20); RecBole computes Recall and NDCG at 10"),
                "evaluation batch: 2048 users in both",
            ]},
        "epoch_definitions": {
            "genrec": f"one row per user ({g['train']['rows']:,} rows, "
                      f"{g['train']['total_batches']} batches of 128), loss at every position "
                      "of the training sequence: every training target once",
            "recbole": f"one sample per training target, every prefix ({targets_train:,} "
                       f"samples, {r['train']['total_batches']:,} batches of 128): every "
                       "training target once",
            "genrec_timed": "one full epoch through genrec's trainer "
                            "(train_result_.history[0]['seconds'])",
            "recbole_timed": f"{r['train']['timed_batches']} batches after "
                             f"{r['train']['warmup_batches']} warm-up batches (Trainer."
                             "_train_epoch on the first batches of the shuffled loader), "
                             "extrapolated by batch count",
        },
        "genrec": g,
        "recbole": r,
        "ratios": {
            "train_epoch_speedup": round(train_x, 2),
            "eval_speedup": round(eval_x, 2),
        },
        "targets": {
            "train_epoch_speedup": {"target": TARGETS["train_epoch_speedup"],
                                    "measured": round(train_x, 2),
                                    "met": train_x >= TARGETS["train_epoch_speedup"]},
            "eval_speedup": {"target": TARGETS["eval_speedup"], "measured": round(eval_x, 2),
                             "met": eval_x >= TARGETS["eval_speedup"]},
        },
        "genrec_source": git_state(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.machine(), "python": platform.python_version(),
                    "load_average_before": load_before,
                    "load_average_between": load_between,
                    "load_average_after": load_after},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"train epoch: genrec {g['train']['epoch_seconds']:.1f}s vs RecBole "
          f"{r['train']['epoch_seconds']:.1f}s (extrapolated) -> {train_x:.1f}x "
          f"(target {TARGETS['train_epoch_speedup']:.0f}x)")
    print(f"full-ranking eval of {g['eval']['users']:,} users: genrec "
          f"{g['eval']['seconds']:.2f}s vs RecBole {r['eval']['seconds']:.2f}s -> {eval_x:.1f}x "
          f"(target {TARGETS['eval_speedup']:.0f}x)")
    print(f"-> {args.output}")


if __name__ == "__main__":
    main()
