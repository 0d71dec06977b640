"""Semantic-ID tokenisation against catalogue size: TIGER's first stage up to 1M items.

For each catalogue size, in a fresh child process (so the peak RSS is that size's alone):
draw ``n`` item vectors, fit the recipe tokenizer (RQ-KMeans 3 x 256, 50 Lloyd iterations
per level, as in ``configs/amazon-beauty/tiger.yaml``; centres fitted on at most
``max_train_points`` items, 65,536 by default), code every item, add the dedup code
and build the prefix trie used by constrained decoding -- :meth:`genrec.semantic_ids.
SemanticIDs.fit`, the path ``genrec tokenize`` and TIGER's ``fit`` take. Records seconds,
process CPU seconds and peak RSS per size, the codebook health and collision rate, and the
least-squares growth exponent of time in items.

The vectors: embedding a million synthetic item texts with all-MiniLM-L6-v2 takes hours on 2
CPU cores (about 3 minutes per 12k items here), so they are drawn to look like sentence
embeddings instead: unit vectors in 384 dimensions around ``n / 50`` topic centres (each
item = its topic's centre + Gaussian noise of the same norm, normalised). The tokenizer's
cost depends on ``n``, the width, ``K``, the levels and the iterations, not on the content;
the codebook-health figures describe these synthetic vectors only.

Usage::

    GENREC_THREADS=1 python benchmarks/tokenize_scale.py --sizes 10000 100000 1000000
    GENREC_THREADS=1 python benchmarks/tokenize_scale.py --sizes 10000 100000 \
        --max-train-points 0 --results benchmarks/results/synthetic/tokenize-scale-full-fit.json

Writes ``benchmarks/results/synthetic/tokenize-scale.json`` (rewritten after every size).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genrec.semantic_ids import (
    DENSE_MAX_ENTRIES,
    PrefixTrie,
    RQKMeansConfig,
    SemanticIDs,
    SemanticIDsConfig,
    beam_search,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "synthetic" / "tokenize-scale.json"
DIM = 384


def text_like_vectors(n: int, seed: int) -> np.ndarray:
    """``n`` unit vectors in ``DIM`` dimensions around ``max(n // 50, 1)`` topic centres."""
    rng = np.random.default_rng(seed)
    n_topics = max(n // 50, 1)
    centres = rng.standard_normal((n_topics, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    topic = rng.zipf(1.3, n) % n_topics                       # skewed topic sizes
    out = np.empty((n, DIM), dtype=np.float32)
    for lo in range(0, n, 100_000):                           # chunks bound the temporaries
        hi = min(lo + 100_000, n)
        noise = rng.standard_normal((hi - lo, DIM), dtype=np.float32) / np.sqrt(DIM)
        v = centres[topic[lo:hi]] + noise
        out[lo:hi] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


LAYOUT_LIMITS = {"auto": DENSE_MAX_ENTRIES, "sparse": 0, "dense": 1 << 62}
"""``PrefixTrie.from_codes(dense_max_entries=...)`` per decode layout: the default, every
table as sorted edges, every table dense (the layout before sparse levels existed)."""


def decode_cost(stage: SemanticIDs, layout: str, users: int, beam: int, seed: int
                ) -> dict[str, Any]:
    """Build the trie under ``layout`` and decode one batch of ``users`` with a history ban
    of 10 random items each; seconds, trie size, process peak RSS after."""
    t0 = time.process_time()
    trie = PrefixTrie.from_codes(stage.codes_, stage.vocab_sizes_,
                                 dense_max_entries=LAYOUT_LIMITS[layout])
    build = time.process_time() - t0
    gen = torch.Generator().manual_seed(seed)
    tables = [torch.log_softmax(torch.randn(users, 1, v, generator=gen), -1)
              for v in trie.vocab_sizes]
    n = len(stage.codes_)
    banned = torch.zeros(users, n, dtype=torch.bool)
    banned[torch.arange(users).repeat_interleave(10),
           torch.randint(0, n, (users * 10,), generator=gen)] = True
    t0 = time.process_time()
    res = beam_search(lambda p: tables[p.shape[-1]].expand(-1, p.shape[1], -1), trie, users,
                      beam, banned=banned)
    return {"layout": trie.layout, "trie_mb": round(trie.nbytes / 2**20, 1),
            "build_cpu_seconds": round(build, 2),
            "decode_cpu_seconds": round(time.process_time() - t0, 2),
            "items_returned": int((res.items >= 0).sum()),
            "banned_returned": int(banned.gather(1, res.items.clamp(min=0))[
                res.items >= 0].sum()),
            "peak_rss_mb_after": round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def child(n: int, seed: int, cfg: dict[str, Any], decode_users: int = 0,
          layouts: tuple[str, ...] = ()) -> dict[str, Any]:
    """Tokenise ``n`` items in this process (then decode one batch per trie layout); the
    measurement row."""
    torch.set_num_threads(int(os.environ.get("GENREC_THREADS", "1")))
    vectors = text_like_vectors(n, seed)
    stage = SemanticIDs(SemanticIDsConfig(tokenizer=RQKMeansConfig(**cfg)))
    t0, c0 = time.perf_counter(), time.process_time()
    stage.fit(vectors, source={"kind": "synthetic text-like vectors", "seed": seed})
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    h = stage.health_.to_dict()
    return {"n_items": n, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "vectors_mb": round(vectors.nbytes / 2**20, 1),
            "dedup_level_size": stage.vocab_sizes_[-1],
            "trie_layout": stage.trie_.layout, "trie_mb": round(stage.trie_.nbytes / 2**20, 1),
            "codes_unique_before_dedup": len(np.unique(stage.raw_codes_, axis=0)),
            "health": h, "load_average_1m": round(os.getloadavg()[0], 2),
            "decode": {lay: decode_cost(stage, lay, decode_users, 20, seed)
                       for lay in layouts} if decode_users else None}


def exponent(rows: list[dict[str, Any]], key: str) -> float | None:
    """Least-squares slope of log ``key`` on log items (None below two sizes)."""
    if len(rows) < 2:
        return None
    x = np.log([r["n_items"] for r in rows])
    y = np.log([max(r[key], 1e-3) for r in rows])
    return round(float(np.polyfit(x, y, 1)[0]), 3)


def main() -> None:
    """Run every size in a child process and write the results after each."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--codebook-size", type=int, default=256)
    ap.add_argument("--n-iter", type=int, default=50)
    ap.add_argument("--max-train-points", type=int, default=65_536,
                    help="RQKMeansConfig.max_train_points (0: fit on every item)")
    ap.add_argument("--decode-users", type=int, default=0,
                    help="also decode one batch of this many users (beam 20, 10 banned items "
                         "each) per --layouts entry, after tokenising")
    ap.add_argument("--layouts", nargs="+", default=["sparse", "auto"],
                    choices=sorted(LAYOUT_LIMITS), help="trie layouts to decode with, in order")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    cfg = {"n_levels": args.levels, "codebook_size": args.codebook_size, "n_iter": args.n_iter,
           "max_train_points": args.max_train_points or None}
    if args.child is not None:
        print("ROW " + json.dumps(child(args.child, args.seed, cfg, args.decode_users,
                                        tuple(args.layouts))), flush=True)
        return
    rows: list[dict[str, Any]] = []
    for n in sorted(args.sizes):
        cmd = [sys.executable, __file__, "--child", str(n), "--seed", str(args.seed),
               "--levels", str(args.levels), "--codebook-size", str(args.codebook_size),
               "--n-iter", str(args.n_iter), "--max-train-points", str(args.max_train_points),
               "--decode-users", str(args.decode_users), "--layouts", *args.layouts]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        line = [x for x in proc.stdout.splitlines() if x.startswith("ROW ")]
        if proc.returncode or not line:
            rows.append({"n_items": n, "ok": False, "returncode": proc.returncode,
                         "stderr_tail": proc.stderr[-2000:]})
            print(f"{n:>9,} items: failed (rc {proc.returncode})", flush=True)
            break
        row = json.loads(line[0][4:]) | {"ok": True,
                                         "wall_seconds": round(time.perf_counter() - t0, 2)}
        rows.append(row)
        print(f"{n:>9,} items: {row['seconds']} s ({row['cpu_seconds']} CPU s), peak "
              f"{row['peak_rss_mb']:,.0f} MB, {row['dedup_level_size']} dedup codes, "
              f"{row['codes_unique_before_dedup']:,} distinct 3-code prefixes", flush=True)
        ok = [r for r in rows if r.get("ok")]
        doc = {"what": "RQ-KMeans semantic IDs (fit + code + dedup + trie) against catalogue "
                       "size, each size in a fresh process",
               "tokenizer": cfg, "vectors": f"synthetic text-like unit vectors, {DIM}-d, "
                                            "n/50 topic centres (see the script docstring)",
               "rows": rows,
               "exponents": {"seconds": exponent(ok, "seconds"),
                             "cpu_seconds": exponent(ok, "cpu_seconds"),
                             "peak_rss_mb": exponent(ok, "peak_rss_mb")},
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                           "torch_threads": int(os.environ.get("GENREC_THREADS", "1"))},
               "command": "GENREC_THREADS=1 python benchmarks/tokenize_scale.py "
                          + " ".join(sys.argv[1:])}
        args.results.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.results.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(args.results)


if __name__ == "__main__":
    main()
