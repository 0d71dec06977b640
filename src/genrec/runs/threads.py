"""CPU threads for training and scoring, set in one place for every command.

torch's default (one thread per core) oversubscribes a machine that other processes share,
and a time-capped recipe (``train.max_minutes``) then trains fewer epochs and reports other
accuracy. :func:`apply_threads` fixes torch's intra-op pool and the BLAS pools numpy and scipy
use (through threadpoolctl when it is installed) to one number, and says where it came from so
that ``results.json`` records it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

try:  # optional: numpy/scipy BLAS pools (installed with scikit-learn and others)
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - depends on the environment
    threadpool_limits = None

__all__ = ["apply_threads", "available_cpus", "resolve_threads", "thread_record"]

_log = logging.getLogger(__name__)


def available_cpus() -> int:
    """Cores this process may run on (its CPU affinity), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def resolve_threads(threads: int | None) -> tuple[int, str]:
    """The thread count for the ``threads`` config key, and where it came from.

    Args:
        threads: The key; None takes ``$GENREC_THREADS``, else :func:`available_cpus`.

    Returns:
        ``(threads, source)`` with source ``config``, ``GENREC_THREADS`` or ``default``.

    Raises:
        ValueError: If ``$GENREC_THREADS`` is not a positive integer.
    """
    if threads is not None:
        return threads, "config"
    env = os.environ.get("GENREC_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"GENREC_THREADS must be a positive integer, got {env!r}")
        return int(env), "GENREC_THREADS"
    return available_cpus(), "default"


def thread_record(threads: int | None) -> dict[str, Any]:
    """What ``results.json`` records: ``{"threads" (torch's setting now), "threads_source",
    "cpus_available", "load_average_1m"}`` (the load tells a reader whether the machine was
    busy)."""
    try:
        load: float | None = round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - not available
        load = None
    return {"threads": torch.get_num_threads(), "threads_source": resolve_threads(threads)[1],
            "cpus_available": available_cpus(), "load_average_1m": load}


def apply_threads(threads: int | None) -> int:
    """Set torch's intra-op threads and the BLAS pools to :func:`resolve_threads`.

    Returns:
        The thread count set.
    """
    n, source = resolve_threads(threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    if threadpool_limits is not None:
        threadpool_limits(n)
    cpus = available_cpus()
    if n > cpus:
        _log.warning("threads=%d exceeds the %d cores available: runs will oversubscribe",
                     n, cpus)
    _log.info("threads: %d (%s); %d cores available", n, source, cpus)
    return n
