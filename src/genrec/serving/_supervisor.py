"""Several uvicorn workers under a supervisor that coalesces reloads and stops promptly.

uvicorn's own supervisor queues every SIGHUP (13 reload requests made 13 rolling restarts)
and handles SIGTERM only after the queued restarts (40-45 s). This one restarts once for all
the SIGHUPs that arrived together, and a SIGTERM stops a restart in progress at once.
"""

from __future__ import annotations

import signal
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

__all__ = ["GRACEFUL_SHUTDOWN_S", "run_workers"]

GRACEFUL_SHUTDOWN_S = 3
"""Seconds a stopping worker waits for open requests before closing their connections."""


class _Supervisor(Multiprocess):
    def __init__(self, config: uvicorn.Config, sockets: list[Any]) -> None:
        super().__init__(config, sockets)

        def stop(sig: int, _frame: Any) -> None:
            self.signal_queue.append(sig)
            self.should_exit.set()  # now: a restart in progress checks it and gives up

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, stop)

    def handle_signals(self) -> None:
        pending: list[int] = []
        while self.signal_queue:
            sig = self.signal_queue.pop(0)
            if sig not in pending:  # one restart for every SIGHUP queued so far
                pending.append(sig)
        self.signal_queue.extend(pending)
        super().handle_signals()


def run_workers(app: str, *, host: str, port: int, workers: int, access_log: bool,
                limit_concurrency: int | None) -> None:
    """Serve the app factory ``app`` (``module:function``) with ``workers`` processes."""
    config = uvicorn.Config(app, factory=True, host=host, port=port, workers=workers,
                            access_log=access_log, log_level="info",
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
                            limit_concurrency=limit_concurrency)
    sock = config.bind_socket()
    _Supervisor(config, sockets=[sock]).run()
