"""Atomic file writes (write to a temporary file in the same folder, fsync, then rename) and
JSON reads that name the file they fail on."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_bytes", "atomic_write_parquet",
           "fsync_dir", "replace_dir", "read_json", "json_text"]


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


def read_json(path: Path, expect: type | None = dict) -> Any:
    """Parse the JSON file at ``path``.

    Args:
        path: The file.
        expect: The type the top-level value must have (None: any).

    Raises:
        FileNotFoundError: If there is no such file.
        ValueError: If it is not valid UTF-8 JSON, or its top level is not ``expect``; the
            message names the file.
    """
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if expect is not None and not isinstance(value, expect):
        raise ValueError(f"{path}: expected a JSON {_json_type(expect)}, found "
                         f"{_json_type(type(value))}")
    return value


def _json_type(t: type) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean",
            type(None): "null"}.get(t, "number" if t in (int, float) else t.__name__)


def json_text(value: Any, indent: int | None = 2) -> str:
    """``value`` as standard JSON: NaN and infinities (an undefined p-value, a rate over zero
    requests) become ``null``, since bare ``NaN`` is not JSON and breaks other readers."""
    return json.dumps(_finite(value), indent=indent, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
