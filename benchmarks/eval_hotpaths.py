"""Two evaluation hot paths, before and after, timed in one process.

1. **Set membership of per-user keys** (``row * n_items + item``): the history check of the
   generative-risk report (``genrec.evaluation.risks.history_membership``), the serendipity /
   row-membership of beyond-accuracy metrics, and the seen-item filter of ANN serving used
   ``np.isin`` (and ``np.unique`` for the ANN keys). On NumPy 2.4 both are far slower than a
   sort on such wide-range int64 keys; :func:`genrec._arrays.member_of` sorts the keys once
   and binary-searches. Sizes: Beauty's 22,363 test users with their train + valid histories
   (about 990,000 keys) against 20 beams per user (the risk report), and one 1,024-user ANN
   chunk at ML-1M's history lengths (about 170,000 keys) against 200 candidates per user.
2. **Recall@K and NDCG@K curves of the report** (every K from 1 to the largest): the report
   recomputed each metric from scratch at each K (K full passes over the users);
   :func:`genrec.evaluation.metrics.metric_curve` takes running sums (one pass). Sizes:
   22,363 users (Beauty's test set), one target each, hit rate 0.07 per list, K = 20 and 50.

Inputs are seeded random arrays of those sizes. Each pair alternates old and new ``--repeats``
times (median reported), checks that both give the same answer, and reports old / new.

Usage::

    GENREC_THREADS=1 python benchmarks/eval_hotpaths.py --out benchmarks/results/synthetic/eval-hotpaths.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genrec._arrays import member_of
from genrec._io import atomic_write_text
from genrec.evaluation.metrics import METRICS, metric_curve


def _pair(old: Callable[[], Any], new: Callable[[], Any], repeats: int,
          same: Callable[[Any, Any], bool]) -> dict[str, Any]:
    t_old, t_new = [], []
    a = b = None
    for _ in range(repeats):
        t = time.perf_counter()
        a = old()
        t_old.append(time.perf_counter() - t)
        t = time.perf_counter()
        b = new()
        t_new.append(time.perf_counter() - t)
    old_s, new_s = statistics.median(t_old), statistics.median(t_new)
    return {"old_s": round(old_s, 5), "new_s": round(new_s, 5),
            "old_over_new": round(old_s / new_s, 2), "same_answer": bool(same(a, b))}


def membership(rng: np.random.Generator, users: int, items: int, mean_len: float,
               per_user: int, repeats: int, unique_keys: bool) -> dict[str, Any]:
    lengths = np.maximum(1, rng.poisson(mean_len, users))
    rows = np.repeat(np.arange(users, dtype=np.int64), lengths)
    keys = rows * items + rng.integers(0, items, len(rows))
    probe = (np.arange(users, dtype=np.int64)[:, None] * items
             + rng.integers(0, items, (users, per_user)))
    # a share of the probes are real history items, as seen items and repeats are
    pick = rng.random(probe.shape) < 0.1
    probe[pick] = keys[rng.integers(0, len(keys), int(pick.sum()))]
    if unique_keys:  # the ANN filter: np.unique + np.isin before, np.sort + member_of now
        def old() -> np.ndarray:
            return np.isin(probe, np.unique(keys))

        def new() -> np.ndarray:
            return member_of(probe, np.sort(keys))
    else:
        def old() -> np.ndarray:
            return np.isin(probe, keys)

        def new() -> np.ndarray:
            return member_of(probe, keys)
    out = _pair(old, new, repeats, np.array_equal)
    return {"users": users, "items": items, "keys": len(keys), "probes": int(probe.size),
            **out}


def curves(rng: np.random.Generator, users: int, k: int, repeats: int) -> dict[str, Any]:
    hits = torch.zeros(users, k, dtype=torch.float64)
    found = rng.random(users) < 0.07 * k / 10
    hits[np.flatnonzero(found), rng.integers(0, k, int(found.sum()))] = 1.0
    n_rel = torch.ones(users, dtype=torch.float64)
    out = {}
    for m in ("recall", "ndcg"):
        def old(m: str = m) -> np.ndarray:
            return np.array([METRICS[m](hits, n_rel, c).mean().item() for c in range(1, k + 1)])

        def new(m: str = m) -> np.ndarray:
            return metric_curve(m, hits, n_rel).numpy()

        out[m] = _pair(old, new, repeats, lambda a, b: np.allclose(a, b, atol=1e-12))
    return {"users": users, "k": k, **out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--note", default="", help="how it ran (load, other processes)")
    args = ap.parse_args()
    threads = int(os.environ.get("GENREC_THREADS", "1"))
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    load_start = os.getloadavg()[0]
    doc = {
        "benchmark": "evaluation hot paths, old vs new, one process",
        "membership": {
            "risk_report_beauty": membership(rng, 22_363, 12_101, 44.0, 20, args.repeats,
                                             unique_keys=False),
            "ann_chunk_ml1m": membership(rng, 1_024, 3_416, 166.0, 200, args.repeats,
                                         unique_keys=True),
        },
        "curves": {f"k{k}": curves(rng, 22_363, k, args.repeats) for k in (20, 50)},
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "processor": platform.machine(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "torch": torch.__version__, "torch_threads": threads,
                    "load_average_start": round(load_start, 2),
                    "load_average_end": round(os.getloadavg()[0], 2)},
        "note": args.note,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(doc, indent=2) + "\n")
    for name, r in doc["membership"].items():
        print(f"membership {name}: {r['keys']:,} keys, {r['probes']:,} probes: "
              f"np.isin {r['old_s']:.4f} s, member_of {r['new_s']:.4f} s "
              f"({r['old_over_new']}x, same answer: {r['same_answer']})")
    for name, r in doc["curves"].items():
        for m in ("recall", "ndcg"):
            print(f"curves {name} {m}: per-K loop {r[m]['old_s']:.4f} s, metric_curve "
                  f"{r[m]['new_s']:.4f} s ({r[m]['old_over_new']}x, same: {r[m]['same_answer']})")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
