"""Access control and abuse limits on a real loopback server: keys and scopes, event-id
scoping, rate limits, stalled bodies, cross-site reloads, coalesced reloads, and the refusal
to expose an open service."""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from typer.testing import CliRunner

from genrec.cli import app as cli
from genrec.serving import ServeSettings, create_app, open_store
from genrec.serving.auth import KeyRing, RateLimiter, check_exposure
from genrec.serving.testing import ThreadServer

REC = "recommend-only-key-0001"
HIST = "recommend-history-key-02"
FB = "feedback-only-key-000003"
FB2 = "other-feedback-key-00004"
ADMIN = "admin-only-key-000000005"
SLOW = "slow-rate-limited-key-06"
KEYS = [
    {"id": "rec", "key": REC, "scopes": ["recommend"]},
    {"id": "hist", "key": HIST, "scopes": ["recommend", "history"]},
    {"id": "fb", "key": FB, "scopes": ["feedback"]},
    {"id": "fb2", "key": FB2, "scopes": ["feedback"]},
    {"id": "admin", "key": ADMIN, "scopes": ["admin"]},
    {"id": "slow", "key": SLOW, "scopes": ["recommend"], "rate": 1, "burst": 3},
]
BODY_TIMEOUT = 1.0

# Every route but /health, with a body its scope accepts.
ROUTES = [
    ("GET", "/models", None, REC), ("POST", "/recommend", {"user": "196"}, REC),
    ("POST", "/similar", {"item": "50"}, REC),
    ("POST", "/feedback", {"events": [{"user": "1", "item": "2"}]}, FB),
    ("GET", "/metrics", None, ADMIN), ("POST", "/admin/reload", {}, ADMIN),
    ("GET", "/openapi.json", None, REC), ("GET", "/docs", None, REC),
    ("GET", "/playground", None, REC),
]


