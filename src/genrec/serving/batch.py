"""Batch inference: top-k for many users, chunked, written to Parquet with raw ids.

Output columns: ``user`` (raw id), ``rank`` (1 = best), ``item`` (raw id), ``score``,
``cold_start`` (True where the user is unknown or has no history and got the popularity
answer). Known users are ranked by :meth:`Recommender.recommend
<genrec.models.base.Recommender.recommend>` under their dense id with their stored history,
exactly as the HTTP service ranks them; the popularity answer comes from
:func:`genrec.models.ranking.rank`. The file is written chunk by chunk to a temporary name and
renamed at the end.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from genrec._io import atomic_write
from genrec.data.interactions import Histories
from genrec.models import ranking
from genrec.serving.ann import recommend_ann
from genrec.serving.bundle import Bundle

__all__ = ["BatchSummary", "read_users", "recommend_batch"]

_log = logging.getLogger(__name__)

_SCHEMA = pa.schema([("user", pa.string()), ("rank", pa.int32()), ("item", pa.string()),
                     ("score", pa.float32()), ("cold_start", pa.bool_())])


@dataclass(frozen=True)
class BatchSummary:
    """What a batch run did.

    Attributes:
        users: Users processed.
        cold_start: Of which answered by popularity.
        rows: Rows written.
        path: The Parquet file.
    """

    users: int
    cold_start: int
    rows: int
    path: Path


def read_users(path: str | Path) -> list[str]:
    """Raw user ids from a file: Parquet or CSV with a ``user`` column, else one id per line.

    A user listed more than once is answered once, at its first place (the repeats are
    counted in the log).

    Raises:
        ValueError: If a table has no ``user`` column.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq", ".csv"):
        frame = pl.read_parquet(path) if suffix != ".csv" else pl.read_csv(
            path, infer_schema=False)
        if "user" not in frame.columns:
            raise ValueError(f"{path}: needs a 'user' column, has {frame.columns}")
        ids = frame["user"].cast(pl.String).drop_nulls().to_list()
    else:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
        ids = [s for s in (line.strip() for line in lines) if s]
    unique = list(dict.fromkeys(ids))
    if len(unique) < len(ids):
        _log.warning("%s: %d repeated user id(s) dropped; each user is answered once",
                     path, len(ids) - len(unique))
    return unique


def recommend_batch(bundle: Bundle, users: Sequence[str] | None, out: str | Path, *,
                    k: int = 100, exclude_seen: bool = True, chunk_size: int = 1024,
                    progress: bool = False) -> BatchSummary:
    """Top-``k`` items for every user in ``users`` (all known users when None).

    Args:
        bundle: A loaded bundle.
        users: Raw user ids, in output order; unknown ones get the popularity answer.
        out: Parquet file to write.
        k: Items per user (capped at the catalogue size).
        exclude_seen: Never recommend items of the user's stored history.
        chunk_size: Users scored at once (bounds memory to ``chunk_size x n_items``).
        progress: Show a progress bar (rich) on stderr.

    Returns:
        A summary.

    Raises:
        ValueError: If ``k`` or ``chunk_size`` is below 1.
    """
    if k < 1 or chunk_size < 1:
        raise ValueError("k and chunk_size must be at least 1")
    raw = list(bundle.user_ids) if users is None else [str(u) for u in users]
    k = min(k, bundle.n_items)
    dense = np.fromiter((bundle.user_index.get(u, -1) for u in raw), dtype=np.int64,
                        count=len(raw))
    lengths = np.where(dense >= 0, np.diff(bundle.hist_indptr)[np.maximum(dense, 0)], 0)
    cold = lengths == 0
    pop_items_t, pop_scores_t = ranking.rank(
        torch.from_numpy(bundle.popularity.astype(np.float32))[None], None, k)
    pop_items, pop_scores = pop_items_t[0].numpy(), pop_scores_t[0].float().numpy()
    item_ids = np.asarray(bundle.item_ids, dtype=object)
    n_rows = 0

    def chunk_table(lo: int, hi: int) -> pa.Table:
        nonlocal n_rows
        idx = np.arange(lo, hi)
        warm = idx[~cold[lo:hi]]
        items = np.empty((hi - lo, k), dtype=np.int64)
        scores = np.empty((hi - lo, k), dtype=np.float32)
        items[:] = pop_items
        scores[:] = pop_scores
        if len(warm):
            u = dense[warm]
            starts, ends = bundle.hist_indptr[u], bundle.hist_indptr[u + 1]
            lens = ends - starts
            indptr = np.concatenate([[0], np.cumsum(lens)])
            offs = np.arange(indptr[-1]) - np.repeat(indptr[:-1], lens)
            flat = bundle.hist_items[np.repeat(starts, lens) + offs]
            h = Histories(u, indptr, flat, bundle.n_items)
            if bundle.ann is not None:  # approximate top-k over the bundle's index
                rec = recommend_ann(bundle.model, bundle.ann, h, k,  # type: ignore[arg-type]
                                    exclude_seen=exclude_seen)
            else:
                with torch.inference_mode():
                    rec = bundle.model.recommend(h, k, exclude_seen=exclude_seen)
            items[warm - lo] = rec.items
            scores[warm - lo] = rec.scores
        valid = items >= 0                            # -1: fewer than k items left to rank
        rows_user = np.repeat(np.asarray(raw[lo:hi], dtype=object), k)
        rank = np.tile(np.arange(1, k + 1, dtype=np.int32), hi - lo)
        cold_col = np.repeat(cold[lo:hi], k)
        m = valid.ravel()
        n_rows += int(m.sum())
        return pa.table({"user": rows_user[m], "rank": rank[m],
                         "item": item_ids[items.ravel()[m]], "score": scores.ravel()[m],
                         "cold_start": cold_col[m]}, schema=_SCHEMA)

    def write(tmp: Path) -> None:
        from rich.progress import Progress

        with pq.ParquetWriter(tmp, _SCHEMA) as writer, Progress(disable=not progress,
                                                                 transient=True) as bar:
            task = bar.add_task(f"recommend top-{k}", total=len(raw))
            for lo in range(0, len(raw), chunk_size):
                hi = min(lo + chunk_size, len(raw))
                writer.write_table(chunk_table(lo, hi))
                bar.update(task, advance=hi - lo)

    out = Path(out)
    atomic_write(out, write)
    _log.info("wrote %d rows for %d users (%d cold start) to %s", n_rows, len(raw),
              int(cold.sum()), out)
    return BatchSummary(len(raw), int(cold.sum()), n_rows, out)
