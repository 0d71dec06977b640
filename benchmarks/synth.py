"""Speed and memory of ``genrec data synth`` at several sizes, each in a fresh process.

For every size it runs :func:`genrec.data.synth.generate` in a child process (so the peak RSS
is that size's alone), then reads the file back to report what was made: rows, users, items
interacted with, the fitted Zipf slope of item popularity, the share of the top 1% of items,
and how often a user's next item shares the previous one's category. Writes
``benchmarks/results/synthetic/synth.json``. Nothing is extrapolated: only sizes run appear.

Usage::

    python benchmarks/synth.py                       # 1M/10k, 5M/100k, 20M/1M, 50M/1M
    python benchmarks/synth.py --sizes 1000000:10000 5000000:100000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from genrec.data.synth import SynthConfig, generate, zipf_slope

RESULTS = Path(__file__).resolve().parent / "results" / "synthetic" / "synth.json"


def _one(n_rows: int, n_items: int, out: Path, seed: int) -> None:
    """Child process: generate one size and print seconds and peak RSS as JSON."""
    t0 = time.perf_counter()
    r = generate(SynthConfig(n_interactions=n_rows, n_items=n_items, seed=seed), out)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": round(seconds, 2), "peak_rss_mb": round(peak, 1),
                      "n_users": r.n_users, "n_categories": r.n_categories}))


def _shape(out: Path) -> dict[str, float]:
    """What the files hold: counts, popularity tail and category continuation."""
    inter = pl.scan_parquet(out / "interactions.parquet")
    counts = inter.group_by("item").len().collect()["len"].to_numpy()
    top = np.sort(counts)[::-1]
    cats = pl.scan_parquet(out / "items.parquet").select(
        "item", pl.col("categories").list.last().alias("cat"))
    # Continuation on the first 1M rows (whole users, file order is user then time order).
    head = inter.head(1_000_000).join(cats, on="item", how="left", maintain_order="left")
    seq = head.collect()
    u, c = seq["user"].to_numpy(), seq["cat"].to_numpy()
    same = (c[1:] == c[:-1])[u[1:] == u[:-1]].mean()
    p = seq["cat"].value_counts()["count"].to_numpy() / seq.height
    return {"file_mb": round((out / "interactions.parquet").stat().st_size / 2**20, 1),
            "items_interacted": int(counts.size),
            "zipf_slope": round(zipf_slope(counts), 3),
            "top1pct_item_share": round(float(top[: max(1, top.size // 100)].sum() / top.sum()),
                                        3),
            "next_same_category": round(float(same), 3),
            "same_category_by_chance": round(float((p ** 2).sum()), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["1000000:10000", "5000000:100000",
                                                   "20000000:1000000", "50000000:1000000"],
                    help="ROWS:ITEMS pairs, run in order")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--one", nargs=3, metavar=("ROWS", "ITEMS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        _one(int(args.one[0]), int(args.one[1]), Path(args.one[2]), args.seed)
        return
    runs = []
    for size in args.sizes:
        n_rows, n_items = map(int, size.split(":"))
        out = Path(tempfile.mkdtemp(prefix="genrec-synth-"))
        try:
            child = subprocess.run([sys.executable, __file__, "--seed", str(args.seed),
                                    "--one", str(n_rows), str(n_items), str(out)],
                                   check=True, capture_output=True, text=True)
            run = {"n_interactions": n_rows, "n_items": n_items,
                   **json.loads(child.stdout.strip().splitlines()[-1])}
            run["rows_per_s"] = round(n_rows / run["seconds"])
            run.update(_shape(out))
        finally:
            shutil.rmtree(out, ignore_errors=True)
        print(json.dumps(run), flush=True)
        runs.append(run)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "command": "python benchmarks/synth.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "config": "SynthConfig defaults (item_alpha 1.0, user_alpha 0.7, p_stay 0.6, "
                  "p_related 0.25, session_len 8, users = rows // 25)",
        "runs": runs}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
