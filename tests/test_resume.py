"""Kill -9 a `genrec run` training mid-run, resume it, and get the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ARGS = ["--dataset", "ml-100k", "--models", "sasrec", "--quiet",
        "--set", "models.0.dim=16", "--set", "models.0.max_len=20",
        "--set", "models.0.train.epochs=4", "--set", "models.0.train.patience=null",
        "--set", "models.0.train.progress=false", "--set", "models.0.train.device=cpu",
        "--set", "save_models=false"]


def _cmd(out: Path, data_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "genrec.cli", "run", *ARGS, "--output", str(out),
            "--data-dir", str(data_dir), *extra]


def _env() -> dict[str, str]:
    return os.environ | {"OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted(tmp_path: Path, data_dir: Path) -> None:
    straight = tmp_path / "straight"
    subprocess.run(_cmd(straight, data_dir), check=True, env=_env(), capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(killed, data_dir), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    latest = killed / "checkpoints" / "sasrec" / "latest.json"
    deadline = time.monotonic() + 120
    while not latest.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)   # mid-way through epoch 2
    proc.wait()
    assert not (killed / "results.json").exists()

    subprocess.run(_cmd(killed, data_dir, "--resume"), check=True, env=_env(),
                   capture_output=True)
    a = json.loads((straight / "results.json").read_text())["results"][0]
    b = json.loads((killed / "results.json").read_text())["results"][0]
    assert a["valid"] == b["valid"] and a["test"] == b["test"]
