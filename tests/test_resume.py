"""`genrec run --resume` on ML-100K: a killed training resumes to the uninterrupted result; a
resume under other settings is refused; a damaged newest checkpoint falls back to the one
before it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genrec.runs.experiment import unfinished_trainings

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


def _run(out: Path, data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cmd(out, data_dir, *extra), env=_env(), capture_output=True,
                          text=True, timeout=300)


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())["results"][0]


def _error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one ``error:`` line of a failed run (exit code 2, no traceback)."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """An uninterrupted 4-epoch run, with its checkpoints (tests copy it, never change it)."""
    out = tmp_path_factory.mktemp("resume") / "straight"
    proc = _run(out, data_dir)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    ckpt = out / "checkpoints" / "sasrec"
    assert sorted(p.name for p in ckpt.iterdir()) == ["epoch-0003", "epoch-0004",
                                                      "latest.json"]
    return out


def _copy(straight: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(straight, tmp_path / "run"))


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted(straight: Path, tmp_path: Path,
                                              data_dir: Path) -> None:
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

    resumed = _run(killed, data_dir, "--resume")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    a, b = _results(straight), _results(killed)
    assert a["valid"] == b["valid"] and a["test"] == b["test"]


@pytest.mark.slow
def test_rerun_without_resume_refuses_to_overwrite_an_unfinished_training(
        straight: Path, tmp_path: Path, data_dir: Path) -> None:
    run = _copy(straight, tmp_path)
    assert unfinished_trainings(run) == []  # finished: a rerun replaces it (with a warning)
    # Killed before the end: no results.json, or a checkpoint newer than it.
    (run / "results.json").unlink()
    assert unfinished_trainings(run) == ["sasrec"]
    ckpt = run / "checkpoints" / "sasrec"
    before = {p.relative_to(ckpt): p.read_bytes() for p in ckpt.rglob("*") if p.is_file()}
    line = _error_line(_run(run, data_dir))
    assert "holds unfinished trainings (sasrec" in line and "--resume" in line
    assert {p.relative_to(ckpt): p.read_bytes() for p in ckpt.rglob("*") if p.is_file()} == before
    shutil.copy(straight / "results.json", run / "results.json")
    t = (run / "results.json").stat().st_mtime
    os.utime(ckpt / "latest.json", (t + 60, t + 60))  # a rerun of it, killed in its training
    assert unfinished_trainings(run) == ["sasrec"]


@pytest.mark.slow
def test_resume_with_another_learning_rate_is_refused(straight: Path, tmp_path: Path,
                                                      data_dir: Path) -> None:
    run = _copy(straight, tmp_path)
    ckpt = run / "checkpoints" / "sasrec"
    before = {p.relative_to(ckpt): p.read_bytes() for p in ckpt.rglob("*") if p.is_file()}
    line = _error_line(_run(run, data_dir, "--resume", "--set", "models.0.train.lr=0.01"))
    assert "refusing to resume" in line and "train.lr: 0.001 in the checkpoint, 0.01 now" in line
    assert "split" not in line  # only what differs is named
    # The checkpoints and the results of the original run are untouched.
    assert {p.relative_to(ckpt): p.read_bytes() for p in ckpt.rglob("*") if p.is_file()} == before
    assert _results(run) == _results(straight)


@pytest.mark.slow
@pytest.mark.parametrize(("flags", "named"), [
    (["--split", "random"], "split.kind: 'leave_one_out' in the checkpoint, 'random' now"),
    (["--seed", "7"], "split.seed: 42 in the checkpoint, 7 now"),
])
def test_resume_with_another_split_is_refused(straight: Path, tmp_path: Path, data_dir: Path,
                                              flags: list[str], named: str) -> None:
    run = _copy(straight, tmp_path)
    line = _error_line(_run(run, data_dir, "--resume", *flags))
    assert "refusing to resume" in line and named in line
    assert "model." not in line


@pytest.mark.slow
def test_truncated_newest_checkpoint_resumes_from_the_previous_one(
        straight: Path, tmp_path: Path, data_dir: Path) -> None:
    run = _copy(straight, tmp_path)
    ckpt = run / "checkpoints" / "sasrec"
    _truncate(ckpt / "epoch-0004" / "model.safetensors")
    proc = _run(run, data_dir, "--resume")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    logged = " ".join((proc.stdout + proc.stderr).split())  # rich wraps log lines
    assert "epoch-0004 is unreadable" in logged
    assert "resuming from the older checkpoint" in logged and "epoch-0003" in logged
    a, b = _results(straight), _results(run)
    assert b["training"]["history"][-1]["epoch"] == 4  # epoch 4 was trained again...
    assert a["valid"] == b["valid"] and a["test"] == b["test"]  # ...to the same result
    assert json.loads((ckpt / "latest.json").read_text()) == {"dir": "epoch-0004"}


@pytest.mark.slow
def test_unreadable_checkpoints_give_one_clear_error(straight: Path, tmp_path: Path,
                                                     data_dir: Path) -> None:
    run = _copy(straight, tmp_path)
    ckpt = run / "checkpoints" / "sasrec"
    _truncate(ckpt / "epoch-0004" / "model.safetensors")
    (ckpt / "epoch-0003" / "state.json").write_text("")
    line = _error_line(_run(run, data_dir, "--resume"))
    assert f"no readable checkpoint in {ckpt}" in line
    assert "epoch-0004: SafetensorError" in line and "epoch-0003: JSONDecodeError" in line


@pytest.mark.slow
def test_a_name_is_a_label_a_checkpoint_resumes_under_it(straight: Path, tmp_path: Path,
                                                         data_dir: Path) -> None:
    """``name`` only labels a model: its checkpoint identity leaves the name out (so
    checkpoints written before names existed still resume), and a checkpoint folder moved to
    the new name resumes there to the same result."""
    run = _copy(straight, tmp_path)
    state = json.loads((run / "checkpoints" / "sasrec" / "epoch-0004" / "state.json").read_text())
    assert "name" not in state["identity"]["model"]
    ckpt = run / "checkpoints" / "sasrec-small"
    (run / "checkpoints" / "sasrec").rename(ckpt)
    written = {p: p.stat().st_mtime_ns for p in ckpt.rglob("*") if p.is_file()}
    proc = _run(run, data_dir, "--resume", "--set", "models.0.name=sasrec-small")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    # Resumed after its last epoch: nothing retrained, no checkpoint rewritten.
    assert {p: p.stat().st_mtime_ns for p in ckpt.rglob("*") if p.is_file()} == written
    assert not (run / "checkpoints" / "sasrec").exists()
    a, b = _results(straight), _results(run)
    assert (b["model"], b["kind"]) == ("sasrec-small", "sasrec")
    assert a["valid"] == b["valid"] and a["test"] == b["test"]
