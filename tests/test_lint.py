"""Pyflakes-level errors (undefined names, unused imports, redefinitions, syntax errors) in
the package, its tests and its benchmarks fail the suite: a benchmark script's undefined name
otherwise surfaces only at the end of an hour-long run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_no_pyflakes_errors() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: pip install -e '.[test]'")
    proc = subprocess.run([ruff, "check", "--select", "F,E9", "--output-format", "concise",
                           "--no-cache", "src", "tests", "benchmarks"],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
