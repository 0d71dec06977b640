"""Shared fixtures: the real datasets folder (``GENREC_DATA_DIR``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder of real datasets: ``$GENREC_DATA_DIR`` or ``../shared/datasets``.

    Relative values of ``GENREC_DATA_DIR`` are taken from the repository root (the README
    says ``GENREC_DATA_DIR=../shared/datasets``). Tests skip when the folder is absent.
    """
    env = os.environ.get("GENREC_DATA_DIR")
    path = Path(env).expanduser() if env else DEFAULT_DATA_DIR
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not path.is_dir():
        pytest.skip(f"real datasets not available: {path} does not exist "
                    "(set GENREC_DATA_DIR to the shared datasets folder)")
    return path.resolve()