def h(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def reloads_ok(client: httpx.Client) -> float:
    """Successful reloads so far (Prometheus counter)."""
    text = client.get("/metrics", headers=h(ADMIN)).text
    line = [x for x in text.splitlines() if x.startswith('genrec_model_reloads_total{result="ok"}')]
    return float(line[0].rsplit(" ", 1)[1]) if line else 0.0


@pytest.fixture(scope="module")
def server(bundles, tmp_path_factory) -> Iterator[ThreadServer]:
    root = tmp_path_factory.mktemp("security")
    shutil.copytree(bundles.pop, root / "pop")
    app = create_app([bundles.ease, f"popular={root / 'pop'}"], settings=ServeSettings(
        feedback_url=str(root / "fb.db"), api_keys=KEYS, rate_limit=0,
        body_timeout=BODY_TIMEOUT))
    with ThreadServer(app) as srv:
        srv.root = root  # type: ignore[attr-defined]
        yield srv


@pytest.fixture(scope="module")
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.mark.parametrize(("method", "path", "body", "key"), ROUTES)
def test_every_route_but_health_needs_a_valid_key(client, method, path, body, key) -> None:
    kw = {"json": body} if body is not None else {}
    for headers in ({}, h("wrong-key-wrong-key-wrong"), {"x-api-key": "nope"},
                    {"authorization": f"Basic {key}"}):
        r = client.request(method, path, headers=headers, **kw)
        assert r.status_code == 401, (path, headers, r.status_code)
        assert "API key" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
    r = client.request(method, path, headers=h(key), **kw)
    assert r.status_code == 200, (path, r.text)
    assert client.request(method, path, headers={"x-api-key": key}, **kw).status_code == 200


def test_health_is_open_and_reports_auth(client) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["auth"] is True
    assert [m["name"] for m in body["model_status"]] == ["ease", "popular"]
    assert all(m["ready"] for m in body["model_status"])


def test_scopes(client) -> None:
    # A recommend-only key reads no stored history and writes no feedback.
    r = client.post("/recommend", json={"user": "196", "include_history": True}, headers=h(REC))
    assert r.status_code == 403 and "history" in r.json()["detail"]
    r = client.post("/feedback", json={"events": [{"user": "1", "item": "2"}]}, headers=h(REC))
    assert r.status_code == 403
    r = client.post("/recommend", json={"user": "196", "include_history": True}, headers=h(HIST))
    assert r.status_code == 200 and len(r.json()["history"]) > 0
    # A feedback key cannot reload, recommend or read metrics.
    assert client.post("/admin/reload", json={}, headers=h(FB)).status_code == 403
    assert client.post("/recommend", json={"user": "196"}, headers=h(FB)).status_code == 403
    assert client.get("/metrics", headers=h(FB)).status_code == 403
    # An admin key is not a recommend key.
    assert client.post("/recommend", json={}, headers=h(ADMIN)).status_code == 403


def test_event_ids_are_scoped_to_their_key(client, server) -> None:
    ev = {"user": "1", "item": "2", "event_id": "e-42"}
    # Another key sends the id first: it does not claim it for the real sender.
    assert client.post("/feedback", json={"events": [ev | {"user": "attacker"}]},
                       headers=h(FB2)).json()["stored"] == 1
    assert client.post("/feedback", json={"events": [ev]}, headers=h(FB)).json()["stored"] == 1
    assert client.post("/feedback", json={"events": [ev]}, headers=h(FB)).json()["stored"] == 0
    store = open_store(server.root / "fb.db")
    try:
        by_id = {e.event_id: e.user_id for e in store.events()}
    finally:
        store.close()
    assert by_id["fb/e-42"] == "1" and by_id["fb2/e-42"] == "attacker"


def test_rate_limit_answers_429_with_retry_after(client) -> None:
    codes = [client.post("/recommend", json={}, headers=h(SLOW)) for _ in range(6)]
    assert [r.status_code for r in codes[:3]] == [200, 200, 200]  # the burst
    limited = [r for r in codes if r.status_code == 429]
    assert limited and int(limited[0].headers["retry-after"]) >= 1
    # Other keys are not affected.
    assert client.post("/recommend", json={}, headers=h(REC)).status_code == 200


def test_rate_limiter_refills() -> None:
    key = KeyRing.from_entries([{"id": "k", "key": SLOW, "scopes": ["recommend"], "rate": 2,
                                 "burst": 1}]).keys[0]
    lim = RateLimiter(default_rate=0)
    assert lim.take(key, now=0.0) == 0.0
    assert lim.take(key, now=0.1) == pytest.approx(0.4)
    assert lim.take(key, now=0.5) == 0.0


def test_rate_limiter_share_splits_rate_and_burst() -> None:
    # With --workers N each worker enforces 1/N, so N workers together allow the configured
    # rate and burst, never N times it.
    key = KeyRing.from_entries([{"id": "k", "key": SLOW, "scopes": ["recommend"], "rate": 4,
                                 "burst": 4}]).keys[0]
    workers = [RateLimiter(default_rate=0, share=2) for _ in range(2)]
    allowed = sum(lim.take(key, now=0.0) == 0.0 for lim in workers for _ in range(10))
    assert allowed == 4  # the burst, split 2 + 2
    allowed = sum(lim.take(key, now=1.0) == 0.0 for lim in workers for _ in range(10))
    assert allowed == 4  # one second refills 4 tokens in all (2 each)
    with pytest.raises(ValueError, match="share"):
        RateLimiter(default_rate=1, share=0)


def test_cross_site_reload_is_refused(client) -> None:
    before = reloads_ok(client)
    # What a hostile page can send: a form post (no custom header, so no key) ...
    r = client.post("/admin/reload", data={"model": "popular"})
    assert r.status_code == 401
    # ... and, even holding the key, neither a form nor a text/plain body is accepted ...
    r = client.post("/admin/reload", data={"model": "popular"}, headers=h(ADMIN))
    assert r.status_code in (415, 422)
    r = client.post("/admin/reload", content=b"{}", headers=h(ADMIN) | {
        "content-type": "text/plain"})
    assert r.status_code in (415, 422)
    assert client.post("/admin/reload", headers=h(ADMIN)).status_code == 422  # empty POST
    # ... nor a JSON request a browser marks as cross-site.
    for extra in ({"origin": "https://evil.example"}, {"sec-fetch-site": "cross-site"}):
        r = client.post("/admin/reload", json={}, headers=h(ADMIN) | extra)
        assert r.status_code == 403
    assert reloads_ok(client) == before


def test_concurrent_reloads_are_coalesced(client, server) -> None:
    before = reloads_ok(client)

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60, headers=h(ADMIN)) as c:
            return await asyncio.gather(*[c.post("/admin/reload", json={"model": "popular"})
                                          for _ in range(12)])

    answers = asyncio.run(fire())
    assert all(r.status_code == 200 and r.json() == {"reloaded": ["popular"]} for r in answers)
    assert 1 <= reloads_ok(client) - before <= 2  # 12 requests, at most two reloads


