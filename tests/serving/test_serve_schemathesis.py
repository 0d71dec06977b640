"""Property-based fuzzing of the OpenAPI schema with schemathesis: no input gives a 5xx."""

from __future__ import annotations

import subprocess
import sys

import pytest

from genrec.serving import ServeSettings, create_app
from genrec.serving.testing import ThreadServer


@pytest.mark.slow
def test_schemathesis_finds_no_server_error(bundles, tmp_path) -> None:
    pytest.importorskip("schemathesis")
    app = create_app([bundles.ease, f"popular={bundles.pop}"],
                     settings=ServeSettings(feedback_url=str(tmp_path / "fb.db")))
    with ThreadServer(app) as srv:
        # Bounded: a few examples per operation and phase, a fixed seed, a timeout.
        proc = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", f"{srv.url}/openapi.json",
             "--checks", "not_a_server_error", "--max-examples", "25", "--seed", "7",
             "--workers", "1", "--no-color", "--generation-database", "none",
             "--phases", "examples,coverage,fuzzing"],
            check=False, capture_output=True, text=True, timeout=120,
            cwd=tmp_path)  # its cache stays out of the repository
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "generated" in out  # it did run cases
    statuses = {s.labels["status"] for m in app.state.metrics.registry.collect()
                for s in m.samples if s.name == "genrec_http_requests_total"}
    assert "422" in statuses and not {s for s in statuses if s.startswith("5")}
