"""CFRAG-style collaborative retrieval: does the retrieved context hold the held-out item?

Usage::

    GENREC_DATA_DIR=../shared/datasets python benchmarks/collab.py --dataset ml-100k
    GENREC_DATA_DIR=../shared/datasets python benchmarks/collab.py --dataset amazon-beauty

On every test user of the protocol (leave-one-out; history = train + valid), ``M`` context
items come from each source, and we count how often they contain the test item (``hit``),
an item of its category (``category_hit``; Beauty: the leaf category, ML-100K: the same
genre set), and the share of context items in that category (``category_precision``):

- ``own_history``: the user's ``M`` most recent items (what a prompt shows without retrieval);
- ``popular``: the ``M`` most popular training items the user has not seen;
- ``collab_cf``: :class:`~genrec.llm.collab.CollabRetriever` with ``relevance=0`` (items of
  the 20 most similar users, weighted by similarity);
- ``collab``: the same, items weighted by their relevance to the user's 10 recent items
  (the default, what the prompts use);
- ``candidate``: the candidate model's top-``M`` (EASE, the reference the context is added to),
  and the overlap of each source with the candidate's top-20 (context the LLM already sees).

The retrieval index is the training split only. Paired tests (collab vs each other source) use
the per-user hit indicators. Writes ``benchmarks/results/<dataset>/<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from genrec.config import ExperimentConfig
from genrec.evaluation.catalogue import Catalogue
from genrec.evaluation.stats import paired_tests
from genrec.llm.collab import CollabRetriever
from genrec.runs import experiment

ROOT = Path(__file__).resolve().parents[1]


def categories(catalog: Catalogue) -> np.ndarray:
    """One category label per item (-1: none): the leaf category, else the genre set."""
    field = "categories" if "categories" in catalog.fields else "genres"
    keys: dict[object, int] = {}
    out = np.full(catalog.n_items, -1, dtype=np.int64)
    for i in range(catalog.n_items):
        vals = catalog.values(i, field)
        if vals:
            key = vals[-1] if field == "categories" else tuple(sorted(vals))
            out[i] = keys.setdefault(key, len(keys))
    return out


def measure(items: np.ndarray, targets: np.ndarray, cat: np.ndarray,
            cand20: np.ndarray) -> dict[str, np.ndarray]:
    """Per-user indicators of a ``(B, M)`` context (-1 pads)."""
    valid = items >= 0
    tcat = cat[targets][:, None]
    icat = np.where(valid, cat[np.maximum(items, 0)], -2)
    same = (icat == tcat) & (tcat >= 0)
    in_cand = np.array([np.isin(r[r >= 0], c).sum() for r, c in zip(items, cand20, strict=True)])
    n = np.maximum(valid.sum(1), 1)
    return {"hit": (items == targets[:, None]).any(1).astype(float),
            "category_hit": same.any(1).astype(float),
            "category_precision": same.sum(1) / n,
            "overlap_with_candidates": in_cand / n,
            "size": valid.sum(1).astype(float)}


def main() -> None:
    """Fit the index and the candidate, retrieve, measure, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--name", default="collab")
    ap.add_argument("--m", type=int, default=10, help="context items per source")
    ap.add_argument("--neighbours", type=int, default=20)
    ap.add_argument("--relevance", type=float, default=1.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ExperimentConfig.model_validate({
            "dataset": {"name": args.dataset}, "protocol": {"cutoffs": [10, 20]},
            "models": [{"kind": "ease"}], "output": tmp, "save_models": False,
            "checkpoints": False})
        data = experiment.prepare(cfg, write=False)
        model, row, _ = experiment.fit_and_evaluate(cfg.models[0], data, cfg)
    ds, test, train = data.dataset, data.test_set, data.split.train
    catalog = Catalogue.from_dataset(ds)
    cat = categories(catalog)
    h = test.histories
    targets = test.target_items[test.target_indptr[:-1]]
    m = args.m
    cand = model.recommend(h, 20).items                                 # (B, 20)

    sources: dict[str, np.ndarray] = {}
    own = h.truncate(m)
    sources["own_history"] = np.full((len(h), m), -1, np.int64)
    for r in range(len(h)):
        row_items = own.items[own.indptr[r]: own.indptr[r + 1]][::-1]   # most recent first
        sources["own_history"][r, : len(row_items)] = row_items
    pop = np.argsort(-train.item_counts(), kind="stable")
    seen = h.to_csr().tolil().rows
    sources["popular"] = np.stack([np.array([i for i in pop[: m + len(s)] if i not in set(s)]
                                            [:m]) for s in seen])
    timing: dict[str, float] = {}
    for name, rel in (("collab_cf", 0.0), ("collab", args.relevance)):
        t0 = time.perf_counter()
        r = CollabRetriever(neighbours=args.neighbours, items=m, relevance=rel).fit(train)
        ctx = r.retrieve(h)
        timing[name] = time.perf_counter() - t0
        sources[name] = ctx.items
    sources["candidate"] = cand[:, :m]

    per = {k: measure(v, targets, cat, cand) for k, v in sources.items()}
    summary = {k: {q: float(a.mean()) for q, a in v.items()} for k, v in per.items()}
    tests = {f"collab_vs_{o}": {q: paired_tests(per["collab"][q], per[o][q])
                                for q in ("hit", "category_hit")}
             for o in ("own_history", "popular", "collab_cf")}
    res = {
        "dataset": ds.name, "protocol_text": cfg.protocol.describe(), "users": len(h),
        "m": m, "neighbours": args.neighbours, "relevance": args.relevance,
        "category_field": "categories (leaf)" if "categories" in catalog.fields
        else "genres (the same genre set)",
        "candidate": {"model": "ease", "test": row["test"]},
        "sources": summary, "paired_tests": tests,
        "retrieval_seconds": timing,
        "retrieval_ms_per_user": {k: 1000 * v / len(h) for k, v in timing.items()},
        "targets": {"collab_hit>own_history_hit": summary["collab"]["hit"]
                    > summary["own_history"]["hit"],
                    "collab_hit>popular_hit": summary["collab"]["hit"]
                    > summary["popular"]["hit"],
                    "collab_category_hit>own_history": summary["collab"]["category_hit"]
                    > summary["own_history"]["category_hit"],
                    "collab_category_hit>popular": summary["collab"]["category_hit"]
                    > summary["popular"]["category_hit"]},
        "benchmark": {"command": "python benchmarks/collab.py " + " ".join(sys.argv[1:]),
                      "cpus": os.cpu_count(), "processor": platform.machine(),
                      "load_average_at_end": os.getloadavg()},
    }
    dest = ROOT / "benchmarks" / "results" / ds.name / f"{args.name}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(res, indent=2) + "\n")
    for k, v in summary.items():
        print(f"{ds.name} {k:12s} hit@{m} {v['hit']:.4f} category_hit {v['category_hit']:.4f} "
              f"category_precision {v['category_precision']:.4f} overlap "
              f"{v['overlap_with_candidates']:.3f}")
    print(f"-> {dest}")


if __name__ == "__main__":
    main()
