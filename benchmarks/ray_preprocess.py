"""Reading and preprocessing on Ray against the single-process path: wall and CPU time.

Data: ``genrec data synth`` at each of ``--rows`` interactions (items: 1% of rows, users:
rows // 25),
one Parquet file of about 1M-row row groups (the shards). Both paths read it, validate it,
number ids, dedup (first event) and run iterative 5-core (``--min-user``/``--min-item``); the
Ray path runs on a local cluster of ``--workers`` CPUs. Both results are compared (users,
items, rows, order, id maps and log must be identical) before any time is written.

Times, per repeat, local and Ray interleaved in one run (so the ratio comes from the same
machine state): wall seconds; CPU seconds of this process plus, for Ray, of every process the
cluster started (the raylet, GCS and the workers: sampled from /proc every 0.1 s, so an actor
that exits loses at most its last 0.1 s); and the seconds to start the cluster, which a job on
a running cluster does not pay (it is outside the Ray wall time).

Usage::

    GENREC_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/ray_preprocess.py \
        --rows 5000000 20000000 --workers 2 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

import polars as pl
import pyarrow.parquet as pq
import ray
import torch

from genrec._io import atomic_write_text
from genrec.data.interactions import Dataset
from genrec.data.sources import DataConfig, load_data
from genrec.data.synth import SynthConfig, generate

ROOT = Path(__file__).resolve().parents[1]
_TICK = os.sysconf("SC_CLK_TCK")


def _descendants_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of every live descendant of this process, by pid."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / _TICK
    me, out = os.getpid(), {}
    for pid, seconds in cpu.items():
        p = pid
        while p in parent and p not in (0, 1, me):
            p = parent[p]
        if p == me and pid != me:
            out[pid] = seconds
    return out


class CpuSampler:
    """Keeps the last seen CPU seconds of every descendant process while it runs."""

    def __init__(self) -> None:
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen |= _descendants_cpu()
            self._stop.wait(0.1)

    def __enter__(self) -> Self:
        self.seen = _descendants_cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.seen |= _descendants_cpu()


class Phases(logging.Handler):
    """Keeps the phase seconds that :func:`genrec.data.distributed.load_distributed` logs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.last: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.args, tuple) and len(record.args) == 2 and isinstance(
                record.args[1], dict):
            self.last = dict(record.args[1])


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _same(a: Dataset, b: Dataset) -> bool:
    return (json.dumps(a.log) == json.dumps(b.log) and a.name == b.name
            and a.user_map.raw.equals(b.user_map.raw) and a.item_map.raw.equals(b.item_map.raw)
            and a.interactions.frame.equals(b.interactions.frame)
            and a.items.equals(b.items) and a.users.equals(b.users))


def _one_size(rows: int, items: int, args: argparse.Namespace, pre: dict[str, Any],
              phases: Phases) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="genrec-raypre-") as tmp:
        t0 = time.perf_counter()
        res = generate(SynthConfig(n_interactions=rows, n_items=items), Path(tmp))
        meta = pq.ParquetFile(res.interactions).metadata
        out: dict[str, Any] = {"data": {
            "rows": res.n_interactions, "users": res.n_users, "items": res.n_items,
            "row_groups": meta.num_row_groups,
            "synth_seconds": round(time.perf_counter() - t0, 2)}, "repeats": []}
        print(json.dumps(out["data"]), flush=True)
        local_cfg = DataConfig(path=res.interactions, preprocess=pre)
        ray_cfg = DataConfig(path=res.interactions, preprocess=pre, engine="ray",
                             workers=args.workers)
        for rep in range(args.repeats):
            t, c = time.perf_counter(), _self_cpu()
            local = load_data(local_cfg)
            local_wall, local_cpu = time.perf_counter() - t, _self_cpu() - c
            with CpuSampler() as sampler:
                before = dict(sampler.seen)
                t, c = time.perf_counter(), _self_cpu()
                on_ray = load_data(ray_cfg)
                ray_wall, ray_driver_cpu = time.perf_counter() - t, _self_cpu() - c
            cluster_cpu = sum(v - before.get(pid, 0.0) for pid, v in sampler.seen.items())
            same = _same(local, on_ray)
            run = {"repeat": rep, "identical": same,
                   "result": {"users": local.n_users, "items": local.n_items,
                              "rows": len(local.interactions),
                              "k_core_rounds": local.log[-1]["params"].get("rounds")},
                   "local": {"wall_s": round(local_wall, 2), "cpu_s": round(local_cpu, 2)},
                   "ray": {"wall_s": round(ray_wall, 2),
                           "cpu_s": round(ray_driver_cpu + cluster_cpu, 2),
                           "driver_cpu_s": round(ray_driver_cpu, 2),
                           "cluster_cpu_s": round(cluster_cpu, 2),
                           "phases_s": phases.last},
                   "ray_over_local_wall": round(ray_wall / local_wall, 2),
                   "load_avg": os.getloadavg()}
            print(json.dumps(run), flush=True)
            if not same:
                raise SystemExit("the Ray dataset differs from the single-process one")
            out["repeats"].append(run)
            del local, on_ray
    best = {k: min(r[k]["wall_s"] for r in out["repeats"]) for k in ("local", "ray")}
    out["best_wall_s"] = best
    out["ray_over_local_wall_best"] = round(best["ray"] / best["local"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[5_000_000])
    ap.add_argument("--items-per-row", type=float, default=0.01,
                    help="catalogue size as a share of rows (5M rows: 50,000 items)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--min-user", type=int, default=5)
    ap.add_argument("--min-item", type=int, default=5)
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "synthetic" / "ray-preprocess.json")
    args = ap.parse_args()
    pre = {"dedup": "first", "min_user_interactions": args.min_user,
           "min_item_interactions": args.min_item}
    report: dict[str, Any] = {
        "command": "GENREC_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/ray_preprocess.py "
                   + " ".join(sys.argv[1:]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "polars_threads": pl.thread_pool_size(), "ray": ray.__version__,
                    "load_avg_start": os.getloadavg(),
                    "note": "shared 2-core box: other jobs ran at the same time (load avg)"},
        "preprocess": pre, "workers": args.workers, "sizes": []}
    phases = Phases()
    logging.getLogger("genrec.data.distributed").addHandler(phases)
    logging.getLogger("genrec.data.distributed").setLevel(logging.INFO)
    t = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    report["ray_cluster_start_seconds"] = round(time.perf_counter() - t, 2)
    try:
        for rows in args.rows:
            report["sizes"].append(_one_size(rows, max(2, int(rows * args.items_per_row)),
                                             args, pre, phases))
    finally:
        ray.shutdown()
    report["machine"]["load_avg_end"] = os.getloadavg()
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(json.dumps({s["data"]["rows"]: s["ray_over_local_wall_best"]
                      for s in report["sizes"]}))


if __name__ == "__main__":
    main()
