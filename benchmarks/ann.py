"""Approximate retrieval at a million items: recall@10 against exact, build time, memory, and
serving latency with 8 concurrent clients (``benchmarks/load.py``'s harness).

Data: ``genrec data synth`` histories (``--rows`` interactions) over ``--items`` items, all in
the catalogue (also those no one interacted with). Vectors: ``--vectors fitted`` (default)
fits BPR-MF (``--dim``, ``--epochs``) on those histories, so the long tail keeps vectors close
to their random initialisation, as in a real catalogue; ``--vectors random`` gives every user
and item a random unit vector instead (no structure at all: the hardest case for an index).

The index is built once. The search setting (IVF ``nprobe`` or HNSW ``ef_search``) is chosen
on 1,000 tuning users (seed 100): the smallest of ``--search-values`` whose recall@10 against
exact scoring reaches ``--target-recall``. Then, per seed, ``--queries`` other sampled users'
top-10 (seen items excluded) are compared with exact scoring (recall@10 = overlap / 10); the
headline recall is the mean over seeds with a 95% t-interval. In-process single-request
latency (exact and approximate) is measured, and exact latency at smaller catalogues, to state
the rule for when exact scoring is kept. Then the bundle (model + index) is served by
``genrec serve`` (one process, one torch/faiss thread) and loaded by ``--clients`` closed-loop
clients for ``--duration`` seconds, once per seed (the clients' request streams differ), plus
once for the same bundle without the index.

Usage::

    GENREC_THREADS=1 python benchmarks/ann.py --items 1000000 --rows 3000000 --dim 64 \
        --kind ivf --seeds 0 1 2 --clients 8 --duration 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import load  # benchmarks/load.py: the serving load-test harness

from genrec._io import atomic_write_text
from genrec.data.interactions import Columns, Dataset, IdMap, Interactions
from genrec.data.synth import SynthConfig, generate
from genrec.evaluation.stats import t_interval
from genrec.models.base import FitContext
from genrec.models.bprmf import BPRMF
from genrec.serving.ann import AnnConfig, ItemIndex, recommend_ann
from genrec.serving.bundle import export_bundle, load_bundle


def rss_mb() -> float:
    """Current resident set size of this process, MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def synthetic_dataset(n_items: int, n_rows: int, seed: int, tmp: Path) -> Dataset:
    """Synthetic histories over a catalogue of exactly ``n_items`` items."""
    res = generate(SynthConfig(n_interactions=n_rows, n_items=n_items, seed=seed), tmp)
    inter = pl.read_parquet(res.interactions)
    items = pl.read_parquet(res.items)["item"].cast(pl.String)
    item_map = IdMap(items)
    user_map = IdMap(inter["user"].cast(pl.String).unique(maintain_order=True))
    frame = pl.DataFrame({
        Columns.user: user_map.to_index(inter["user"].cast(pl.String)),
        Columns.item: item_map.to_index(inter["item"].cast(pl.String)),
        Columns.timestamp: inter["timestamp"]}).unique([Columns.user, Columns.item],
                                                       keep="first", maintain_order=True)
    return Dataset(f"synth-{n_rows}-{n_items}", Interactions(frame, len(user_map), n_items),
                   user_map, item_map)


def random_model(ds: Dataset, dim: int, seed: int) -> BPRMF:
    """A BPR-MF model whose user and item vectors are random unit vectors."""
    g = torch.Generator().manual_seed(seed)
    model = BPRMF(dim=dim)
    model.n_users_, model.n_items_ = ds.n_users, ds.n_items
    unit = torch.nn.functional.normalize
    model.user_emb_ = unit(torch.randn(ds.n_users, dim, generator=g), dim=1)        # (U, D)
    model.item_emb_ = unit(torch.randn(ds.n_items, dim, generator=g), dim=1)        # (I, D)
    model.trained_users_ = torch.ones(ds.n_users, dtype=torch.bool)
    return model


def fitted_model(ds: Dataset, dim: int, epochs: int, seed: int) -> BPRMF:
    """BPR-MF fitted on the synthetic histories."""
    model = BPRMF(dim=dim, train={"epochs": epochs, "batch_size": 8192, "device": "cpu",
                                  "progress": False})
    return model.fit(ds.interactions, FitContext(seed=seed, progress=False))


