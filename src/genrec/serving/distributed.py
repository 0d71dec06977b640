"""Batch inference past one process: the users are sharded over a Ray cluster.

Each Ray actor loads the bundle once (from its folder, verified like every load) and runs the
single-process :func:`~genrec.serving.batch.recommend_batch` on contiguous shards of the user
list; the shards are cut at multiples of ``chunk_size``, so every user is scored in exactly
the batch it would be in one process and the output is the same file, row for row (with the
same torch thread count per process: ``threads``, 1 by default). The driver writes the
shards' rows in order, as they arrive, to one Parquet file (atomically).

Ray is an optional dependency (``pip install 'genrec[scale]'``). Without an ``address`` a
local cluster of ``num_cpus`` CPUs is started and shut down afterwards; with one (``auto`` or
``ray://host:10001``), the running cluster is used. On a multi-node cluster the bundle folder
must be readable at the same path on every node (shared storage); the output only has to be
writable by the driver.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Self

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from genrec._io import atomic_write
from genrec.data._optional import optional
from genrec.serving.batch import BatchSummary, recommend_batch
from genrec.serving.bundle import load_bundle

__all__ = ["BatchEngineConfig", "recommend_batch_distributed"]

_log = logging.getLogger(__name__)


class BatchEngineConfig(BaseModel):
    """Where batch inference runs (``genrec recommend --engine ...``)."""

    model_config = ConfigDict(extra="forbid")

    engine: Literal["local", "ray"] = "local"
    """local: this process (:func:`~genrec.serving.batch.recommend_batch`); ray: actors on a
    Ray cluster."""
    address: str | None = None
    """Ray cluster to join (``auto``, ``ray://host:10001``); None: start a local one."""
    num_cpus: int | None = Field(None, ge=1)
    """CPUs of the local cluster started when ``address`` is None (None: all)."""
    workers: int | None = Field(None, ge=1)
    """Actors, each holding one copy of the bundle (None: the cluster's CPUs)."""
    shard_chunks: int = Field(4, ge=1)
    """Chunks of ``chunk_size`` users per shard (the unit of work handed to an actor)."""
    threads: int = Field(1, ge=1)
    """torch threads of each actor (and the CPUs it reserves). Scores equal the
    single-process ones bit for bit when that process uses as many threads; with another
    thread count, float sums may differ in the last bits (about 1e-6)."""

    @model_validator(mode="after")
    def _ray_only(self) -> Self:
        given = [k for k in ("address", "num_cpus", "workers") if getattr(self, k) is not None]
        if self.engine == "local" and given:
            verb = "applies" if len(given) == 1 else "apply"
            raise ValueError(f"{', '.join(given)} only {verb} with engine ray (the local "
                             "engine runs in this process)")
        return self


class _Shard:
    """A Ray actor's state: one loaded bundle, scoring shards of users into Arrow tables."""

    def __init__(self, bundle_dir: str, threads: int) -> None:
        torch.set_num_threads(threads)
        self.bundle = load_bundle(bundle_dir)

    def run(self, users: list[str], k: int, exclude_seen: bool, chunk_size: int
            ) -> tuple[pa.Table, int]:
        with tempfile.TemporaryDirectory(prefix="genrec-shard-") as tmp:
            s = recommend_batch(self.bundle, users, Path(tmp) / "part.parquet", k=k,
                                exclude_seen=exclude_seen, chunk_size=chunk_size)
            return pq.read_table(s.path), s.cold_start


def recommend_batch_distributed(bundle_dir: str | Path, users: Sequence[str] | None,
                                out: str | Path, *, config: BatchEngineConfig | None = None,
                                k: int = 100, exclude_seen: bool = True,
                                chunk_size: int = 1024, progress: bool = False
                                ) -> BatchSummary:
    """Top-``k`` items for every user, computed by the engine of ``config``; the same file as
    :func:`~genrec.serving.batch.recommend_batch` writes.

    Args:
        bundle_dir: The bundle folder (every Ray node must be able to read it).
        users: Raw user ids, in output order (all known users when None).
        out: Parquet file to write.
        config: The engine (default: local, one process).
        k: Items per user.
        exclude_seen: Never recommend items of the user's stored history.
        chunk_size: Users scored at once.
        progress: Show a progress bar (rich) on stderr.

    Returns:
        A summary.

    Raises:
        ValueError: If ``k`` or ``chunk_size`` is below 1.
    """
    cfg = config or BatchEngineConfig()
    if k < 1 or chunk_size < 1:
        raise ValueError("k and chunk_size must be at least 1")
    if cfg.engine == "local":
        return recommend_batch(load_bundle(bundle_dir), users, out, k=k,
                               exclude_seen=exclude_seen, chunk_size=chunk_size,
                               progress=progress)
    ray = optional("ray", "--engine ray")
    bundle_dir = str(Path(bundle_dir).resolve())
    raw = ([str(u) for u in users] if users is not None else
           _known_users(bundle_dir))
    started = not ray.is_initialized()
    if started:
        ray.init(address=cfg.address, num_cpus=cfg.num_cpus if cfg.address is None else None,
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n_workers = cfg.workers or max(1, cpus // cfg.threads)
        step = chunk_size * cfg.shard_chunks
        bounds = list(range(0, len(raw), step)) + [len(raw)]
        shards = [(lo, hi) for lo, hi in itertools.pairwise(bounds) if hi > lo]
        n_workers = max(1, min(n_workers, len(shards)))
        actor = ray.remote(num_cpus=cfg.threads)(_Shard)
        pool = ray.util.ActorPool([actor.remote(bundle_dir, cfg.threads)
                                   for _ in range(n_workers)])
        _log.info("ray: %d users in %d shards on %d actors", len(raw), len(shards), n_workers)
        totals = {"rows": 0, "cold": 0}

        def write(tmp: Path) -> None:
            from rich.progress import Progress

            results = pool.map(lambda a, s: a.run.remote(raw[s[0]:s[1]], k, exclude_seen,
                                                         chunk_size), shards)
            writer = None
            with Progress(disable=not progress, transient=True) as bar:
                task = bar.add_task(f"recommend top-{k} (ray)", total=len(raw))
                try:
                    for (lo, hi), (table, cold) in zip(shards, results, strict=True):
                        if writer is None:
                            writer = pq.ParquetWriter(tmp, table.schema)
                        writer.write_table(table)
                        totals["rows"] += table.num_rows
                        totals["cold"] += cold
                        bar.update(task, advance=hi - lo)
                finally:
                    if writer is not None:
                        writer.close()
            if writer is None:  # no users: an empty file with the usual columns
                recommend_batch(load_bundle(bundle_dir), [], tmp, k=k)

        out = Path(out)
        atomic_write(out, write)
    finally:
        if started:
            ray.shutdown()
    _log.info("wrote %d rows for %d users (%d cold start) to %s with ray", totals["rows"],
              len(raw), totals["cold"], out)
    return BatchSummary(len(raw), totals["cold"], totals["rows"], out)


def _known_users(bundle_dir: str) -> list[str]:
    """All known users of a bundle, in dense-id order (as ``recommend_batch`` takes them)."""
    return pl.read_parquet(Path(bundle_dir) / "users.parquet")["user"].cast(pl.String).to_list()
