"""Fault tests on a real ``genrec serve`` process: kill -9 under feedback load, then restart
(and, on the restarted process, a reload by SIGHUP)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from genrec.serving import open_store
from genrec.serving.testing import free_port, start_cli_server

_log = logging.getLogger(__name__)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill9_loses_no_acknowledged_feedback(bundles, tmp_path, backend, request) -> None:
    url = str(tmp_path / "fb.db") if backend == "sqlite" else request.getfixturevalue("pg_fresh")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    model = tmp_path / "m"
    shutil.copytree(bundles.pop, model)
    args = [f"main={model}", "--feedback-db", url]
    proc = start_cli_server(args, port, tmp_path / "server.log")

    acked: list[str] = []
    sent = [0]
    lock = threading.Lock()
    enough = threading.Event()

    def client(k: int) -> None:
        with httpx.Client(base_url=base, timeout=10) as c:
            for i in range(100_000):  # bounded; ends at the kill
                eid = f"c{k}-{i}"
                with lock:
                    sent[0] += 1
                try:
                    r = c.post("/feedback", json={"events": [
                        {"user": f"u{k}", "item": str(i % 1682 + 1), "event_id": eid}]})
                except httpx.HTTPError:
                    return  # the server is gone
                assert r.status_code == 200, r.text
                with lock:
                    acked.append(eid)
                    if len(acked) >= 150:
                        enough.set()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    assert enough.wait(60), "clients made no progress"
    os.kill(proc.pid, signal.SIGKILL)  # mid-stream: requests are in flight
    proc.wait(10)
    for t in threads:
        t.join(30)
    with lock:
        acknowledged = set(acked)

    proc = start_cli_server(args, port, tmp_path / "server.log")  # restart on the same store
    try:
        r = httpx.post(f"{base}/feedback", json={"events": [
            {"user": "after", "item": "1", "event_id": "after-restart"}]}, timeout=10)
        assert r.status_code == 200
        store = open_store(url)
        stored = store.event_ids()
        store.close()
        if backend == "sqlite":  # the restarted process also serves the SIGHUP test
            _check_sighup_reload(proc, base, model, bundles.ease)
    finally:
        proc.terminate()
        proc.wait(10)
    missing = acknowledged - stored
    _log.warning("kill -9 (%s): %d sent, %d acknowledged, %d stored, %d missing", backend,
                 sent[0], len(acknowledged), len(stored), len(missing))
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"
    assert "after-restart" in stored


def _check_sighup_reload(proc, base: str, path, replacement) -> None:
    """Replace the served bundle's folder, send SIGHUP: the same process serves the new model."""
    assert httpx.get(f"{base}/models").json()["models"][0]["kind"] == "pop"
    tmp = path.parent / "new"
    shutil.copytree(replacement, tmp)
    shutil.rmtree(path)
    os.rename(tmp, path)
    os.kill(proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 30
    while httpx.get(f"{base}/models").json()["models"][0]["kind"] != "ease":
        assert time.monotonic() < deadline, "SIGHUP did not reload the model"
        time.sleep(0.1)
    assert proc.poll() is None  # same process
    r = httpx.post(f"{base}/recommend", json={"model": "main", "user": "196"})
    assert r.status_code == 200 and not r.json()["cold_start"]


@pytest.mark.slow
def test_workers_share_metrics_and_reload_through_the_supervisor(bundles, tmp_path) -> None:
    path = tmp_path / "m"
    shutil.copytree(bundles.pop, path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_cli_server([f"m={path}", "--workers", "2", "--feedback-db",
                             str(tmp_path / "fb.db")], port, tmp_path / "server.log")
    try:
        with httpx.Client(base_url=base, timeout=10) as c:
            for _ in range(20):
                assert c.post("/recommend", json={"user": "1"}).status_code == 200
            # Both workers' counters are summed (prometheus_client multiprocess mode).
            line = ('genrec_http_requests_total{method="POST",route="/recommend",'
                    'status="200"} 20.0')
            assert line in c.get("/metrics").text
            # A corrupted replacement is refused by the worker that checks it: nothing restarts.
            state = path / "model" / "state.safetensors"
            good = state.read_bytes()
            state.write_bytes(good[:-1])
            assert c.post("/admin/reload", json={}).status_code == 409
            state.write_bytes(good)
            # A good one: the supervisor replaces every worker, which then serve the new model.
            shutil.rmtree(path)
            shutil.copytree(bundles.ease, path)
            assert c.post("/admin/reload", json={}).json() == {"reloaded": ["m"]}
            deadline = time.monotonic() + 60
            while True:
                kinds = {c.get("/models").json()["models"][0]["kind"] for _ in range(6)}
                if kinds == {"ease"}:
                    break
                assert time.monotonic() < deadline, f"workers still serve {kinds}"
                time.sleep(0.2)
        # 13 reloads at once are coalesced (uvicorn's supervisor alone queued 13 rolling
        # restarts), and SIGTERM in the middle of a restart still stops within seconds.
        with ThreadPoolExecutor(13) as ex:
            codes = list(ex.map(lambda _: httpx.post(f"{base}/admin/reload", json={},
                                                     timeout=60).status_code, range(13)))
        assert codes == [200] * 13
        t0 = time.monotonic()
        proc.terminate()
        proc.wait(30)
        stopped = time.monotonic() - t0
        _log.warning("SIGTERM after 13 reloads: stopped in %.1f s", stopped)
        assert stopped < 8
        restarts = (tmp_path / "server.log").read_text().count("restarting processes")
        assert restarts <= 3  # the first reload's + at most two for the 13
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(20)
