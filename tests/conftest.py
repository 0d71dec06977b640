"""Shared fixtures: the real datasets folder (``GENREC_DATA_DIR``), one torch thread for the
tiny-model test packages; the unit of work of parallel runs (``make test``: pytest-xdist)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

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


_ONE_THREAD = {"models", "training", "semantic_ids"}
"""Test packages of tiny tensors: they gain nothing from intra-op threads, and on a busy
2-core machine the thread barrier made each step 10-20 times slower (measured)."""


@pytest.fixture(autouse=True)
def _one_thread(request: pytest.FixtureRequest) -> Iterator[None]:
    if Path(request.node.path).parent.name not in _ONE_THREAD:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``make test`` runs ``pytest -n 2 --dist loadgroup``: every test file is one unit of work
    (its module fixtures are built once, in one worker), except the files marked
    ``xdist_group("ray")``, which share one: they start a local Ray cluster, and Ray does not
    support two on one machine. Without ``-n`` this changes nothing."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.path.relative_to(REPO_ROOT).as_posix()))
