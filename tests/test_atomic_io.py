"""Atomic writes: the complete file or the old one, with the permissions a plain write gives
(a results file written by one user stays readable by the group, as ``open(path, "w")``
would leave it), and no temporary file left behind on failure."""

from __future__ import annotations

import json
import math
import os
import stat
import sys

import numpy as np
import pytest

from genrec._arrays import member_of
from genrec._io import atomic_write, atomic_write_text, json_text, read_json


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_new_file_gets_umask_mode_and_existing_mode_is_kept(tmp_path) -> None:
    old = os.umask(0o027)
    try:
        dest = tmp_path / "results.json"
        atomic_write_text(dest, "{}")
        assert stat.S_IMODE(dest.stat().st_mode) == 0o640  # 0o666 minus the umask, not 0o600
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        assert stat.S_IMODE(plain.stat().st_mode) == stat.S_IMODE(dest.stat().st_mode)
        dest.chmod(0o604)
        atomic_write_text(dest, '{"a": 1}')
        assert stat.S_IMODE(dest.stat().st_mode) == 0o604 and dest.read_text() == '{"a": 1}'
    finally:
        os.umask(old)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path) -> None:
    dest = tmp_path / "a.txt"
    atomic_write_text(dest, "old")

    def boom(p):
        p.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(dest, boom)
    assert dest.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_read_json_names_the_file_and_checks_the_top_level(tmp_path) -> None:
    path = tmp_path / "results.json"
    path.write_text("{bad")
    with pytest.raises(ValueError, match=r"results\.json: not valid JSON"):
        read_json(path)
    path.write_text("[]")
    with pytest.raises(ValueError, match=r"results\.json: expected a JSON object, found array"):
        read_json(path)
    assert read_json(path, expect=list) == []
    path.write_text('{"a": 1}')
    assert read_json(path) == {"a": 1}
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "missing.json")


def test_json_text_writes_undefined_numbers_as_null() -> None:
    value = {"p": math.nan, "rates": [1.5, math.inf, -math.inf], "n": 3, "t": (0.5, "x")}
    text = json_text(value)
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"p": None, "rates": [1.5, None, None], "n": 3,
                                "t": [0.5, "x"]}


def test_member_of_is_isin() -> None:
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 10**9, 5000)
    probe = np.concatenate([rng.choice(keys, 300), rng.integers(0, 10**9, (300,))])
    probe = probe.reshape(20, 30)
    assert np.array_equal(member_of(probe, keys), np.isin(probe, keys))
    assert member_of(probe, np.zeros(0, dtype=np.int64)).shape == (20, 30)
    assert not member_of(probe, np.zeros(0, dtype=np.int64)).any()
    assert member_of(np.array([keys.max() + 1, keys.min() - 1]), keys).tolist() == [False, False]
