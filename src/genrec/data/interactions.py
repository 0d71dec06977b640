"""The data model: id maps, interaction tables, user histories and the named dataset.

Everything inside genrec works on dense integer ids (``0..n-1``). Raw ids (strings) are
converted only at the edges by :class:`IdMap`.

Column names are fixed (see :class:`Columns`) so that no model ever reads a field name
from configuration.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from genrec._io import atomic_write_text, atomic_write_parquet

__all__ = ["Columns", "IdMap", "Interactions", "Histories", "Dataset", "EvalSet"]

_log = logging.getLogger(__name__)


class Columns:
    """Fixed column names of every interaction table."""

    user = "user"
    item = "item"
    timestamp = "timestamp"
    rating = "rating"


class IdMap:
    """A two-way map between raw ids (strings) and dense indices ``0..n-1``.

    Args:
        raw_ids: The raw ids in index order; must be unique.

    Raises:
        ValueError: If ``raw_ids`` has duplicates.
    """

    def __init__(self, raw_ids: list[str] | np.ndarray | pl.Series) -> None:
        self.raw = pl.Series("raw", raw_ids, dtype=pl.String)
        if self.raw.n_unique() != len(self.raw):
            raise ValueError("IdMap: raw ids must be unique")
        self._lookup = pl.DataFrame({"raw": self.raw, "idx": np.arange(len(self.raw))})

    def __len__(self) -> int:
        return len(self.raw)

    def to_index(self, raw: list[str] | pl.Series, *, missing: int = -1) -> np.ndarray:
        """Map raw ids to dense indices; unknown ids become ``missing``."""
        s = pl.DataFrame({"raw": pl.Series(raw, dtype=pl.String)})
        out = s.join(self._lookup, on="raw", how="left", maintain_order="left")["idx"]
        return out.fill_null(missing).to_numpy().astype(np.int64)

    def to_raw(self, idx: np.ndarray | list[int]) -> list[str]:
        """Map dense indices back to raw ids."""
        return self.raw.gather(np.asarray(idx, dtype=np.int64)).to_list()


def _take_rows(indptr: np.ndarray, values: np.ndarray, rows: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``rows`` of a CSR layout ``(indptr, values)``: the new indptr and values."""
    lengths = np.diff(indptr)[rows]
    new_indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(indptr.dtype)
    offsets = np.arange(new_indptr[-1]) - np.repeat(new_indptr[:-1], lengths)
    return new_indptr, values[np.repeat(indptr[rows], lengths) + offsets]


