"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import polars as pl

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_bytes", "atomic_write_parquet",
           "fsync_dir", "replace_dir"]


def _umask() -> int:
    """The process umask, read without changing it where ``/proc`` allows (Linux); elsewhere
    by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then atomically move ``tmp_path`` onto ``path``.

    A reader sees either the old file or the complete new one, never a partial file. The
    file gets the permissions a plain ``open(path, "w")`` would give it (an existing file's
    mode is kept; a new one gets ``0o666`` minus the umask), not the temporary file's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, mode)
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes atomically."""
    atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_parquet(frame: pl.DataFrame, path: Path) -> None:
    """Write a polars frame as Parquet atomically."""
    atomic_write(path, lambda p: frame.write_parquet(p))


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename into it, or files written in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_dir(tmp: Path, dest: Path) -> None:
    """Put the complete folder ``tmp`` (a sibling of ``dest``) in place of ``dest``.

    An existing ``dest`` is renamed aside first and deleted after, so a crash leaves either
    the old folder or the new one at ``dest`` (or, between the two renames, the old one
    aside), never a mix of the two.
    """
    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(dest, old)
    os.rename(tmp, dest)
    fsync_dir(dest.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