def exact_top10(model: BPRMF, ds: Dataset, users: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact top-10 (seen items excluded) of ``users`` and the ms per user it took."""
    h = ds.interactions.histories(users)
    out, t0 = [], time.perf_counter()
    for lo in range(0, len(users), 64):  # 64 x 1M scores: 256 MB at a time
        with torch.inference_mode():
            out.append(model.recommend(h.slice(lo, min(lo + 64, len(users))), 10).items)
    return np.concatenate(out), 1000 * (time.perf_counter() - t0) / len(users)


def recall_at_10(model: BPRMF, index: ItemIndex, ds: Dataset, users: np.ndarray,
                 exact: tuple[np.ndarray, float]) -> dict[str, Any]:
    """Recall@10 of the index against ``exact`` (:func:`exact_top10`), and both times."""
    h = ds.interactions.histories(users)
    t0 = time.perf_counter()
    approx = np.concatenate([recommend_ann(model, index, h.slice(lo, min(lo + 64, len(users))),
                                           10).items for lo in range(0, len(users), 64)])
    t_ann = time.perf_counter() - t0
    hits = sum(len(set(a) & set(e)) for a, e in zip(approx, exact[0], strict=True))
    return {"recall_at_10": hits / (10 * len(users)),
            "batch_ms_per_user_exact": exact[1],
            "batch_ms_per_user_ann": 1000 * t_ann / len(users)}


def single_request_latency(model: BPRMF, index: ItemIndex | None, ds: Dataset,
                           users: np.ndarray) -> dict[str, float]:
    """p50 / p99 ms of one request at a time, in process, through the service's path."""
    times = []
    for u in users:
        h = ds.interactions.histories(np.array([u]))
        t0 = time.perf_counter()
        if index is None:
            with torch.inference_mode():
                model.recommend(h, 10)
        else:
            recommend_ann(model, index, h, 10)
        times.append(1000 * (time.perf_counter() - t0))
    t = np.sort(times)
    return {"p50_ms": round(float(np.percentile(t, 50)), 3),
            "p99_ms": round(float(np.percentile(t, 99)), 3)}


def catalogue_sweep(model: BPRMF, ds: Dataset, sizes: list[int], users: np.ndarray
                    ) -> list[dict[str, Any]]:
    """Exact single-request latency at smaller catalogues (the first ``n`` items)."""
    out = []
    for n in sizes:
        sub = BPRMF(dim=model.config.dim)
        sub.n_users_, sub.n_items_ = model.n_users_, n
        sub.user_emb_, sub.item_emb_ = model.user_emb_, model.item_emb_[:n].contiguous()
        sub.trained_users_ = model.trained_users_
        times = []
        for u in users:
            h = ds.interactions.histories(np.array([u]))
            h = type(h)(h.users, np.array([0, 0]), h.items[:0], n)  # no history at this size
            t0 = time.perf_counter()
            with torch.inference_mode():
                sub.recommend(h, 10)
            times.append(1000 * (time.perf_counter() - t0))
        out.append({"n_items": n, "exact_p50_ms": round(float(np.median(times)), 3),
                    "exact_p99_ms": round(float(np.percentile(times, 99)), 3)})
    return out


def serve_load(bundle: Path, clients: int, duration: float, seed: int, out: Path) -> dict:
    """One run of ``benchmarks/load.py`` against ``genrec serve bundle``."""
    code = load.main(["--bundle", str(bundle), "--clients", str(clients), "--duration",
                      str(duration), "--malformed", "0", "--seed", str(seed), "--threads", "1",
                      "--warmup", "3", "--out", str(out)])
    report = json.loads(out.read_text())
    report["exit_code"] = code
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write ``benchmarks/results/synthetic/ann*.json``."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--rows", type=int, default=3_000_000, help="synthetic interactions")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--vectors", choices=["random", "fitted"], default="fitted")
    p.add_argument("--epochs", type=int, default=2, help="with --vectors fitted")
    p.add_argument("--kind", choices=["hnsw", "ivf"], default="ivf")
    p.add_argument("--m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef-search", type=int, default=256)
    p.add_argument("--nprobe", type=int, default=64)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--search-values", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512],
                   help="nprobe (ivf) or ef_search (hnsw) values tried, smallest first")
    p.add_argument("--target-recall", type=float, default=0.99)
    p.add_argument("--queries", type=int, default=1000, help="users per recall measurement")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--no-exact-load", action="store_true",
                   help="skip the load test of the same bundle without the index")
    p.add_argument("--sweep", type=int, nargs="*", default=[10_000, 100_000, 200_000, 1_000_000])
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("GENREC_THREADS", "1")))
    cfg = AnnConfig(kind=a.kind, m=a.m, ef_construction=a.ef_construction,
                    ef_search=a.ef_search, nprobe=a.nprobe, min_items=0)
    report: dict[str, Any] = {
        "benchmark": "ann", "command": "python benchmarks/ann.py " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "items": a.items, "rows": a.rows, "dim": a.dim, "vectors": a.vectors,
        "ann": cfg.model_dump(), "seeds": a.seeds, "queries": a.queries,
        "environment": {"python": platform.python_version(), "machine": platform.machine(),
                        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "load_avg_start": os.getloadavg()}}
    with tempfile.TemporaryDirectory(prefix="genrec-ann-") as tmpdir:
        tmp = Path(tmpdir)
        t0 = time.perf_counter()
        ds = synthetic_dataset(a.items, a.rows, 0, tmp / "synth")
        report["dataset"] = {"users": ds.n_users, "items": ds.n_items,
                             "interactions": len(ds.interactions),
                             "seconds": round(time.perf_counter() - t0, 1)}
        print(f"dataset {ds!r}", file=sys.stderr)
        t0 = time.perf_counter()
        model = (random_model(ds, a.dim, 0) if a.vectors == "random"
                 else fitted_model(ds, a.dim, a.epochs, 0))
        report["model_seconds"] = round(time.perf_counter() - t0, 1)
        # Build once; pick the search setting on tuning users (seed 100), the smallest that
        # reaches the target recall there; report on other users (the seeds).
        rss0 = rss_mb()
        t0 = time.perf_counter()
        index = ItemIndex.build(model.item_vectors(), cfg)
        report["build_seconds"] = round(time.perf_counter() - t0, 1)
        report["index_rss_growth_mb"] = round(rss_mb() - rss0, 1)
        report["item_vectors_mb"] = round(ds.n_items * a.dim * 4 / 1e6, 1)
        print(f"index built in {report['build_seconds']} s", file=sys.stderr)
        knob = "ef_search" if a.kind == "hnsw" else "nprobe"
        tune_users = np.random.default_rng(100).choice(ds.n_users, a.queries, replace=False)
        sweep = []
        tune_exact = exact_top10(model, ds, tune_users)
        for value in a.search_values:
            index = ItemIndex(index.index, cfg.model_copy(update={knob: value}),
                              index.max_norm)
            if a.kind == "ivf":
                index.index.nprobe = value
            r = recall_at_10(model, index, ds, tune_users, tune_exact)
            sweep.append({knob: value, **r})
            print(json.dumps(sweep[-1]), file=sys.stderr)
            if r["recall_at_10"] >= a.target_recall:
                break
        report["tuning_sweep"] = sweep
        chosen = sweep[-1][knob]
        cfg = cfg.model_copy(update={knob: chosen})
        report["ann"] = cfg.model_dump()
        report["chosen"] = {knob: chosen}
        index = ItemIndex(index.index, cfg, index.max_norm)
        per_seed = []
        for seed in a.seeds:
            users = np.random.default_rng(seed).choice(ds.n_users, a.queries, replace=False)
            row = {"seed": seed, **recall_at_10(model, index, ds, users,
                                                exact_top10(model, ds, users)),
                   "single_request_ann": single_request_latency(model, index, ds, users[:200])}
            per_seed.append(row)
            print(json.dumps(row), file=sys.stderr)
        report["per_seed"] = per_seed
        rec = [r["recall_at_10"] for r in per_seed]
        report["recall_at_10"] = {"mean": float(np.mean(rec)), "min": float(np.min(rec)),
                                  "ci95": list(t_interval(rec)) if len(rec) > 1 else None}
        users = np.random.default_rng(99).choice(ds.n_users, 100, replace=False)
        report["single_request_exact"] = single_request_latency(model, None, ds, users)
        report["exact_by_catalogue_size"] = catalogue_sweep(
            model, ds, [n for n in a.sweep if n <= ds.n_items], users)
        hist = ds.interactions
        t0 = time.perf_counter()
        exact_bundle = export_bundle(model, ds, tmp / "bundle-exact", histories=hist)
        report["export_seconds_exact"] = round(time.perf_counter() - t0, 1)
        bundle = export_bundle(model, ds, tmp / "bundle", histories=hist, ann=index)
        report["index_file_mb"] = round((bundle / "ann.faiss").stat().st_size / 1e6, 1)
        del index, model
        rss0 = rss_mb()
        loaded = load_bundle(bundle)
        report["bundle_load_rss_growth_mb"] = round(rss_mb() - rss0, 1)
        assert loaded.ann is not None and loaded.ann.config == cfg
        del loaded
        loads = []
        for seed in a.seeds:
            r = serve_load(bundle, a.clients, a.duration, seed, tmp / f"load-{seed}.json")
            loads.append({"seed": seed, "throughput_rps": r["throughput_rps"],
                          **{f"{q}_ms": r["latency_ms_valid"][q] for q in ("p50", "p95", "p99")},
                          "requests": r["requests"], "5xx": r["server_errors_5xx"],
                          "server_side_latency": r.get("server_side_latency"),
                          "load_avg": os.getloadavg()})
            print(json.dumps(loads[-1]), file=sys.stderr)
        p99 = [r["p99_ms"] for r in loads]
        report["serving_ann"] = {"runs": loads, "p99_ms_mean": float(np.mean(p99)),
                                 "p99_ms_ci95": list(t_interval(p99)) if len(p99) > 1 else None,
                                 "clients": a.clients, "duration_s": a.duration}
        if not a.no_exact_load:
            r = serve_load(exact_bundle, a.clients, a.duration, a.seeds[0], tmp / "load-x.json")
            report["serving_exact"] = {
                "throughput_rps": r["throughput_rps"],
                **{f"{q}_ms": r["latency_ms_valid"][q] for q in ("p50", "p95", "p99")},
                "requests": r["requests"], "5xx": r["server_errors_5xx"]}
    report["peak_rss_mb_this_process"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["environment"]["load_avg_end"] = os.getloadavg()
    report["targets"] = {"recall_at_10_min": 0.99, "p99_ms_max": 25.0,
                         "recall_met": report["recall_at_10"]["mean"] >= 0.99,
                         "p99_met": report["serving_ann"]["p99_ms_mean"] <= 25.0}
    out = a.out or ROOT / "benchmarks" / "results" / "synthetic" / f"ann-{a.kind}-{a.vectors}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("recall_at_10", "serving_ann", "targets")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
