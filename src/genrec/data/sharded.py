"""Sharded interaction tables: the pieces every engine uses to read one table in parts.

A sharded input is one CSV/TSV/Parquet file or a glob pattern of them (``parts/*.parquet``,
read in sorted name order as one table). Its shards are the files, and the row groups of each
Parquet file (what ``genrec data synth`` writes holds one per million rows). Every row check of
the readers (:func:`~genrec.data._parsing.clean_interactions`, ``keep_events``) looks at one
row at a time, so a shard is validated on its own, and the valid rows of the shards, put back
in order, are the valid rows of the whole table; the drop counts add up by reason.
:func:`merge_drops` adds them up in the order the single reader counts them, so the
``dataset.log`` entry is the same, key for key.

:func:`read_sharded` is the single-process path over a pattern; the Ray engine
(:mod:`genrec.data.distributed`) runs :func:`read_shard` on the shards in parallel.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from genrec.data._parsing import (
    ITEM,
    TIME,
    _TIME_REASONS,
    USER,
    DataError,
    ReadReport,
    build_dataset,
    clean_interactions,
    read_text,
)
from genrec.data.interactions import Dataset
from genrec.data.readers import _csv_rows, _keep_events, _mapping, time_order_report

__all__ = ["Shard", "concat_shards", "is_pattern", "list_shards", "merge_drops", "read_entry",
           "read_shard", "read_sharded"]

#: The reasons the CSV parse and :func:`~genrec.data._parsing.clean_interactions`
#: drop rows for, in the order they check them; event types not kept follow, in the order
#: they first appear.
_CHECK_ORDER = ("unterminated quote", "malformed quoting", "wrong field count", "empty row",
                f"missing {USER} id", f"blank {USER} id", f"missing {ITEM} id",
                f"blank {ITEM} id", "rating not a number", *_TIME_REASONS)


@dataclass(frozen=True)
class Shard:
    """One part of a sharded table: a file, or some row groups of a Parquet file."""

    path: str
    row_groups: tuple[int, ...] | None = None
    """Parquet row groups of ``path`` (None: the whole file)."""
    rows: int | None = None
    """Rows before validation, when the file says so (Parquet)."""


def is_pattern(path: str | Path) -> bool:
    """Whether ``path`` is a glob pattern (``*``, ``?`` or ``[``) rather than one file."""
    return glob.has_magic(str(path))


def _files(path: str | Path) -> list[str]:
    if not is_pattern(path):
        return [str(path)]
    files = sorted(p for p in glob.glob(str(path)) if Path(p).is_file())
    if not files:
        raise DataError(path, "no file matches this pattern")
    return files


def list_shards(path: str | Path, fmt: str, *, min_rows: int = 0) -> list[Shard]:
    """The shards of ``path`` (a file or a glob pattern), in table order.

    Args:
        path: The file or pattern.
        fmt: ``csv``, ``tsv`` or ``parquet``.
        min_rows: Parquet: join neighbouring row groups of a file until a shard holds at least
            this many rows (0: one shard per row group).

    Raises:
        DataError: If no file matches, or a Parquet file cannot be opened.
    """
    if fmt not in ("csv", "tsv", "parquet"):
        raise ValueError(f"sharded reading takes csv, tsv or parquet, not {fmt}")
    shards: list[Shard] = []
    for f in _files(path):
        if fmt != "parquet":
            shards.append(Shard(f))
            continue
        try:
            meta = pq.ParquetFile(f).metadata
        except (OSError, ValueError) as e:  # pyarrow raises ArrowInvalid (a ValueError)
            raise DataError(f, f"not a readable Parquet file ({e})") from e
        groups: list[int] = []
        rows = 0
        for g in range(meta.num_row_groups):
            groups.append(g)
            rows += meta.row_group(g).num_rows
            if rows >= min_rows:
                shards.append(Shard(f, tuple(groups), rows))
                groups, rows = [], 0
        if groups or meta.num_row_groups == 0:
            shards.append(Shard(f, tuple(groups), rows))
    return shards


def read_shard(shard: Shard, fmt: str, columns: Mapping[str, str] | None = None, *,
               sep: str | None = None, keep_events: list[str] | None = None
               ) -> tuple[pl.DataFrame, dict[str, int]]:
    """Read and validate one shard, as the single reader does the whole file.

    Returns:
        The valid rows (``user``, ``item`` String, ``timestamp`` Int64, ``rating`` Float32 as
        present) and the rows dropped, by reason.

    Raises:
        DataError: If the file is unreadable or lacks a column.
    """
    report = ReadReport(Path(shard.path))
    if fmt == "parquet":
        try:
            pf = pq.ParquetFile(shard.path)
            mapping = _mapping(columns, pf.schema_arrow.names, report.path)
            wanted = list(dict.fromkeys(mapping.values()))
            groups = (list(shard.row_groups) if shard.row_groups is not None
                      else list(range(pf.metadata.num_row_groups)))
            frame = pl.from_arrow(pf.read_row_groups(groups, columns=wanted))
        except (OSError, ValueError) as e:
            if isinstance(e, DataError):
                raise
            raise DataError(shard.path, f"not a readable Parquet file ({e})") from e
        assert isinstance(frame, pl.DataFrame)
    else:
        text = read_text(shard.path)
        sep = sep or ("\t" if fmt == "tsv" else ",")
        frame = _csv_rows(text, sep, report)
        mapping = _mapping(columns, frame.columns, report.path)
    frame = frame.select([pl.col(src).alias(dst) for dst, src in mapping.items()])
    frame = clean_interactions(frame, report)
    frame = _keep_events(frame, report, keep_events)
    return frame, dict(report.dropped)


def merge_drops(parts: Sequence[Mapping[str, int]]) -> dict[str, int]:
    """The drop counts of the shards (in table order) added up, keyed in the order the single
    reader would count them."""
    total: dict[str, int] = {}
    for part in parts:
        for reason, n in part.items():
            total[reason] = total.get(reason, 0) + n
    # Python's sort is stable: event types keep their order of first appearance.
    rank = {r: i for i, r in enumerate(_CHECK_ORDER)}
    return dict(sorted(total.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def read_entry(path: str | Path, kept: int, drops: Sequence[Mapping[str, int]]
               ) -> dict[str, Any]:
    """The ``dataset.log`` read entry of a sharded table (logged like the single reader's).

    Raises:
        DataError: If no row is valid.
    """
    report = ReadReport(Path(path))
    report.dropped = merge_drops(drops)
    return report.finish(kept)


def read_sharded(path: str | Path, fmt: str, columns: Mapping[str, str] | None = None, *,
                 sep: str | None = None, keep_events: list[str] | None = None,
                 name: str | None = None) -> Dataset:
    """Read a sharded table in this process: what the Ray engine computes in parallel.

    Returns:
        The dataset: its read entry names ``path``; ids numbered by first appearance in
        table order.

    Raises:
        DataError: If a file is missing or unusable, the files' columns differ, or no row is
            valid.
    """
    frames, drops = [], []
    for shard in list_shards(path, fmt):
        frame, dropped = read_shard(shard, fmt, columns, sep=sep, keep_events=keep_events)
        frames.append(frame)
        drops.append(dropped)
    frame = concat_shards(path, frames)
    log = [read_entry(path, frame.height, drops)]
    if (order_entry := time_order_report(frame)) is not None:
        log.append(order_entry)
    order = "timestamp" if TIME in frame.columns else "position"
    return build_dataset(name or Path(str(path)).parent.name, frame, log, order=order)


def concat_shards(path: str | Path, frames: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """The shards' valid rows, in order, as one table.

    Raises:
        DataError: If the shards have different columns (the files differ).
    """
    names = {tuple(f.columns) for f in frames}
    if len(names) > 1:
        raise DataError(path, f"the files have different columns: {sorted(names)}")
    return pl.concat(frames, how="vertical") if frames else pl.DataFrame()
