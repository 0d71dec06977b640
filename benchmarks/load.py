"""Load test of ``genrec serve``: N concurrent clients on loopback for T seconds.

Each client holds one keep-alive HTTP/1.1 connection and sends ``POST /recommend`` for random
known users back to back (closed loop, no think time); a share of the requests (5% by
default) is malformed on purpose (bad JSON, k out of range, wrong types, unknown fields) and
must be answered 4xx. Reports throughput, p50/p95/p99 latency of the valid requests and the
count of every status, and writes ``benchmarks/results/<dataset>/load.json``.

The client is a minimal asyncio HTTP/1.1 client in this process; the server is a separate
``genrec serve`` process, so the two share the machine's cores but not a GIL.

Usage::

    GENREC_DATA_DIR=../shared/datasets python benchmarks/load.py --dataset ml-1m --model ease \\
        --clients 32 --duration 20

Without ``--bundle`` the model is fitted on the dataset's leave-one-out split and exported
to a temporary bundle; ``--bundle DIR`` reuses (or, if missing, creates) a bundle there.
``--url`` targets a server that is already running instead of starting one.

``--auth`` starts the server with an API key (``$GENREC_API_KEYS``, no rate limit) and sends
it on every request (``Authorization: Bearer``), to measure what access control costs;
``--api-key KEY`` sends a given key (with ``--url``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
MAX_DURATION = 300.0
"""Upper bound on ``--duration`` (seconds): the load always stops by itself."""
MAX_REQUESTS_PER_CLIENT = 1_000_000
"""Upper bound on requests per client, whatever the duration."""

MALFORMED: list[bytes] = [
    b'{"user": "1", "k": 10',                     # truncated JSON
    b'{"user": "1", "k": 0}',                     # k below 1
    b'{"user": "1", "k": 100000}',                # k above the cap
    b'{"user": ["1"], "k": 10}',                  # wrong type
    b'{"user": "1", "k": 10, "bogus": true}',     # unknown field
    b'[1, 2, 3]',                                 # not an object
    b'{"history": "50", "k": "ten"}',             # wrong types
]


def free_port() -> int:
    """A TCP port free on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of an ascending list."""
    if not sorted_values:
        return float("nan")
    idx = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[idx]


def build_bundle(dataset: str, model: str, dest: Path, data_dir: str | None,
                 epochs: int | None, device: str = "cpu") -> dict[str, Any]:
    """Fit ``model`` on the leave-one-out split of ``dataset`` and export a bundle to ``dest``."""
    from genrec.data.recipes import load_dataset
    from genrec.data.splits import split
    from genrec.evaluation.protocol import Protocol
    from genrec.models.base import FitContext
    from genrec.models.registry import build_model, model_config
    from genrec.runs.experiment import validation_callback
    from genrec.serving import export_bundle

    ds = load_dataset(dataset, data_dir=data_dir)
    sp = split(ds)
    params: dict[str, Any] = {}
    if model in ("sasrec", "gru4rec"):
        params = {"max_len": 200, "train": {"epochs": epochs or 5, "progress": False,
                                            "device": device}}
    m = build_model(model_config(model, **params))
    t0 = time.perf_counter()
    ctx = FitContext(validate=validation_callback(sp.valid_set(), Protocol())
                     if model in ("sasrec", "gru4rec") else None)
    m.fit(sp.train, ctx)
    fit_s = time.perf_counter() - t0
    export_bundle(m, ds, dest, histories=sp.train.concat(sp.valid), overwrite=True)
    return {"fit_seconds": round(fit_s, 2), "config": m.config.model_dump(mode="json")}


class Conn:
    """One keep-alive HTTP/1.1 connection with just enough parsing for this benchmark."""

    def __init__(self, host: str, port: int, key: str | None = None) -> None:
        self.host, self.port = host, port
        self.auth = b"Authorization: Bearer %s\r\n" % key.encode() if key else b""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> int:
        """Send one POST and read the whole answer; returns the status code."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP,
                                                            socket.TCP_NODELAY, 1)
        assert self.reader is not None
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                          b"%sContent-Length: %d\r\n\r\n%s" % (
                              path.encode(), self.host.encode(), self.auth, len(body), body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length:
            await self.reader.readexactly(length)
        if close:
            await self.close()
        return status

    async def close(self) -> None:
        """Close the connection (reopened on the next request)."""
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


async def client(host: str, port: int, users: list[str], k: int, malformed_share: float,
                 deadline: float, seed: int, out: list[tuple[bool, int, float]],
                 key: str | None = None) -> None:
    """Send requests until ``deadline``; append ``(valid, status, seconds)`` to ``out``."""
    rng = random.Random(seed)
    conn = Conn(host, port, key)
    for _ in range(MAX_REQUESTS_PER_CLIENT):
        if time.perf_counter() >= deadline:
            break
        bad = rng.random() < malformed_share
        body = (rng.choice(MALFORMED) if bad else
                json.dumps({"user": rng.choice(users), "k": k}).encode())
        t0 = time.perf_counter()
        try:
            status = await conn.post("/recommend", body)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            status = 0  # connection error
            await conn.close()
        out.append((not bad, status, time.perf_counter() - t0))
    await conn.close()


async def warm_up(host: str, port: int, users: list[str], *, clients: int, seconds: float,
                  k: int, seed: int, key: str | None = None) -> None:
    """Valid requests only, not counted: first-call costs and connection set-up."""
    await asyncio.gather(*[client(host, port, users, k, 0.0, time.perf_counter() + seconds,
                                  seed + 1000 + i, [], key) for i in range(clients)])


async def run_load(host: str, port: int, users: list[str], *, clients: int, duration: float,
                   k: int, malformed_share: float, seed: int, key: str | None = None
                   ) -> tuple[list[tuple[bool, int, float]], float]:
    """Run ``clients`` clients for ``duration`` seconds."""
    out: list[tuple[bool, int, float]] = []
    t0 = time.perf_counter()
    deadline = t0 + duration
    await asyncio.gather(*[client(host, port, users, k, malformed_share, deadline, seed + i, out,
                                  key) for i in range(clients)])
    return out, time.perf_counter() - t0


def server_buckets(metrics_text: str, route: str = "/recommend") -> dict[str, float]:
    """Cumulative request counts per latency bucket (``le`` in seconds) seen by the server."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(metrics_text):
        for smp in fam.samples:
            if smp.name.endswith("_bucket") and smp.labels.get("route") == route:
                out[smp.labels["le"]] = out.get(smp.labels["le"], 0.0) + smp.value
    return out


def server_latency(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Share of the run's requests the server handled within each bucket bound."""
    delta = {le: after.get(le, 0.0) - before.get(le, 0.0) for le in after}
    total = delta.get("+Inf", 0.0)
    if not total:
        return {}
    return {"requests": int(total), "share_within_ms": {
        f"{float(le) * 1000:g}": round(v / total, 4) for le, v in
        sorted(delta.items(), key=lambda kv: float(kv[0])) if le != "+Inf"}}


def summarise(samples: list[tuple[bool, int, float]], elapsed: float) -> dict[str, Any]:
    """Throughput, latency percentiles (ms) and status counts."""
    valid = sorted(s for ok, _, s in samples if ok)
    everything = sorted(s for _, _, s in samples)
    statuses = Counter(str(st) for _, st, _ in samples)
    bad_statuses = Counter(str(st) for ok, st, _ in samples if not ok)

    def lat(values: list[float]) -> dict[str, float]:
        return {f"p{q}": round(percentile(values, q) * 1000, 3) for q in (50, 95, 99)} | {
            "mean": round(sum(values) / max(len(values), 1) * 1000, 3),
            "max": round((values[-1] if values else float("nan")) * 1000, 3)}

    return {
        "requests": len(samples),
        "seconds": round(elapsed, 3),
        "throughput_rps": round(len(samples) / elapsed, 1),
        "valid_requests": len(valid),
        "malformed_requests": len(samples) - len(valid),
        "latency_ms_valid": lat(valid),
        "latency_ms_all": lat(everything),
        "status_counts": dict(sorted(statuses.items())),
        "malformed_status_counts": dict(sorted(bad_statuses.items())),
        "valid_non_200": sum(1 for ok, st, _ in samples if ok and st != 200),
        "malformed_not_4xx": sum(1 for ok, st, _ in samples if not ok and not 400 <= st < 500),
        "server_errors_5xx": sum(1 for _, st, _ in samples if 500 <= st < 600),
        "connection_errors": statuses.get("0", 0),
    }


def auth_cost(n: int = 20000) -> dict[str, Any]:
    """Per-request cost (µs) of the service's middleware on a no-op app, without and with an
    API key (lookup, scope, rate limiter): the part of a request that access control adds,
    measured in-process so that it does not drown in the noise of a shared machine."""
    from genrec.serving._guard import Guard
    from genrec.serving.auth import KeyRing, RateLimiter

    class _M:  # metrics sink
        def labels(self, *a: Any) -> _M:
            return self

        def inc(self, *a: Any) -> None: ...

        def observe(self, *a: Any) -> None: ...

    metrics = type("Metrics", (), {"requests": _M(), "latency": _M()})()
    secret = secrets.token_urlsafe(24)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def go(keys: KeyRing) -> float:
        guard = Guard(app, metrics, 1 << 20, 10.0, keys, RateLimiter(0))
        body = b'{"user": "1", "k": 10}'

        async def receive() -> Any:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(_: Any) -> None: ...

        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()),
                   (b"authorization", b"Bearer " + secret.encode())]
        t0 = time.perf_counter()
        for _ in range(n):
            await guard({"type": "http", "method": "POST", "path": "/recommend",
                         "headers": headers}, receive, send)
        return (time.perf_counter() - t0) / n * 1e6

    ring = KeyRing.from_compact(f"bench:{secret}:recommend")
    off = min(asyncio.run(go(KeyRing([]))) for _ in range(5))
    on = min(asyncio.run(go(ring)) for _ in range(5))
    return {"middleware_us_without_keys": round(off, 2), "middleware_us_with_key": round(on, 2),
            "auth_adds_us": round(on - off, 2), "requests_per_trial": n, "trials": 5}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, prepare a bundle and a server, run the load, write the report."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--dataset", default="ml-1m")
    p.add_argument("--model", default="ease", help="model kind (ease, pop, sasrec, ...)")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--duration", type=float, default=20.0, help=f"seconds (<= {MAX_DURATION})")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up, not counted")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--malformed", type=float, default=0.05, help="share of malformed requests")
    p.add_argument("--bundle", type=Path, help="bundle folder to use, or to create if missing")
    p.add_argument("--url", help="an already running server (skips bundle and server start)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per server process")
    p.add_argument("--workers", type=int, default=1, help="server processes (genrec serve)")
    p.add_argument("--epochs", type=int, help="training epochs for torch models")
    p.add_argument("--train-device", default="cpu", choices=["cpu", "cuda", "auto"],
                   help="where torch models train (they are always served on the CPU)")
    p.add_argument("--data-dir", default=os.environ.get("GENREC_DATA_DIR"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--auth", action="store_true",
                   help="start the server with an API key and send it on every request")
    p.add_argument("--api-key", help="API key to send (for --url)")
    p.add_argument("--out", type=Path, help="default: benchmarks/results/<dataset>/load.json")
    p.add_argument("--auth-cost", action="store_true",
                   help="only measure the middleware's per-request cost without/with a key")
    a = p.parse_args(argv)
    if a.auth_cost:
        report = {"benchmark": "auth_cost", "command": "python benchmarks/load.py --auth-cost",
                  **auth_cost(), "environment": {"python": platform.python_version(),
                                                 "cpus": os.cpu_count()}}
        out = a.out or ROOT / "benchmarks" / "results" / a.dataset / "auth_cost.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report))
        return 0
    if not 0 < a.duration <= MAX_DURATION or not 1 <= a.clients <= 1024:
        p.error(f"--duration must be in (0, {MAX_DURATION}] and --clients in [1, 1024]")

    build: dict[str, Any] = {}
    server = None
    key = a.api_key or (secrets.token_urlsafe(24) if a.auth and not a.url else None)
    headers = {"authorization": f"Bearer {key}"} if key else {}
    tmp = tempfile.TemporaryDirectory(prefix="genrec-load-")
    try:
        if a.url:
            parts = urlsplit(a.url)
            host, port = parts.hostname or "127.0.0.1", parts.port or 80
            if host not in ("127.0.0.1", "localhost", "::1"):
                p.error("the load test only targets loopback servers")
        else:
            bundle = a.bundle or Path(tmp.name) / "bundle"
            if not (bundle / "manifest.json").is_file():
                print(f"fitting {a.model} on {a.dataset} ...", file=sys.stderr)
                build = build_bundle(a.dataset, a.model, bundle, a.data_dir, a.epochs,
                                     a.train_device)
            host, port = "127.0.0.1", free_port()
            log = open(Path(tmp.name) / "server.log", "wb")  # noqa: SIM115 - lives with server
            server = subprocess.Popen(
                [sys.executable, "-m", "genrec.cli", "serve", str(bundle), "--port", str(port),
                 "--feedback-db", str(Path(tmp.name) / "fb.db"), "--threads", str(a.threads),
                 "--workers", str(a.workers), "--rate-limit", "0"],
                stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "GENREC_API_KEYS": f"bench:{key}:recommend+admin"}
                if key else None)
        base = f"http://{host}:{port}"
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server is not None and server.poll() is not None:
                raise RuntimeError((Path(tmp.name) / "server.log").read_text()[-3000:])
            if time.monotonic() > deadline:
                raise TimeoutError(f"{base} did not become healthy")
            time.sleep(0.2)
        info = httpx.get(f"{base}/models", headers=headers).json()["models"][0]
        if a.bundle or not a.url:
            import polars as pl

            users = pl.read_parquet((a.bundle or Path(tmp.name) / "bundle") / "users.parquet")[
                "user"].to_list()
        else:
            users = info["sample_users"]
        if a.warmup > 0:
            asyncio.run(warm_up(host, port, users, clients=min(a.clients, 4), seconds=a.warmup,
                                k=a.k, seed=a.seed, key=key))
        before = server_buckets(httpx.get(f"{base}/metrics", headers=headers).text)
        print(f"{a.clients} clients for {a.duration:.0f}s against {info['name']} "
              f"({info['kind']}, {info['dataset']}, {info['n_items']} items) ...", file=sys.stderr)
        samples, elapsed = asyncio.run(run_load(
            host, port, users, clients=a.clients, duration=a.duration, k=a.k,
            malformed_share=a.malformed, seed=a.seed, key=key))
        server_metrics = httpx.get(f"{base}/metrics", headers=headers).text
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        tmp.cleanup()

    report = {
        "benchmark": "load",
        "command": "python benchmarks/load.py " + " ".join(sys.argv[1:] if argv is None
                                                           else argv),
        "dataset": info["dataset"], "model": info["kind"], "model_config": info["config"],
        "n_users": info["n_users"], "n_items": info["n_items"], "k": a.k,
        "clients": a.clients, "duration_s": a.duration, "malformed_share": a.malformed,
        "server_workers": a.workers, "server_torch_threads": a.threads,
        "api_key": bool(key),
        **({"build": build} if build else {}),
        **summarise(samples, elapsed),
        "server_side_latency": server_latency(before, server_buckets(server_metrics)),
        "server_5xx_in_metrics": sum(
            float(line.rsplit(" ", 1)[1]) for line in server_metrics.splitlines()
            if line.startswith("genrec_http_requests_total") and 'status="5' in line),
        "environment": {"python": platform.python_version(), "machine": platform.machine(),
                        "cpus": os.cpu_count(), "note": "client and server share these cores"},
    }
    out = a.out or ROOT / "benchmarks" / "results" / str(info["dataset"]) / "load.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    v = report["latency_ms_valid"]
    print(f"{report['requests']:,} requests in {report['seconds']}s: "
          f"{report['throughput_rps']:,} req/s; valid p50 {v['p50']} ms, p95 {v['p95']} ms, "
          f"p99 {v['p99']} ms; statuses {report['status_counts']}; "
          f"5xx {report['server_errors_5xx']}; written to {out}")
    return 0 if report["server_errors_5xx"] == 0 and report["connection_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
