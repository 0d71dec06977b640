"""Durable feedback stores: SQLite by default, PostgreSQL when a database URL is configured.

``add`` returns only after the events are committed to stable storage, so an event the
server acknowledged survives a crash (``kill -9``) of the server right after the answer.
Events that carry an ``event_id`` are stored once: a client may safely retry.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from genrec._io import atomic_write_text

__all__ = [
    "FeedbackRecord",
    "FeedbackStore",
    "PostgresFeedbackStore",
    "SQLiteFeedbackStore",
    "StoreUnavailableError",
    "export_interactions",
    "open_store",
]

_log = logging.getLogger(__name__)

_COLUMNS = ("event_id", "user_id", "item_id", "event", "value", "ts", "model", "received_at")


class StoreUnavailableError(RuntimeError):
    """The feedback database cannot be reached or written."""


@dataclass(frozen=True)
class FeedbackRecord:
    """One feedback event as stored.

    Attributes:
        user_id: Raw user id.
        item_id: Raw item id.
        event: Event type (``click``, ``view``, ``purchase``, ``rating``, ...).
        value: Optional value (a rating, a watch time).
        ts: When it happened, unix seconds.
        model: Model whose recommendation led to the event, if known.
        event_id: Client-side id that makes retries idempotent.
        received_at: When the server received it, unix seconds.
    """

    user_id: str
    item_id: str
    event: str = "click"
    value: float | None = None
    ts: float = 0.0
    model: str | None = None
    event_id: str | None = None
    received_at: float = 0.0

    def row(self) -> tuple[Any, ...]:
        """Values in table column order."""
        d = asdict(self)
        return tuple(d[c] for c in _COLUMNS)


class FeedbackStore(Protocol):
    """Where feedback events go."""

    kind: str

    def add(self, events: Sequence[FeedbackRecord]) -> int:
        """Store ``events`` durably (committed on return); returns how many were new."""
        ...

    def count(self) -> int:
        """Number of stored events."""
        ...

    def event_ids(self) -> set[str]:
        """All stored ``event_id`` values."""
        ...

    def ping(self) -> bool:
        """Whether the store answers."""
        ...

    def events(self) -> list[FeedbackRecord]:
        """Every stored event, in the order received."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT UNIQUE,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    event TEXT NOT NULL,
    value REAL,
    ts REAL NOT NULL,
    model TEXT,
    received_at REAL NOT NULL
)
"""

_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM feedback ORDER BY id"


def _records(rows: Iterable[Sequence[Any]]) -> list[FeedbackRecord]:
    """``_SELECT`` rows as records."""
    return [FeedbackRecord(**dict(zip(_COLUMNS, r, strict=True))) for r in rows]


_INSERT = (f"INSERT INTO feedback ({', '.join(_COLUMNS)}) VALUES ({{ph}}) "
           "ON CONFLICT (event_id) DO NOTHING")


class SQLiteFeedbackStore:
    """Feedback in an embedded SQLite file (WAL journal, ``synchronous=FULL``).

    With WAL and ``synchronous=FULL`` every commit fsyncs the log, so a committed event
    survives a process kill or a power loss. One connection serves all threads, behind a
    lock (SQLite allows one writer at a time anyway).

    Args:
        path: Database file; created with its folder if missing.
    """

    kind = "sqlite"

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise StoreUnavailableError(f"{self.path}: no such feedback database")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                     timeout=30)
        mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreUnavailableError(f"{self.path}: SQLite refused WAL mode ({mode})")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(_SQLITE_SCHEMA)
        self._insert = _INSERT.format(ph=", ".join("?" * len(_COLUMNS)))

    def add(self, events: Sequence[FeedbackRecord]) -> int:
        """Insert ``events`` in one transaction, committed (fsynced) before returning.

        Raises:
            StoreUnavailableError: If SQLite fails.
        """
        with self._lock:
            try:
                before = self._conn.total_changes
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._conn.executemany(self._insert, [e.row() for e in events])
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                return self._conn.total_changes - before
            except sqlite3.Error as e:
                raise StoreUnavailableError(f"sqlite {self.path}: {e}") from e

    def count(self) -> int:
        """Number of stored events."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0])

    def event_ids(self) -> set[str]:
        """All stored ``event_id`` values."""
        with self._lock:
            rows = self._conn.execute("SELECT event_id FROM feedback WHERE event_id IS NOT NULL")
            return {r[0] for r in rows}

    def events(self) -> list[FeedbackRecord]:
        """Every stored event, in the order received."""
        with self._lock:
            rows = self._conn.execute(_SELECT).fetchall()
        return _records(rows)

    def ping(self) -> bool:
        """Whether the database answers."""
        try:
            with self._lock:
                self._conn.execute("SELECT 1").fetchone()
            return True
        except sqlite3.Error:
            return False

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite)."""
        with self._lock:
            self._conn.close()


_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id BIGSERIAL PRIMARY KEY,
    event_id TEXT UNIQUE,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    event TEXT NOT NULL,
    value DOUBLE PRECISION,
    ts DOUBLE PRECISION NOT NULL,
    model TEXT,
    received_at DOUBLE PRECISION NOT NULL
)
"""


