"""Serving fixtures: bundles made from a real ``genrec run`` on ML-100K, live servers, PostgreSQL.

The live-server helpers are in ``serving_helpers.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from genrec.config import load_config
from genrec.runs.experiment import run_experiment
from genrec.serving import export_run
from genrec.serving.testing import free_port


@dataclass
class Bundles:
    """Bundles of one ML-100K run."""

    run: Path
    ease: Path
    pop: Path


@pytest.fixture(scope="session")
def bundles(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    """``genrec run`` of Pop and EASE on ML-100K, each exported as a bundle."""
    root = tmp_path_factory.mktemp("serving")
    cfg = load_config(None, [f"dataset.data_dir={data_dir}", "dataset.name=ml-100k",
                             f"output={root / 'run'}", "protocol.cutoffs=[10]"])
    cfg = cfg.model_validate(cfg.model_dump() | {"models": [{"kind": "pop"}, {"kind": "ease"}]})
    run_experiment(cfg)
    return Bundles(root / "run", export_run(root / "run", root / "ease", model="ease"),
                   export_run(root / "run", root / "pop", model="pop"))


# -- PostgreSQL ------------------------------------------------------------------------------
def _pg_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                      else 0)
    return versions[-1].parent if versions else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server on a free loopback port (Debian's ``postgresql``).

    Skips only when the server binaries are not installed; ``.ci/run`` installs them.
    """
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: "
                    "apt-get install postgresql (.ci/run does this)")
    user: str | None = None
    pw = None
    if os.geteuid() == 0:  # postgres refuses to run as root
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' user exists to run the server")
        user = "postgres"
    # Not under pytest's tmp folder: that is 0700 root-only, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="genrec-pg-"))
    if pw is not None:
        os.chown(root, pw.pw_uid, pw.pw_gid)
    data, port = root / "data", free_port()
    # --no-sync: initdb's own files only; the server itself runs with fsync on.
    subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                    "-E", "UTF8", "--no-sync"], user=user, check=True, capture_output=True,
                   timeout=120)
    subprocess.run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w",
                    "-t", "60", "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1",
                    "start"], user=user, check=True, capture_output=True, timeout=120)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                        "stop"], user=user, check=False, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_fresh(postgres_url: str) -> str:
    """``postgres_url`` with an empty feedback table."""
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS feedback")
    return postgres_url
