"""The HTTP service on a live loopback server: every endpoint, valid and invalid bodies."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import httpx
import pytest

from genrec.serving import ServeSettings, create_app, open_store
from genrec.serving.schemas import MAX_EVENTS, MAX_HISTORY, MAX_K
from genrec.serving.testing import ThreadServer


FULL_KEY = "full-access-key-0123456789"
"""A key with every scope, sent by ``client`` on every request (access control itself is
tested in test_serve_security.py)."""


@pytest.fixture(scope="module")
def server(bundles, tmp_path_factory) -> Iterator[ThreadServer]:
    root = tmp_path_factory.mktemp("app")
    shutil.copytree(bundles.pop, root / "pop")  # a copy the reload tests may replace
    app = create_app([bundles.ease, f"popular={root / 'pop'}"], settings=ServeSettings(
        feedback_url=f"sqlite:///{root / 'fb.db'}", admin_token="s3cret-admin-token",
        max_body_bytes=65536,
        rate_limit=0, api_keys=[{"id": "full", "key": FULL_KEY,
                                 "scopes": ["recommend", "history", "feedback", "admin"]}]))
    with ThreadServer(app) as srv:
        srv.root = root  # type: ignore[attr-defined]
        yield srv


@pytest.fixture(scope="module")
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30, headers={"x-api-key": FULL_KEY}) as c:
        yield c


def test_health(client) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["models"] == ["ease", "popular"]
    assert body["feedback_store"] == "sqlite"


def test_models(client) -> None:
    models = client.get("/models").json()["models"]
    assert [m["name"] for m in models] == ["ease", "popular"]
    assert [m["default"] for m in models] == [True, False]
    ease = models[0]
    assert ease["kind"] == "ease" and ease["dataset"] == "ml-100k"
    assert (ease["n_users"], ease["n_items"]) == (943, 1682)
    assert "Horror" in ease["categories"] and len(ease["sample_users"]) == 50


def test_recommend_known_user(client) -> None:
    r = client.post("/recommend", json={"user": "196", "k": 10, "include_history": True})
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == "ease" and body["cold_start"] is False and body["reason"] is None
    assert len(body["items"]) == 10 and body["history_length"] == len(body["history"]) > 0
    seen = {h["item"] for h in body["history"]}
    assert not seen & {i["item"] for i in body["items"]}
    assert all(i["title"] and isinstance(i["categories"], list) for i in body["items"])
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    # JSON integers are accepted as raw ids.
    assert client.post("/recommend", json={"user": 196, "k": 10}).json()["items"] == body["items"]


def test_recommend_other_model_and_history(client) -> None:
    body = client.post("/recommend", json={"model": "popular", "history": ["50"], "k": 3}).json()
    assert body["model"] == "popular" and "50" not in [i["item"] for i in body["items"]]
    body = client.post("/recommend", json={"history": ["50", "181"], "k": 5,
                                           "exclude_seen": False}).json()
    assert body["cold_start"] is False and body["history_length"] == 2


def test_recommend_cold_start(client) -> None:
    body = client.post("/recommend", json={"user": "never-seen", "k": 5}).json()
    assert body["cold_start"] is True and body["reason"] == "unknown user"
    assert body["items"][0]["title"] == "Star Wars"  # the most popular ML-100K movie
    assert client.post("/recommend", json={}).json()["cold_start"] is True


def test_recommend_filters(client) -> None:
    body = client.post("/recommend", json={
        "user": "196", "k": 30, "filters": {"blocked_categories": ["Drama", "Comedy"],
                                            "blocked_items": ["nope"]}}).json()
    assert len(body["items"]) == 30
    assert all(not {"Drama", "Comedy"} & set(i["categories"]) for i in body["items"])
    body = client.post("/recommend", json={"user": "196", "filters": {"categories": ["Horror"]}})
    assert all("Horror" in i["categories"] for i in body.json()["items"])


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"user": "196", "k": 0}, 422, "greater than or equal"),
    ({"user": "196", "k": MAX_K + 1}, 422, "less than or equal"),
    ({"user": "196", "k": 2.5}, 422, "integer"),
    ({"user": "196", "k": "10"}, 422, "JSON number"),
    ({"user": "196", "k": True}, 422, "JSON number"),
    ({"user": "196", "bogus": 1}, 422, "Extra inputs"),
    ({"user": ""}, 422, "at least 1"),
    ({"user": ["196"]}, 422, "string"),
    ({"history": ["1"] * (MAX_HISTORY + 1)}, 422, "at most"),
    ({"filters": {"blocked_categories": "Drama"}}, 422, "list"),
    ({"history": ["50", "no-such-item"]}, 404, "no-such-item"),
    ({"user": "196", "model": "nope"}, 404, "unknown model 'nope'"),
])
def test_recommend_invalid(client, body, status, needle) -> None:
    r = client.post("/recommend", json=body)
    assert r.status_code == status, r.text
    assert needle in r.text


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b"null", b'{"k": 1e400}',
                                 b'{"user": "\\ud800"}', b"\xff\xfe"])
def test_malformed_bodies_are_4xx(client, raw) -> None:
    for path in ("/recommend", "/similar", "/feedback"):
        r = client.post(path, content=raw, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, (path, raw, r.status_code, r.text)


def test_body_size_is_capped(client) -> None:
    big = b'{"history": [' + b'"1",' * 20000 + b'"1"]}'
    r = client.post("/recommend", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over 65536 bytes" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap applies while reading
        yield b'{"history": ['
        for _ in range(20000):
            yield b'"1",'
        yield b'"1"]}'

    r = client.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_concurrent_requests_are_batched_and_answered_right(client, server) -> None:
    import asyncio

    users = [str(u) for u in range(1, 41)]
    bodies = [{"user": u, "k": 5} for u in users] + [{"item": "50", "k": 3}, {"user": "ghost"}]

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30,
                                     headers={"x-api-key": FULL_KEY}) as c:
            return await asyncio.gather(*[
                c.post("/similar" if "item" in b else "/recommend", json=b) for b in bodies])

    answers = asyncio.run(fire())
    assert all(r.status_code == 200 for r in answers)
    for b, r in zip(bodies, answers, strict=True):  # each got its own answer, not a neighbour's
        alone = client.post("/similar" if "item" in b else "/recommend", json=b).json()
        assert r.json() == alone
    sizes = [line for line in client.get("/metrics").text.splitlines()
             if line.startswith("genrec_rank_batch_size_bucket")]
    one = next(float(x.rsplit(" ", 1)[1]) for x in sizes if 'le="1.0"' in x)
    total = next(float(x.rsplit(" ", 1)[1]) for x in sizes if 'le="+Inf"' in x)
    assert total > one  # some model calls ranked several requests


def test_similar(client) -> None:
    body = client.post("/similar", json={"item": "50", "k": 5}).json()
    assert body["item"]["title"] == "Star Wars" and len(body["items"]) == 5
    assert "50" not in [i["item"] for i in body["items"]]
    assert "Return of the Jedi" in [i["title"] for i in body["items"]]
    body = client.post("/similar", json={"item": 50, "k": 5, "filters": {
        "blocked_categories": ["Sci-Fi"]}}).json()
    assert all("Sci-Fi" not in i["categories"] for i in body["items"])


@pytest.mark.parametrize(("body", "status"), [
    ({"item": "no-such-item"}, 404), ({"item": "50", "model": "nope"}, 404), ({}, 422),
    ({"item": "50", "k": -1}, 422), ({"item": "50", "k": MAX_K + 1}, 422),
    ({"item": None}, 422),
])
def test_similar_invalid(client, body, status) -> None:
    r = client.post("/similar", json=body)
    assert r.status_code == status, r.text
    assert r.json()["detail"]


def test_feedback_is_stored_once_per_event_id(client, server) -> None:
    events = [{"user": "196", "item": "50", "event": "click", "event_id": "app-1"},
              {"user": "196", "item": "181", "event": "rating", "value": 4.5,
               "timestamp": 1.7e9, "model": "ease", "event_id": "app-2"},
              {"user": 7, "item": 9}]
    r = client.post("/feedback", json={"events": events})
    assert r.status_code == 200 and r.json() == {"accepted": 3, "stored": 3}
    assert client.post("/feedback", json={"events": events[:2]}).json()["stored"] == 0
    store = open_store(server.root / "fb.db")
    assert {"full/app-1", "full/app-2"} <= store.event_ids()  # scoped to the key
    store.close()


@pytest.mark.parametrize("body", [
    {}, {"events": []}, {"events": [{"user": "1"}]},
    {"events": [{"user": "1", "item": "2", "event": "bad event!"}]},
    {"events": [{"user": "1", "item": "2", "timestamp": -5}]},
    {"events": [{"user": "1", "item": "2", "value": "high"}]},
    {"events": [{"user": "1", "item": "2"}] * (MAX_EVENTS + 1)},
])
def test_feedback_invalid(client, body) -> None:
    assert client.post("/feedback", json=body).status_code in (413, 422)


def test_metrics_prometheus_text(client) -> None:
    client.post("/recommend", json={"user": "196"})
    client.post("/recommend", json={"user": "196", "k": 0})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'genrec_http_requests_total{method="POST",route="/recommend",status="200"}' in text
    assert 'genrec_http_requests_total{method="POST",route="/recommend",status="422"}' in text
    assert "genrec_http_request_duration_seconds_bucket" in text
    assert 'genrec_recommendations_total{cold_start="false",endpoint="recommend",model="ease"}' \
        in text
    assert "genrec_models_loaded 2.0" in text
    from prometheus_client.parser import text_string_to_metric_families

    assert {f.name for f in text_string_to_metric_families(text)} >= {
        "genrec_http_requests", "genrec_feedback_events", "genrec_models_loaded"}


def test_openapi_and_docs(client) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/health", "/models", "/recommend", "/similar", "/feedback", "/metrics",
            "/admin/reload"} <= set(spec["paths"])
    k = spec["components"]["schemas"]["RecommendRequest"]["properties"]["k"]
    assert k["maximum"] == MAX_K
    assert client.get("/docs").status_code == 200


def test_playground_page(client) -> None:
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/playground"
    page = client.get("/playground")
    assert page.status_code == 200 and "genrec playground" in page.text


def test_unknown_route_and_method(client) -> None:
    assert client.get("/nope").status_code == 404
    assert client.get("/recommend").status_code == 405


def test_admin_reload(client, server, bundles) -> None:
    auth = {"authorization": "Bearer s3cret-admin-token"}
    assert client.post("/admin/reload", json={}, headers={"x-api-key": ""}).status_code == 401
    assert client.post("/admin/reload", json={},
                       headers={"authorization": "Bearer x"}).status_code == 401
    r = client.post("/admin/reload", json={}, headers=auth)
    assert r.status_code == 200 and r.json() == {"reloaded": ["ease", "popular"]}
    r = client.post("/admin/reload", json={"model": "nope"}, headers=auth)
    assert r.status_code == 404
    # Swap the 'popular' folder for an EASE bundle: served without a restart.
    path = server.root / "pop"
    shutil.rmtree(path)
    shutil.copytree(bundles.ease, path)
    r = client.post("/admin/reload", json={"model": "popular"}, headers=auth)
    assert r.status_code == 200 and r.json() == {"reloaded": ["popular"]}
    kinds = {m["name"]: m["kind"] for m in client.get("/models").json()["models"]}
    assert kinds == {"ease": "ease", "popular": "ease"}
    # A corrupted bundle is refused with 409; the loaded model keeps answering.
    state = path / "model" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    r = client.post("/admin/reload", json={"model": "popular"}, headers=auth)
    assert r.status_code == 409 and "old model kept" in r.json()["detail"]
    assert client.post("/recommend", json={"model": "popular", "user": "196"}).status_code == 200
    assert 'genrec_model_reloads_total{result="error"} 1.0' in client.get("/metrics").text


def test_no_5xx_were_served(client) -> None:
    text = client.get("/metrics").text
    assert not [line for line in text.splitlines()
                if line.startswith("genrec_http_requests_total") and 'status="5' in line]
