"""What the tie order costs: :func:`genrec.models.ranking.rank` against a plain top-k.

:func:`rank` breaks ties in a fixed pseudo-random order of the items rather than in
``torch.topk``'s order (which favours low item ids, the popular items). Its first version
ranked a permuted copy of every ``(B, I)`` score block; this benchmark found that this cost
1.5-2.9x a whole evaluation chunk (and its order among equal scores was still torch.topk's,
unspecified, on the permuted columns). :func:`rank` now takes a plain top-(k + 1), and only in
rows with a tie among their k + 1 best scores picks the tied items by their place in the fixed
order (one comparison and one top-k over the places; no permuted copy). It times
one evaluation chunk, in one process, alternating the rankers so that load on the machine hits
all alike:

- ``score``: the chunk's scores, ``(B, d) @ (d, I)``, as SASRec, HSTU or BPR-MF score (d = 64);
- ``rank``: :func:`rank` as shipped (NaN guard, seen items masked, top-k, tied rows re-ranked);
- ``rank_permute_all``: the first version, every row ranked through the permuted columns
  (kept here verbatim);
- ``rank_plain``: the same steps with a plain ``torch.topk`` (ties in ``topk``'s order).

Two kinds of scores: ``dot``, the random-normal dot products above (no ties: every row takes
the plain path), and ``tied``, integer counts 0-20 as an ItemKNN or popularity model gives
(every row tied: the worst case). It reports the medians and the ratios to ``rank_plain``, on
ranking alone and on the whole chunk (``score`` + ranking; for ``tied`` the timed score step is
the same matmul plus a copy of the counts, so the chunk ratio says what a chunk of that size
would pay). Catalogue
sizes are the real datasets' (ML-1M 3,416 items after 5-core, Beauty 12,101, Sports 18,357)
and the 50M-row synthetic catalogue (500,000 items, with 256-user chunks as
``benchmarks/scale.py`` runs it); each user has 8 seen items (the median Beauty history), which
are masked. The script checks that ``rank`` returns the same scores at every rank as
``rank_permute_all`` (the same items too for ``dot``, which has no ties).

Usage::

    GENREC_THREADS=1 python benchmarks/rank_ties.py --out benchmarks/results/synthetic/rank-ties.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genrec._io import atomic_write_text
from genrec.data.interactions import Histories
from genrec.models.ranking import _tie_order, rank
from genrec.runs.threads import apply_threads

SHAPES = [("ml-1m", 3416, 2048), ("amazon-beauty", 12101, 2048),
          ("amazon-sports", 18357, 2048), ("synthetic-50m", 500_000, 256)]
RANKERS = ("rank", "rank_permute_all", "rank_plain")


def _guard(scores: torch.Tensor, histories: Histories) -> None:
    torch.nan_to_num_(scores, nan=float("-inf"), posinf=float("-inf"), neginf=float("-inf"))
    histories.mask_seen(scores)


def rank_plain(scores: torch.Tensor, histories: Histories, k: int) -> torch.Tensor:
    """:func:`rank` before the tie order: the same guard and mask, then a plain top-k."""
    _guard(scores, histories)
    top = torch.topk(scores, k, dim=1)
    return torch.where(torch.isfinite(top.values), top.indices, -1)


def rank_permute_all(scores: torch.Tensor, histories: Histories, k: int) -> torch.Tensor:
    """The first tie order: every row ranked through the permuted columns."""
    _guard(scores, histories)
    perm = _tie_order(scores.shape[1], scores.device)
    top = torch.topk(scores[:, perm], min(k, scores.shape[1]), dim=1)
    return torch.where(torch.isfinite(top.values), perm[top.indices], -1)


def _run(name: str, block: torch.Tensor, hist: Histories, k: int) -> torch.Tensor:
    if name == "rank":
        return rank(block, hist, k)[0]
    return (rank_permute_all if name == "rank_permute_all" else rank_plain)(block, hist, k)


def _agree(kind: str, block: torch.Tensor, hist: Histories, k: int) -> bool:
    """``rank`` and ``rank_permute_all`` pick equal scores at every rank (and, untied, items)."""
    ours, first = _run("rank", block.clone(), hist, k), _run("rank_permute_all", block.clone(), hist, k)
    masked = block.clone()
    _guard(masked, hist)

    def values(items: torch.Tensor) -> torch.Tensor:
        return masked.gather(1, items.clamp(min=0)).masked_fill(items < 0, float("-inf"))

    return torch.equal(values(ours), values(first)) and (kind == "tied" or torch.equal(ours, first))


def time_shape(n_items: int, batch: int, kind: str, repeats: int, k: int, dim: int,
               rng: np.random.Generator) -> dict[str, Any]:
    users = torch.from_numpy(rng.standard_normal((batch, dim), dtype=np.float32))
    items = torch.from_numpy(rng.standard_normal((dim, n_items), dtype=np.float32))
    seen = rng.integers(0, n_items, size=(batch, 8))
    hist = Histories.from_lists(seen.tolist(), n_items)
    counts = torch.from_numpy(rng.integers(0, 21, size=(batch, n_items)).astype(np.float32))

    def scores() -> torch.Tensor:
        s = users @ items
        return s if kind == "dot" else counts.clone()

    same = _agree(kind, scores(), hist, k)
    if not same:
        raise SystemExit(f"rank and rank_permute_all disagree ({kind}, {n_items} items)")
    _run("rank_plain", scores(), hist, k)  # warm-up
    times: dict[str, list[float]] = {"score": [], **{n: [] for n in RANKERS}}
    for r in range(repeats):
        t = time.perf_counter()
        block = scores()
        times["score"].append(time.perf_counter() - t)
        blocks = {n: block.clone() for n in RANKERS}
        order = RANKERS[r % 3:] + RANKERS[:r % 3]
        for name in order:
            t = time.perf_counter()
            _run(name, blocks[name], hist, k)
            times[name].append(time.perf_counter() - t)
    med = {name: float(np.median(v)) for name, v in times.items()}
    plain = med["rank_plain"]
    return {
        "n_items": n_items, "batch_users": batch, "scores": kind, "k": k, "dim": dim,
        "repeats": repeats, "median_seconds": med, "agrees_with_permute_all": same,
        "rank_ratio": {n: med[n] / plain for n in ("rank", "rank_permute_all")},
        "chunk_ratio": {n: (med["score"] + med[n]) / (med["score"] + plain)
                        for n in ("rank", "rank_permute_all")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--k", type=int, default=20)
    args = ap.parse_args()
    threads = apply_threads(None)
    rng = np.random.default_rng(0)
    rows = []
    for name, n_items, batch in SHAPES:
        for kind in ("dot", "tied"):
            row = {"catalogue": name,
                   **time_shape(n_items, batch, kind, args.repeats, args.k, 64, rng)}
            med, rr, cr = row["median_seconds"], row["rank_ratio"], row["chunk_ratio"]
            print(f"{name:>14} {kind:>4} I={n_items:>7} B={batch:>5}  score {med['score']:.4f}s"
                  f"  rank {med['rank']:.4f}s  permute-all {med['rank_permute_all']:.4f}s"
                  f"  plain {med['rank_plain']:.4f}s  ranking x{rr['rank']:.2f}"
                  f" (permute-all x{rr['rank_permute_all']:.2f})  chunk x{cr['rank']:.2f}"
                  f" (permute-all x{cr['rank_permute_all']:.2f})")
            rows.append(row)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    out = {"benchmark": "rank_ties", "torch_threads": threads, "torch": torch.__version__,
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "load_average_1m": load},
           "rows": rows}
    atomic_write_text(args.out, json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