class PostgresFeedbackStore:
    """Feedback in PostgreSQL (``psycopg`` 3); a commit returns once the server has it durable.

    The connection is reopened on the next call after it breaks.

    Args:
        url: A libpq URL, ``postgresql://user@host:port/dbname``.
        connect_timeout: Seconds to wait for a connection.

    Raises:
        StoreUnavailableError: If psycopg is missing or the server cannot be reached.
    """

    kind = "postgresql"

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError as e:
            raise StoreUnavailableError(
                "PostgreSQL feedback needs psycopg: pip install 'psycopg[binary]'") from e
        self.url = url
        self._timeout = connect_timeout
        self._lock = threading.Lock()
        self._conn: Any = None
        self._insert = _INSERT.format(ph=", ".join(["%s"] * len(_COLUMNS)))
        with self._lock:
            self._connection().execute(_PG_SCHEMA)
            self._conn.commit()

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = psycopg.connect(self.url, connect_timeout=max(1, int(self._timeout)))
            except psycopg.Error as e:
                raise StoreUnavailableError(f"postgresql: cannot connect: {e}") from e
        return self._conn

    def _run(self, fn: Any) -> Any:
        import psycopg

        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction():
                    return fn(conn)
            except psycopg.Error as e:
                raise StoreUnavailableError(f"postgresql: {e}") from e

    def add(self, events: Sequence[FeedbackRecord]) -> int:
        """Insert ``events`` in one transaction, committed before returning.

        Raises:
            StoreUnavailableError: If the server fails or cannot be reached.
        """
        def go(conn: Any) -> int:
            with conn.cursor() as cur:
                # psycopg >= 3.1: rowcount after executemany sums all statements, so rows
                # skipped by ON CONFLICT (duplicates) are not counted.
                cur.executemany(self._insert, [e.row() for e in events])
                return max(cur.rowcount, 0)

        return int(self._run(go))

    def count(self) -> int:
        """Number of stored events."""
        return int(self._run(lambda c: c.execute("SELECT COUNT(*) FROM feedback").fetchone()[0]))

    def event_ids(self) -> set[str]:
        """All stored ``event_id`` values."""
        rows = self._run(lambda c: c.execute(
            "SELECT event_id FROM feedback WHERE event_id IS NOT NULL").fetchall())
        return {r[0] for r in rows}

    def events(self) -> list[FeedbackRecord]:
        """Every stored event, in the order received."""
        rows = self._run(lambda c: c.execute(_SELECT).fetchall())
        return _records(rows)

    def ping(self) -> bool:
        """Whether the server answers."""
        try:
            self._run(lambda c: c.execute("SELECT 1").fetchone())
            return True
        except StoreUnavailableError:
            return False

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()


def open_store(url: str | Path, *, create: bool = True
               ) -> SQLiteFeedbackStore | PostgresFeedbackStore:
    """Open the store named by ``url``.

    Args:
        url: ``postgresql://...`` (or ``postgres://``) for PostgreSQL; ``sqlite:///path`` or a
            plain file path for SQLite.
        create: Create a SQLite file that does not exist yet (False for readers such as
            ``genrec feedback export``, so that a mistyped path is an error, not a new, empty
            database).

    Returns:
        The store.

    Raises:
        StoreUnavailableError: If the database cannot be opened.
        ValueError: For a URL of another database (``mysql://``, ``postgresql+psycopg://``,
            ...): it is refused rather than taken for a file name.
    """
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresFeedbackStore(text)
    if "://" in text and not text.startswith("sqlite:///"):
        scheme = text.split("://", 1)[0]
        raise ValueError(f"feedback database URL scheme {scheme!r} is not supported: use "
                         "postgresql://..., sqlite:///path or a file path")
    path = text.removeprefix("sqlite:///") if text.startswith("sqlite:///") else text
    try:
        return SQLiteFeedbackStore(path, create=create)
    except sqlite3.Error as e:
        raise StoreUnavailableError(f"sqlite {path}: {e}") from e



def export_interactions(events: Iterable[FeedbackRecord], out: str | Path, *,
                        kinds: Sequence[str] | None = None) -> int:
    """Write feedback events as an interaction CSV that ``genrec run`` reads.

    Columns: ``user``, ``item``, ``timestamp`` (integer unix seconds, when the event
    happened), ``event``, and ``rating`` when every exported event carries a value. Read it
    with ``dataset.path: FILE`` and ``dataset.format: csv``.

    Args:
        events: The events, e.g. ``store.events()``.
        out: CSV file to write (atomically).
        kinds: Keep only these event types (all when None).

    Returns:
        The number of rows written.

    Raises:
        ValueError: If no event is left to export.
    """
    rows = [e for e in events if kinds is None or e.event in kinds]
    if not rows:
        raise ValueError("no feedback events to export" + (f" of kinds {list(kinds)}"
                                                           if kinds else ""))
    frame = pl.DataFrame({
        "user": [e.user_id for e in rows], "item": [e.item_id for e in rows],
        "timestamp": [int(e.ts) for e in rows], "event": [e.event for e in rows]})
    values = [e.value for e in rows]
    if all(v is not None for v in values):
        frame = frame.with_columns(pl.Series("rating", values, dtype=pl.Float64))
    atomic_write_text(Path(out), frame.write_csv())
    return frame.height
