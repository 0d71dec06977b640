"""Test helpers for the service: free loopback ports and live servers (thread or subprocess).

Used by genrec's own tests; also handy to test a deployment's bundles end to end::

    with ThreadServer(create_app([bundle_dir])) as srv:
        httpx.post(f"{srv.url}/recommend", json={"user": "196"})
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Self

__all__ = ["ThreadServer", "free_port", "start_cli_server", "wait_healthy"]


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, *, timeout: float = 60.0, proc: subprocess.Popen[Any] | None = None
                 ) -> None:
    """Poll ``url/health`` until it answers 200 (fail early if ``proc`` died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1.0) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


class ThreadServer:
    """uvicorn serving an app in a daemon thread of this process."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_cli_server(args: list[str], port: int, log: Path) -> subprocess.Popen[bytes]:
    """``genrec serve ARGS --port PORT`` as a subprocess, once healthy."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as f:
        proc = subprocess.Popen([sys.executable, "-m", "genrec.cli", "serve", *args,
                                 "--port", str(port)], stdout=f, stderr=subprocess.STDOUT,
                                env=env)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc=proc)
    except BaseException:  # noqa: BLE001 - kill the child on any failure, then report
        proc.kill()
        proc.wait()
        raise RuntimeError(f"server did not start; log:\n{log.read_text()[-3000:]}") from None
    return proc
