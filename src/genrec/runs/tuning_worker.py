"""One ``genrec tune`` worker process: ``python -m genrec.runs.tuning_worker`` reads its job
(JSON, see :func:`genrec.runs.tuning.run_worker`) on stdin and runs its share of the study."""

from __future__ import annotations

import json
import sys

from genrec.runs.tuning import run_worker

__all__: list[str] = []

if __name__ == "__main__":
    run_worker(json.load(sys.stdin))