@dataclass(frozen=True)
class Histories:
    """A batch of users with their item histories in chronological order (CSR layout).

    Attributes:
        users: Dense user ids, shape ``(B,)``.
        indptr: Row pointers, shape ``(B + 1,)``.
        items: Item ids of all histories concatenated, oldest first within each user.
        n_items: Size of the item catalogue.
    """

    users: np.ndarray
    indptr: np.ndarray
    items: np.ndarray
    n_items: int

    def __len__(self) -> int:
        return len(self.users)

    @property
    def lengths(self) -> np.ndarray:
        """History length per user, shape ``(B,)``."""
        return np.diff(self.indptr)

    def slice(self, start: int, stop: int) -> Histories:
        """Rows ``start:stop`` as a new batch (no copy of the item array beyond the slice)."""
        lo, hi = self.indptr[start], self.indptr[stop]
        return Histories(
            self.users[start:stop], self.indptr[start : stop + 1] - lo, self.items[lo:hi],
            self.n_items,
        )

    def take(self, rows: np.ndarray) -> Histories:
        """Rows ``rows`` (any order, vectorised) as a new batch."""
        indptr, items = _take_rows(self.indptr, self.items, np.asarray(rows, dtype=np.int64))
        return Histories(self.users[rows], indptr, items, self.n_items)

    def truncate(self, max_len: int | None) -> Histories:
        """Keep only the ``max_len`` most recent items of every history."""
        if max_len is None or len(self) == 0 or self.lengths.max(initial=0) <= max_len:
            return self
        lengths = np.minimum(self.lengths, max_len)
        starts = self.indptr[1:] - lengths
        new_indptr = np.concatenate([[0], np.cumsum(lengths)])
        offsets = np.arange(new_indptr[-1]) - np.repeat(new_indptr[:-1], lengths)
        items = self.items[np.repeat(starts, lengths) + offsets]
        return Histories(self.users, new_indptr, items, self.n_items)

    def to_csr(self, dtype: Any = np.float32) -> sp.csr_matrix:
        """Binary user-item matrix of this batch, shape ``(B, n_items)``."""
        data = np.ones(len(self.items), dtype=dtype)
        m = sp.csr_matrix((data, self.items, self.indptr), shape=(len(self), self.n_items))
        m.sum_duplicates()
        m.data[:] = 1
        return m

    def padded(self, max_len: int, pad: int = 0, shift: int = 1) -> torch.Tensor:
        """Left-padded tensor of the last ``max_len`` items, most recent last.

        Args:
            max_len: Sequence length ``L``.
            pad: Value of padding positions.
            shift: Added to every item id (sequence models reserve 0 for padding).

        Returns:
            Long tensor of shape ``(B, L)``.
        """
        h = self.truncate(max_len)
        out = torch.full((len(h), max_len), pad, dtype=torch.long)
        lengths = h.lengths
        rows = np.repeat(np.arange(len(h)), lengths)
        cols = max_len - np.repeat(lengths, lengths) + (
            np.arange(len(h.items)) - np.repeat(h.indptr[:-1], lengths)
        )
        out[torch.from_numpy(rows), torch.from_numpy(cols)] = torch.from_numpy(h.items + shift)
        return out

    def mask_seen(self, scores: torch.Tensor, items: np.ndarray | None = None) -> torch.Tensor:
        """Set the score of every item already in the history to ``-inf`` (in place).

        Args:
            scores: Scores of shape ``(B, n_items)`` or ``(B, len(items))``.
            items: Column item ids when ``scores`` covers a subset of the catalogue.

        Returns:
            ``scores``, modified in place.
        """
        rows_np = np.repeat(np.arange(len(self)), self.lengths)
        cols_np = np.asarray(self.items, dtype=np.int64)
        if items is not None:
            # Every column holding a seen item, repeated columns included: the columns
            # sorted by item id, and each seen item's run of them found by binary search.
            items = np.asarray(items, dtype=np.int64)
            order = np.argsort(items, kind="stable")
            lo = np.searchsorted(items[order], cols_np, side="left")
            counts = np.searchsorted(items[order], cols_np, side="right") - lo
            starts = np.repeat(lo, counts)
            offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
            rows_np, cols_np = np.repeat(rows_np, counts), order[starts + offsets]
        rows, cols = torch.from_numpy(rows_np), torch.from_numpy(np.array(cols_np))
        scores[rows.to(scores.device), cols.to(scores.device)] = float("-inf")
        return scores

    @classmethod
    def from_lists(cls, histories: list[list[int]], n_items: int,
                   users: list[int] | None = None) -> Histories:
        """Build a batch from Python lists (for serving and tests, not hot paths).

        Without ``users`` every row is an anonymous user (id ``-1``): models that learn a
        vector per user (the factor models) treat the rows as cold users and read only the
        histories, rather than mistaking row ``i`` for user ``i``.
        """
        lengths = np.array([len(h) for h in histories], dtype=np.int64)
        items = np.fromiter((i for h in histories for i in h), dtype=np.int64, count=lengths.sum())
        if len(items) and (items.min() < 0 or items.max() >= n_items):
            raise ValueError(f"history item ids must be in [0, {n_items})")
        users_arr = np.full(len(histories), -1) if users is None else np.asarray(users)
        return cls(users_arr.astype(np.int64), np.concatenate([[0], np.cumsum(lengths)]),
                   items, n_items)


