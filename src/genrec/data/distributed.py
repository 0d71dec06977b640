"""Reading and preprocessing past one process: the shards of a table on a Ray cluster.

The result is the :class:`Dataset` the single-process path gives (same users, items, rows,
row order, id maps and ``dataset.log``), computed in four steps:

1. **Read.** ``workers`` Ray actors each read and validate a contiguous block of the shards
   (:func:`~genrec.data.sharded.read_shard`) and keep the valid rows. The driver adds up the
   drop counts by reason and numbers users and items by first appearance in table order from
   each shard's ids in order of first appearance (a few rows per id, not the table).
2. **Shuffle by user.** Each actor maps its rows to dense ids and cuts them into one piece per
   actor by user-id range (ranges balanced by rows); actor ``p`` joins its pieces in shard order
   (the table's order, per user) and sorts them by user then time. Concatenated in ``p`` order
   the partitions are the single-process table, row for row.
3. **Preprocess.** Row filters, dedup and the per-user history cap are local to a partition
   (they look at one user's rows). Iterative k-core counts items on each partition, sums the
   counts on the driver and hands them back each round; users are counted locally.
4. **Collect.** Ids are compacted (the survivors keep their first-appearance order) and the
   partitions come back to the driver in order.

Ray is optional (``pip install 'genrec[scale]'``). Without a running cluster in this process
(``ray.init`` done by the caller) a local one of ``workers`` CPUs is started and shut down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from genrec.data._optional import optional
from genrec.data._parsing import ITEM, RATING, TIME, USER, DataError
from genrec.data.interactions import Dataset, IdMap, Interactions
from genrec.data.preprocess import (
    PreprocessConfig,
    dedup_rows,
    implicit_rows,
    max_history_rows,
    step_entry,
)
from genrec.data.readers import time_order_report
from genrec.data.sharded import Shard, list_shards, read_entry, read_shard

__all__ = ["load_distributed"]

_log = logging.getLogger(__name__)

Columns = dict[str, np.ndarray]


class _Worker:
    """A Ray actor: reads a block of shards, then holds one partition of users."""

    def __init__(self, fmt: str, columns: Mapping[str, str] | None, sep: str | None,
                 keep_events: list[str] | None) -> None:
        self.fmt, self.columns, self.sep, self.keep_events = fmt, columns, sep, keep_events
        self.shards: list[pl.DataFrame] = []
        self.frame = pl.DataFrame()
        self.keep = np.ones(0, dtype=bool)

    def ready(self) -> bool:
        return True

    def read(self, shards: list[Shard]) -> list[tuple[int, dict[str, int], list[str],
                                                      pl.DataFrame, pl.Series]]:
        """Per shard: valid rows, drops by reason, columns, users (with rows) and items in
        order of first appearance."""
        out = []
        for shard in shards:
            frame, drops = read_shard(shard, self.fmt, self.columns, sep=self.sep,
                                      keep_events=self.keep_events)
            self.shards.append(frame)
            out.append((frame.height, drops, frame.columns,
                        frame.group_by(USER, maintain_order=True).len(),
                        frame[ITEM].unique(maintain_order=True)))
        return out

    def split(self, user_map: IdMap, item_map: IdMap, bounds: np.ndarray
              ) -> list[Columns] | Columns:
        """Each held shard on dense ids, cut into one piece per user range (shard-major)."""
        n_parts = bounds.size - 1
        pieces: list[Columns] = []
        for frame in self.shards:
            cols = {USER: user_map.to_index(frame[USER]), ITEM: item_map.to_index(frame[ITEM])}
            cols |= {c: frame[c].to_numpy() for c in (TIME, RATING) if c in frame.columns}
            part = np.searchsorted(bounds, cols[USER], side="right") - 1
            order = np.argsort(part, kind="stable")  # stable: each piece keeps table order
            ends = np.cumsum(np.bincount(part, minlength=n_parts))
            for lo, hi in zip(np.concatenate([[0], ends[:-1]]), ends, strict=True):
                rows = order[lo:hi]
                pieces.append({c: v[rows] for c, v in cols.items()})
        self.shards = []
        return pieces if len(pieces) != 1 else pieces[0]

    def gather(self, *pieces: Columns) -> dict[str, Any] | None:
        """Join this partition's pieces (in table order), sort it by user then time, and
        return its part of the time-order report."""
        names = list(pieces[0])
        frame = pl.DataFrame({c: np.concatenate([p[c] for p in pieces]) for c in names})
        stats = time_order_report(frame)
        if TIME not in frame.columns:  # file order is time order, as Dataset.from_raw does
            frame = frame.with_columns(pl.int_range(pl.len()).over(USER).alias(TIME))
        keep = [USER, ITEM, TIME] + ([RATING] if RATING in frame.columns else [])
        self.frame = frame.select(keep).sort([USER, TIME], maintain_order=True)
        return stats

    def implicit(self, threshold: float) -> int:
        self.frame = implicit_rows(self.frame, threshold)
        return self.frame.height

    def dedup(self, n_items: int, keep: Literal["first", "last"]) -> int:
        self.frame = dedup_rows(self.frame, n_items, keep)
        return self.frame.height

    def item_counts(self, n_items: int) -> np.ndarray:
        """Rows per item over this partition (the start of k-core)."""
        self.keep = np.ones(self.frame.height, dtype=bool)
        return np.bincount(self.frame[ITEM].to_numpy(), minlength=n_items)

    def k_core_round(self, item_counts: np.ndarray | None, min_user: int, min_item: int,
                     n_users: int, n_items: int) -> tuple[int, np.ndarray | None]:
        """One k-core round given the global item counts: the rows left here and, for the
        next round, this partition's item counts."""
        users, items = self.frame[USER].to_numpy(), self.frame[ITEM].to_numpy()
        if item_counts is not None:
            self.keep &= item_counts[items] >= min_item
        if min_user > 1:  # a partition holds all rows of its users: local counts are global
            self.keep &= np.bincount(users[self.keep], minlength=n_users)[users] >= min_user
        counts = np.bincount(items[self.keep], minlength=n_items) if min_item > 1 else None
        return int(self.keep.sum()), counts

    def k_core_done(self) -> int:
        self.frame = self.frame.filter(pl.Series(self.keep))
        return self.frame.height

    def max_history(self, n: int) -> int:
        self.frame = max_history_rows(self.frame, n)
        return self.frame.height

    def present(self, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
        """Which users and items still have rows here (boolean masks over the ids)."""
        return (np.bincount(self.frame[USER].to_numpy(), minlength=n_users) > 0,
                np.bincount(self.frame[ITEM].to_numpy(), minlength=n_items) > 0)

    def collect(self, u_new: np.ndarray, i_new: np.ndarray) -> Columns:
        """This partition on the compacted ids."""
        out = {c: self.frame[c].to_numpy() for c in self.frame.columns}
        out[USER], out[ITEM] = u_new[out[USER]], i_new[out[ITEM]]
        return out


def _get(ray: Any, refs: Any) -> Any:
    """``ray.get``, raising a worker's data or config error as itself (not wrapped in Ray's
    traceback), so that the message is the single path's."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, ValueError):  # DataError included
            raise e.cause from None
        raise


def _bounds(counts: np.ndarray, n_parts: int) -> np.ndarray:
    """User-id cut points ``0 = b_0 <= ... <= b_n = n_users`` with about equal rows between."""
    ends = np.cumsum(counts)
    cuts = np.searchsorted(ends, ends[-1] * np.arange(1, n_parts) / n_parts, side="left") + 1
    return np.concatenate([[0], np.minimum(cuts, counts.size), [counts.size]]).astype(np.int64)


def _time_order(parts: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The partitions' time-order reports (disjoint users) as the whole table's."""
    got = [p for p in parts if p is not None]
    if not got:
        return None
    return {"step": "time_order",
            "users_out_of_order": sum(p["users_out_of_order"] for p in got),
            "tied_events": sum(p["tied_events"] for p in got),
            "negative_times": sum(p["negative_times"] for p in got),
            "first": min(p["first"] for p in got), "last": max(p["last"] for p in got)}


def _remap(table: pl.DataFrame, col: str, new: np.ndarray) -> pl.DataFrame:
    """A feature table on compacted ids (as :meth:`Dataset.subset` does it)."""
    if table.is_empty():
        return table
    ids = new[table[col].to_numpy()]
    return table.with_columns(pl.Series(col, ids)).filter(pl.col(col) >= 0).sort(col)


def load_distributed(path: str | Path, fmt: str, *, columns: Mapping[str, str] | None = None,
                     sep: str | None = None, keep_events: list[str] | None = None,
                     name: str, preprocess: PreprocessConfig | None = None,
                     workers: int | None = None, log: Sequence[dict[str, Any]] = (),
                     attach: Callable[[Dataset], Dataset] | None = None) -> Dataset:
    """Read a sharded table and preprocess it on a Ray cluster.

    Args:
        path: A CSV/TSV/Parquet file or a glob pattern of them (see
            :mod:`genrec.data.sharded`).
        fmt: ``csv``, ``tsv`` or ``parquet``.
        columns: Our column -> the file's column (see :func:`~genrec.data.readers.read_csv`).
        sep: csv/tsv field separator.
        keep_events: Keep only these event types.
        name: Dataset name.
        preprocess: The steps (default: dedup on the first event).
        workers: Ray actors (None: the cluster's CPUs; a local cluster of that many CPUs is
            started when none is running in this process).
        log: Entries to put first in ``dataset.log`` (the load entry).
        attach: Attaches feature tables to the raw dataset (whose interaction table is empty:
            only its id maps and log are there), as the single path does before preprocessing.

    Returns:
        The dataset, identical to the single-process path's.

    Raises:
        DataError: If a file is missing or unusable, or no row is valid.
        ValueError: If a preprocessing step drops every row or needs a missing column.
    """
    cfg = preprocess or PreprocessConfig()
    ray = optional("ray", "dataset.engine: ray")
    shards = list_shards(path, fmt)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    pool: list[Any] = []
    try:
        cpus = float(ray.cluster_resources().get("CPU", 1))
        n = workers or max(1, int(cpus))
        actor = ray.remote(num_cpus=min(1.0, cpus / n))(_Worker)
        clock = time.perf_counter()
        pool = [actor.remote(fmt, columns, sep, keep_events) for _ in range(n)]
        _get(ray, [w.ready.remote() for w in pool])
        seconds = {"start": time.perf_counter() - clock}
        blocks = [list(b) for b in np.array_split(np.arange(len(shards)), n)]
        _log.info("ray: %d shards of %s on %d workers", len(shards), path, n)
        reads = _get(ray, [w.read.remote([shards[i] for i in b])
                         for w, b in zip(pool, blocks, strict=True)])
        per_shard = [r for block in reads for r in block]
        seconds["read"] = time.perf_counter() - clock - sum(seconds.values())
        if len({tuple(r[2]) for r in per_shard}) > 1:
            raise DataError(path, "the files have different columns: "
                                  f"{sorted({tuple(r[2]) for r in per_shard})}")
        kept = sum(r[0] for r in per_shard)
        entries = [*log, read_entry(path, kept, [r[1] for r in per_shard])]
        has = set(per_shard[0][2])
        users = pl.concat([r[3] for r in per_shard]).group_by(USER, maintain_order=True).agg(
            pl.col("len").sum())
        user_map = IdMap(users[USER])
        item_map = IdMap(pl.concat([r[4] for r in per_shard]).unique(maintain_order=True))
        n_users, n_items = len(user_map), len(item_map)
        bounds = _bounds(users["len"].to_numpy(), n)
        u_map, i_map = ray.put(user_map), ray.put(item_map)
        grid: list[list[Any]] = [[] for _ in range(n)]  # partition -> pieces in table order
        for w, b in zip(pool, blocks, strict=True):
            if not b:
                continue
            refs = w.split.options(num_returns=len(b) * n).remote(u_map, i_map, bounds)
            refs = refs if isinstance(refs, list) else [refs]
            for s in range(len(b)):
                for p in range(n):
                    grid[p].append(refs[s * n + p])
        stats = _get(ray, [w.gather.remote(*grid[p]) for p, w in enumerate(pool)])
        del grid  # the pieces leave the object store
        seconds["shuffle"] = time.perf_counter() - clock - sum(seconds.values())
        if TIME in has and (order_entry := _time_order(stats)) is not None:
            entries.append(order_entry)
        ds = Dataset(name, Interactions(pl.DataFrame(
            {USER: [], ITEM: [], TIME: []}, schema={USER: pl.Int64, ITEM: pl.Int64,
                                                    TIME: pl.Int64}), n_users, n_items),
            user_map, item_map, order="timestamp" if TIME in has else "position",
            log=entries)
        if attach is not None:
            ds = attach(ds)
        rows = kept

        def step(step_name: str, counts: list[int], **params: object) -> None:
            nonlocal rows
            ds.log.append(step_entry(name, step_name, rows, sum(counts), **params))
            rows = sum(counts)

        if cfg.rating_threshold is not None:
            if RATING not in has:
                raise ValueError(f"{name}: rating_threshold set but the dataset has no ratings")
            step("implicit", _get(ray, [w.implicit.remote(cfg.rating_threshold) for w in pool]),
                 threshold=cfg.rating_threshold)
        if cfg.dedup != "none":
            step("dedup", _get(ray, [w.dedup.remote(n_items, cfg.dedup) for w in pool]),
                 keep=cfg.dedup)
        lo_u, lo_i = cfg.min_user_interactions, cfg.min_item_interactions
        if lo_u > 1 or lo_i > 1:
            counts = sum(_get(ray, [w.item_counts.remote(n_items) for w in pool]))
            rounds, at_start = 0, rows
            while True:
                rounds += 1
                shared = ray.put(counts if lo_i > 1 else None)  # one copy for all workers
                got = _get(ray, [w.k_core_round.remote(shared, lo_u, lo_i, n_users, n_items)
                               for w in pool])
                left = sum(g[0] for g in got)
                counts = sum(g[1] for g in got) if lo_i > 1 else None
                if left == at_start:
                    break
                at_start = left
            step("k_core", _get(ray, [w.k_core_done.remote() for w in pool]), min_user=lo_u,
                 min_item=lo_i, rounds=rounds)
        if cfg.max_history_length is not None:
            step("max_history", _get(ray, [w.max_history.remote(cfg.max_history_length)
                                         for w in pool]), n=cfg.max_history_length)
        seconds["preprocess"] = time.perf_counter() - clock - sum(seconds.values())
        present = _get(ray, [w.present.remote(n_users, n_items) for w in pool])
        users_left = np.flatnonzero(np.logical_or.reduce([p[0] for p in present]))
        items_left = np.flatnonzero(np.logical_or.reduce([p[1] for p in present]))
        u_new = np.full(n_users, -1, dtype=np.int64)
        u_new[users_left] = np.arange(users_left.size)
        i_new = np.full(n_items, -1, dtype=np.int64)
        i_new[items_left] = np.arange(items_left.size)
        u_ref, i_ref = ray.put(u_new), ray.put(i_new)
        parts = _get(ray, [w.collect.remote(u_ref, i_ref) for w in pool])
        seconds["collect"] = time.perf_counter() - clock - sum(seconds.values())
    finally:
        for w in pool:  # free their CPUs and memory now, on a cluster that keeps running
            ray.kill(w)
        if started:
            ray.shutdown()
    frame = pl.DataFrame({c: np.concatenate([p[c] for p in parts]) for c in parts[0]})
    out = Dataset(name, Interactions(frame, users_left.size, items_left.size),
                  IdMap(user_map.raw.gather(users_left)), IdMap(item_map.raw.gather(items_left)),
                  _remap(ds.items, ITEM, i_new), _remap(ds.users, USER, u_new), ds.order,
                  list(ds.log))
    seconds["build"] = time.perf_counter() - clock - sum(seconds.values())
    _log.info("ray: %s in %s", out, {k: round(v, 3) for k, v in seconds.items()})
    return out
