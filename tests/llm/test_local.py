"""LocalLlamaServer's process hygiene, without llama.cpp: a failed start leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
import threading
import types
from pathlib import Path

import httpx
import pytest

from genrec.llm import local


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch):
    """Replace the server command by ``script`` (set it in the test); record the processes."""
    state: dict = {"script": "import time; time.sleep(60)", "procs": [], "cmds": [], "logs": []}
    real = subprocess.Popen

    def popen(cmd, **kw):
        state["cmds"].append(cmd)
        state["logs"].append(Path(kw["stdout"].name))
        p = real([sys.executable, "-c", state["script"]], **kw)
        state["procs"].append(p)
        return p

    monkeypatch.setattr(local.subprocess, "Popen", popen)
    yield state
    for p in state["procs"]:  # never leave a child behind, even when the test fails
        if p.poll() is None:
            p.kill()
            p.wait(5)


def _gguf(tmp_path: Path) -> Path:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"not a gguf")
    return path


def test_child_that_exits_is_reported_and_cleaned_up(tmp_path: Path, spawned) -> None:
    spawned["script"] = "import sys; print('bad model file', flush=True); sys.exit(3)"
    s = local.LocalLlamaServer(_gguf(tmp_path), startup_timeout_s=20)
    with pytest.raises(RuntimeError, match="exited with 3.*bad model file"):
        s.start()
    assert s._proc is None and s._log is None and not spawned["logs"][0].exists()


def test_interrupt_while_starting_stops_the_child(tmp_path: Path, spawned,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(url: str, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(local.httpx, "get", interrupted)
    s = local.LocalLlamaServer(_gguf(tmp_path), startup_timeout_s=20)
    with pytest.raises(KeyboardInterrupt), s:
        pass
    (proc,) = spawned["procs"]
    assert proc.poll() is not None  # terminated, not left running
    assert s._proc is None and s._log is None and not spawned["logs"][0].exists()


def test_timeout_stops_the_child(tmp_path: Path, spawned, monkeypatch) -> None:
    monkeypatch.setattr(local.httpx, "get",
                        lambda url, **kw: (_ for _ in ()).throw(httpx.ConnectError("no")))
    s = local.LocalLlamaServer(_gguf(tmp_path), startup_timeout_s=0.3)
    with pytest.raises(RuntimeError, match="not healthy"):
        s.start()
    assert spawned["procs"][0].poll() is not None and s._log is None


def test_child_watches_the_parent_it_was_spawned_by(tmp_path: Path, spawned,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setattr(local.httpx, "get", lambda url, **kw: httpx.Response(200))
    with local.LocalLlamaServer(_gguf(tmp_path)):
        pass
    cmd = spawned["cmds"][0]
    assert cmd[cmd.index("--parent-pid") + 1] == str(os.getpid())

    # The parent died and a subreaper (not init) adopted the server: it must still stop.
    deleted: list[bool] = []

    class Server:
        def __init__(self, params: object) -> None:
            pass

        def __del__(self) -> None:
            deleted.append(True)

    fake = types.SimpleNamespace(
        CommonParams=lambda: types.SimpleNamespace(
            model=types.SimpleNamespace(), cpuparams=types.SimpleNamespace(),
            cpuparams_batch=types.SimpleNamespace()),
        Server=Server)
    monkeypatch.setitem(sys.modules, "xllamacpp", fake)
    monkeypatch.setattr(local.signal, "signal", lambda *a: None)  # keep pytest's handlers
    monkeypatch.setattr(local.os, "getppid", lambda: 4242)  # the subreaper, not pid 1
    done: list[bool] = []

    def serve() -> None:
        local._serve("m.gguf", 1, 64, 1, "m", parent_pid=1234)
        done.append(True)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    t.join(10)
    assert done == [True] and deleted == [True]