class Interactions:
    """An interaction table on dense ids, sorted by user then time.

    Columns: ``user`` (Int64), ``item`` (Int64), ``timestamp`` (Int64: a unix time or, for
    sequence-only data, the position in the user's sequence) and optionally ``rating``
    (Float32).

    Args:
        frame: The table; it is validated and sorted (stable, so ties keep file order).
        n_users: Number of users in the id space (may exceed the users present).
        n_items: Number of items in the id space.

    Raises:
        ValueError: If a column is missing, a user, item or time is null, or ids fall outside
            the id space.
    """

    def __init__(self, frame: pl.DataFrame, n_users: int, n_items: int) -> None:
        missing = {Columns.user, Columns.item, Columns.timestamp} - set(frame.columns)
        if missing:
            raise ValueError(f"Interactions: missing columns {sorted(missing)}")
        cols = [Columns.user, Columns.item, Columns.timestamp]
        if Columns.rating in frame.columns:
            cols.append(Columns.rating)
        frame = frame.select(cols).with_columns(
            pl.col(Columns.user).cast(pl.Int64), pl.col(Columns.item).cast(pl.Int64),
            pl.col(Columns.timestamp).cast(pl.Int64),
        )
        nulls = [c for c in (Columns.user, Columns.item, Columns.timestamp)
                 if frame[c].null_count()]
        if nulls:  # a null time would sort first and become the oldest event
            raise ValueError(f"Interactions: null values in {nulls} (the file readers drop "
                             "such rows and count them; drop or fill them first)")
        if frame.height:
            for col, n in ((Columns.user, n_users), (Columns.item, n_items)):
                lo, hi = frame[col].min(), frame[col].max()
                if lo < 0 or hi >= n:  # type: ignore[operator]
                    raise ValueError(f"Interactions: {col} ids must be in [0, {n}), got [{lo}, {hi}]")
        self.frame = frame.sort([Columns.user, Columns.timestamp], maintain_order=True)
        self.n_users = int(n_users)
        self.n_items = int(n_items)

    def __len__(self) -> int:
        return self.frame.height

    def __repr__(self) -> str:
        return f"Interactions(users={self.n_users}, items={self.n_items}, rows={len(self)})"

    @property
    def users(self) -> np.ndarray:
        """User column as int64 numpy."""
        return self.frame[Columns.user].to_numpy()

    @property
    def items(self) -> np.ndarray:
        """Item column as int64 numpy."""
        return self.frame[Columns.item].to_numpy()

    def item_counts(self) -> np.ndarray:
        """Number of interactions per item, shape ``(n_items,)``."""
        return np.bincount(self.items, minlength=self.n_items)

    def to_csr(self) -> sp.csr_matrix:
        """Binary user-item matrix, shape ``(n_users, n_items)``, float32."""
        return self.histories().to_csr()

    def histories(self, users: np.ndarray | None = None) -> Histories:
        """Chronological histories of ``users`` (all users in the id space by default)."""
        counts = np.bincount(self.users, minlength=self.n_users)
        indptr_all = np.concatenate([[0], np.cumsum(counts)])
        items_all = self.items
        if users is None:
            return Histories(np.arange(self.n_users), indptr_all, items_all, self.n_items)
        users = np.asarray(users, dtype=np.int64)
        lengths = counts[users]
        starts = indptr_all[users]
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        offsets = np.arange(indptr[-1]) - np.repeat(indptr[:-1], lengths)
        items = items_all[np.repeat(starts, lengths) + offsets]
        return Histories(users, indptr, items, self.n_items)

    def fingerprint(self) -> str:
        """A short hash of the id spaces and every ``(user, item, timestamp)`` row: equal
        tables give equal fingerprints (what a resumed training checks it trains on)."""
        h = hashlib.blake2b(digest_size=12)
        h.update(f"{self.n_users},{self.n_items},{len(self)}".encode())
        for col in (Columns.user, Columns.item, Columns.timestamp):
            h.update(np.ascontiguousarray(self.frame[col].to_numpy()).tobytes())
        return h.hexdigest()

    def concat(self, other: Interactions) -> Interactions:
        """Union of two tables over the same id space (re-sorted by user and time)."""
        if (self.n_users, self.n_items) != (other.n_users, other.n_items):
            raise ValueError("Interactions.concat: id spaces differ")
        return Interactions(pl.concat([self.frame, other.frame], how="diagonal_relaxed"),
                            self.n_users, self.n_items)

    def save(self, path: Path) -> None:
        """Write the table as Parquet plus a small JSON header (atomic)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_parquet(self.frame, path / "interactions.parquet")
        atomic_write_text(path / "meta.json",
                          json.dumps({"n_users": self.n_users, "n_items": self.n_items}))

    @classmethod
    def load(cls, path: Path) -> Interactions:
        """Read a table written by :meth:`save`."""
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        return cls(pl.read_parquet(path / "interactions.parquet"), meta["n_users"], meta["n_items"])


@dataclass(frozen=True)
class EvalSet:
    """What a model is evaluated on: each user's history and the items to retrieve.

    Attributes:
        histories: Model input, one row per evaluated user.
        target_indptr: Row pointers into ``target_items``, shape ``(B + 1,)``.
        target_items: Relevant items of every user, concatenated.
    """

    histories: Histories
    target_indptr: np.ndarray
    target_items: np.ndarray

    def __len__(self) -> int:
        return len(self.histories)

    @classmethod
    def build(cls, history: Interactions, targets: Interactions) -> EvalSet:
        """Users with at least one target; history from ``history``, targets from ``targets``.

        Repeated targets of a user count once.
        """
        targets = Interactions(targets.frame.unique([Columns.user, Columns.item], keep="first",
                                                    maintain_order=True),
                               targets.n_users, targets.n_items)
        tgt_counts = np.bincount(targets.users, minlength=targets.n_users)
        users = np.flatnonzero(tgt_counts)
        hist = history.histories(users)
        tgt = targets.histories(users)
        return cls(hist, tgt.indptr, tgt.items)

    def take(self, rows: np.ndarray) -> EvalSet:
        """Rows ``rows`` (any order, vectorised)."""
        rows = np.asarray(rows, dtype=np.int64)
        indptr, items = _take_rows(self.target_indptr, self.target_items, rows)
        return EvalSet(self.histories.take(rows), indptr, items)

    def slice(self, start: int, stop: int) -> EvalSet:
        """Rows ``start:stop``."""
        lo, hi = self.target_indptr[start], self.target_indptr[stop]
        return EvalSet(self.histories.slice(start, stop),
                       self.target_indptr[start : stop + 1] - lo, self.target_items[lo:hi])


@dataclass
class Dataset:
    """A named dataset: interactions on dense ids, id maps and feature tables.

    Attributes:
        name: Dataset name (a recipe name or a file stem).
        interactions: The interaction table.
        user_map: Raw user id <-> dense index.
        item_map: Raw item id <-> dense index.
        items: Item features, one row per item, with a dense ``item`` column first.
        users: User features, one row per user, with a dense ``user`` column first.
        order: ``"timestamp"`` if the time column holds real times, ``"position"`` if it
            only holds the order within each user's sequence.
        log: What each loading and preprocessing step kept and dropped, and why.
    """

    name: str
    interactions: Interactions
    user_map: IdMap
    item_map: IdMap
    items: pl.DataFrame = field(default_factory=pl.DataFrame)
    users: pl.DataFrame = field(default_factory=pl.DataFrame)
    order: str = "timestamp"
    log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_users(self) -> int:
        """Number of users."""
        return self.interactions.n_users

    @property
    def n_items(self) -> int:
        """Number of items."""
        return self.interactions.n_items

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, users={self.n_users}, items={self.n_items}, "
                f"interactions={len(self.interactions)})")

    @classmethod
    def from_raw(cls, name: str, interactions: pl.DataFrame, items: pl.DataFrame | None = None,
                 users: pl.DataFrame | None = None, *, order: str = "timestamp",
                 log: list[dict[str, Any]] | None = None) -> Dataset:
        """Build a dataset from tables keyed by raw ids.

        Args:
            name: Dataset name.
            interactions: Columns ``user``, ``item`` (raw ids, any type, cast to string),
                ``timestamp`` (or none: file order is used) and optionally ``rating``.
            items: Item features with a raw ``item`` column; rows for items that never occur
                in ``interactions`` are dropped.
            users: User features with a raw ``user`` column.
            order: See the class attributes.
            log: Earlier step reports to carry along.

        Returns:
            The dataset, with ids numbered by first appearance.

        Raises:
            ValueError: If a required column is missing or the table is empty.
        """
        missing = {Columns.user, Columns.item} - set(interactions.columns)
        if missing:
            raise ValueError(f"{name}: interactions lack required columns {sorted(missing)}")
        if interactions.height == 0:
            raise ValueError(f"{name}: no interactions")
        df = interactions.with_columns(pl.col(Columns.user).cast(pl.String),
                                       pl.col(Columns.item).cast(pl.String))
        if Columns.timestamp not in df.columns:
            df = df.with_columns(pl.int_range(pl.len()).over(Columns.user).alias(Columns.timestamp))
            order = "position"
        user_map = IdMap(df[Columns.user].unique(maintain_order=True))
        item_map = IdMap(df[Columns.item].unique(maintain_order=True))
        df = df.with_columns(
            pl.Series(Columns.user, user_map.to_index(df[Columns.user])),
            pl.Series(Columns.item, item_map.to_index(df[Columns.item])),
        )
        inter = Interactions(df, len(user_map), len(item_map))
        return cls(name, inter, user_map, item_map,
                   _attach(items, Columns.item, item_map), _attach(users, Columns.user, user_map),
                   order, list(log or []))

    def subset(self, frame: pl.DataFrame) -> Dataset:
        """A dataset over the rows of ``frame`` (dense ids of ``self``), with ids compacted."""
        # Dense ids: a bincount is the sorted unique set in linear time (np.unique sorts).
        users = np.flatnonzero(np.bincount(frame[Columns.user].to_numpy(), minlength=self.n_users))
        items = np.flatnonzero(np.bincount(frame[Columns.item].to_numpy(), minlength=self.n_items))
        u_new = np.full(self.n_users, -1, dtype=np.int64)
        u_new[users] = np.arange(len(users))
        i_new = np.full(self.n_items, -1, dtype=np.int64)
        i_new[items] = np.arange(len(items))
        frame = frame.with_columns(
            pl.Series(Columns.user, u_new[frame[Columns.user].to_numpy()]),
            pl.Series(Columns.item, i_new[frame[Columns.item].to_numpy()]),
        )

        def remap(table: pl.DataFrame, col: str, new: np.ndarray) -> pl.DataFrame:
            if table.is_empty():
                return table
            ids = new[table[col].to_numpy()]
            return table.with_columns(pl.Series(col, ids)).filter(pl.col(col) >= 0).sort(col)

        return Dataset(
            self.name, Interactions(frame, len(users), len(items)),
            IdMap(self.user_map.raw.gather(users)), IdMap(self.item_map.raw.gather(items)),
            remap(self.items, Columns.item, i_new), remap(self.users, Columns.user, u_new),
            self.order, list(self.log),
        )

    def save(self, path: Path) -> None:
        """Write the dataset as Parquet files plus JSON metadata (each file atomic)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.interactions.save(path)
        atomic_write_parquet(pl.DataFrame({"raw": self.user_map.raw}), path / "user_map.parquet")
        atomic_write_parquet(pl.DataFrame({"raw": self.item_map.raw}), path / "item_map.parquet")
        atomic_write_parquet(self.items, path / "items.parquet")
        atomic_write_parquet(self.users, path / "users.parquet")
        atomic_write_text(path / "dataset.json", json.dumps(
            {"name": self.name, "order": self.order, "log": self.log}, indent=2))

    @classmethod
    def load(cls, path: Path) -> Dataset:
        """Read a dataset written by :meth:`save`."""
        path = Path(path)
        meta = json.loads((path / "dataset.json").read_text())
        return cls(
            meta["name"], Interactions.load(path),
            IdMap(pl.read_parquet(path / "user_map.parquet")["raw"]),
            IdMap(pl.read_parquet(path / "item_map.parquet")["raw"]),
            pl.read_parquet(path / "items.parquet"), pl.read_parquet(path / "users.parquet"),
            meta["order"], meta["log"],
        )


def _attach(table: pl.DataFrame | None, col: str, id_map: IdMap) -> pl.DataFrame:
    """Replace raw ids in a feature table by dense ids; drop unknown rows; one row per id."""
    if table is None or table.is_empty():
        return pl.DataFrame()
    if col not in table.columns:
        raise ValueError(f"feature table lacks the id column {col!r}")
    idx = id_map.to_index(table[col].cast(pl.String))
    out = table.with_columns(pl.Series(col, idx)).filter(pl.col(col) >= 0)
    out = out.unique(col, keep="first", maintain_order=True).sort(col)
    return out.select([col, *[c for c in out.columns if c != col]])
