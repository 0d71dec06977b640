"""A local llama.cpp server (the ``xllamacpp`` wheel) for tests, demos and the CLI.

:class:`LocalLlamaServer` runs llama.cpp's own OpenAI-compatible HTTP server on a free
loopback port in a child process (so its logs and any crash stay out of the caller), waits
for ``/health`` and stops it on exit. Use **1 thread**: with another CPU-bound process on a
small machine, more threads make requests 100x slower.

Run by hand: ``python -m genrec.llm.local --model path/to/model.gguf --port 8080``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

import httpx

__all__ = ["LocalLlamaServer", "free_port"]

_log = logging.getLogger(__name__)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalLlamaServer:
    """llama.cpp's server on ``127.0.0.1`` serving one GGUF model.

    Args:
        model_path: The ``.gguf`` file.
        port: TCP port (a free one by default).
        n_ctx: Context length.
        threads: CPU threads of generation and prompt processing.
        alias: Model name the server reports (default: the file stem).
        startup_timeout_s: How long to wait for ``/health``.

    Raises:
        FileNotFoundError: If ``model_path`` does not exist.
    """

    def __init__(self, model_path: str | Path, *, port: int | None = None, n_ctx: int = 2048,
                 threads: int = 1, alias: str | None = None,
                 startup_timeout_s: float = 60.0) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"no GGUF model at {self.model_path}")
        self.port = port or free_port()
        self.n_ctx = n_ctx
        self.threads = threads
        self.alias = alias or self.model_path.stem
        self.startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def log_path(self) -> Path | None:
        """The server's log file while it runs."""
        return Path(self._log.name) if self._log is not None else None

    def start(self) -> LocalLlamaServer:
        """Start the server and wait until it answers ``/health``.

        Raises:
            RuntimeError: If it exits or does not become healthy in time (the child and its
                log are cleaned up, as on any other failure or interrupt while starting).
        """
        # kept open for the child's lifetime (closed in stop), so no context manager
        self._log = tempfile.NamedTemporaryFile(prefix="genrec-llama-", suffix=".log",  # noqa: SIM115
                                                delete=False)
        # The child watches this pid: when its parent changes, the parent died (a subreaper
        # may adopt it, so "adopted by init" is not the test).
        cmd = [sys.executable, "-m", "genrec.llm.local", "--model", str(self.model_path),
               "--port", str(self.port), "--ctx", str(self.n_ctx),
               "--threads", str(self.threads), "--alias", self.alias,
               "--parent-pid", str(os.getpid())]
        try:
            self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)
            self._wait_healthy()
        except BaseException:  # a dead child, a timeout, Ctrl-C: leave no process or log behind
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with {self._proc.returncode}: "
                                   f"{self._tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1.0).status_code \
                        == 200:
                    _log.info("llama.cpp server for %s on port %d", self.alias, self.port)
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"llama.cpp server not healthy after {self.startup_timeout_s}s")

    def _tail(self) -> str:
        if self._log is None:
            return ""
        try:
            return Path(self._log.name).read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server (terminate, then kill after 5 s) and remove its log."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None
        if self._log is not None:
            self._log.close()
            Path(self._log.name).unlink(missing_ok=True)
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve(model: str, port: int, n_ctx: int, threads: int, alias: str,
           parent_pid: int | None = None) -> None:
    """Serve until SIGTERM/SIGINT or until the parent ``parent_pid`` (default: the current
    parent) dies, which shows as a change of ``os.getppid()``."""
    parent = os.getppid() if parent_pid is None else parent_pid
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = model
    p.hostnames = ["127.0.0.1"]
    p.port = port
    p.n_ctx = n_ctx
    p.n_parallel = 1
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    p.model_alias = {alias}
    server = xllamacpp.Server(p)  # serves on background threads until destroyed
    stop = False

    def handle(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    while not stop and os.getppid() == parent:  # also stop when the parent died
        time.sleep(0.2)
    del server


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: serve one model until SIGTERM/SIGINT."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--alias", default=None)
    ap.add_argument("--parent-pid", type=int, default=None,
                    help="stop when this process is no longer the parent (default: the parent)")
    a = ap.parse_args(argv)
    _serve(a.model, a.port, a.ctx, a.threads, a.alias or Path(a.model).stem, a.parent_pid)


if __name__ == "__main__":
    main()
