"""Feedback stores: SQLite (WAL, synchronous=FULL) and a real PostgreSQL server."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from genrec.serving import (
    FeedbackRecord,
    PostgresFeedbackStore,
    SQLiteFeedbackStore,
    StoreUnavailableError,
    open_store,
)
from genrec.serving.testing import free_port


def _events(n: int, prefix: str = "e") -> list[FeedbackRecord]:
    return [FeedbackRecord(user_id=f"u{i % 7}", item_id=f"i{i}", event="click", value=None,
                           ts=1.0 + i, event_id=f"{prefix}{i}", received_at=2.0)
            for i in range(n)]


def _check_store(store) -> None:
    assert store.ping()
    assert store.add(_events(5)) == 5
    assert store.add(_events(5)) == 0          # same event ids: stored once
    anon = FeedbackRecord(user_id="u", item_id="i", ts=1.0, received_at=1.0)
    assert store.add([anon, anon]) == 2         # no event id: every event is new
    assert store.count() == 7
    assert store.event_ids() == {f"e{i}" for i in range(5)}

    def writer(k: int) -> None:
        for j in range(10):
            store.add(_events(3, prefix=f"t{k}-{j}-"))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count() == 7 + 4 * 10 * 3


def test_sqlite_store(tmp_path) -> None:
    store = open_store(tmp_path / "fb.db")
    assert isinstance(store, SQLiteFeedbackStore)
    _check_store(store)
    store.close()


def test_sqlite_is_wal_full_and_durable_across_reopen(tmp_path) -> None:
    path = tmp_path / "sub" / "fb.db"
    store = open_store(f"sqlite:///{path}")
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.add(_events(3))
    # Another connection sees the committed rows while the first is still open.
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 3
    store.close()
    assert open_store(path).count() == 3


def test_other_database_urls_are_refused_not_taken_for_files(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for url in ("mysql://user:secret@db.example.com/genrec", "postgresql+psycopg://h/db"):
        with pytest.raises(ValueError, match="not supported"):
            open_store(url)
    assert list(tmp_path.iterdir()) == []  # no file named after the URL (or its password)


def test_sqlite_unwritable_path(tmp_path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreUnavailableError):
        open_store(tmp_path / "dir.db")


def test_postgres_store(pg_fresh) -> None:
    store = open_store(pg_fresh)
    assert isinstance(store, PostgresFeedbackStore) and store.kind == "postgresql"
    _check_store(store)
    store.close()
    assert open_store(pg_fresh).count() == 7 + 120


def test_postgres_reconnects_after_connection_loss(pg_fresh) -> None:
    import psycopg

    store = open_store(pg_fresh)
    store.add(_events(2))
    with psycopg.connect(pg_fresh, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE pid <> pg_backend_pid() AND datname = 'postgres'")
    with pytest.raises(StoreUnavailableError):
        store.add(_events(2, prefix="x"))      # the broken connection fails this call ...
    assert store.add(_events(2, prefix="y")) == 2  # ... and is replaced on the next one
    assert store.count() == 4


def test_postgres_unreachable() -> None:
    with pytest.raises(StoreUnavailableError, match="cannot connect"):
        PostgresFeedbackStore(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
                              connect_timeout=1)