def test_stalled_bodies_are_closed_within_the_timeout(server) -> None:
    socks = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        s.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Authorization: Bearer " + REC.encode() + b"\r\nContent-Length: 1000\r\n\r\n"
                  b'{"user": ')
        socks.append(s)
    t0 = time.monotonic()
    for s in socks:
        data = b""
        while chunk := s.recv(4096):  # until the server closes the connection
            data += chunk
        s.close()
        assert data.startswith(b"HTTP/1.1 408"), data[:80]
    assert time.monotonic() - t0 < BODY_TIMEOUT + 3


def test_refused_bodies_are_not_echoed(client) -> None:
    big = {"user": "196", "history": ["x" * 200] * 2100}  # over MAX_HISTORY: a 422
    r = client.post("/recommend", json=big, headers=h(REC))
    assert r.status_code == 422 and len(r.content) < 2000


def test_open_service_only_on_loopback(bundles) -> None:
    empty = KeyRing([])
    assert "open" in (check_exposure("127.0.0.1", empty, insecure=False) or "")
    assert "open" in (check_exposure("::1", empty, insecure=False) or "")
    with pytest.raises(ValueError, match="refusing to bind 0.0.0.0"):
        check_exposure("0.0.0.0", empty, insecure=False)  # noqa: S104 - what is refused
    assert "WITHOUT API keys" in (check_exposure("10.1.2.3", empty, insecure=True) or "")
    assert check_exposure("0.0.0.0", KeyRing.from_compact(f"a:{REC}:recommend"),  # noqa: S104
                          insecure=False) is None
    res = CliRunner().invoke(cli, ["serve", str(bundles.pop), "--host", "0.0.0.0"], env={})
    assert res.exit_code == 2 and "refusing to bind 0.0.0.0" in res.output


def test_keys_file_and_env(tmp_path) -> None:
    f = tmp_path / "keys.yaml"
    f.write_text("keys:\n  - {id: web, sha256: " + "a" * 64 + ", scopes: [recommend], rate: 5}\n")
    ring = KeyRing.load(f, env={"GENREC_API_KEYS": f"ops:{ADMIN}:admin+feedback"})
    assert [k.id for k in ring.keys] == ["web", "ops"]
    assert ring.lookup(ADMIN).scopes == {"admin", "feedback"}  # type: ignore[union-attr]
    assert ring.lookup("guess") is None and ring.lookup(None) is None
    assert all("key" not in e for e in ring.entries())  # only digests travel to workers
    for bad in ("keys: [{id: x, key: short, scopes: [recommend]}]",
                "keys: [{id: x, key: long-enough-secret-1, scopes: [root]}]",
                "keys: [{id: 'a b', key: long-enough-secret-1, scopes: [admin]}]"):
        f.write_text(bad)
        with pytest.raises(ValueError):
            KeyRing.load(f, env={})
