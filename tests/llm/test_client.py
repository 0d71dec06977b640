"""OpenAIClient against httpx.MockTransport: retries, backoff, fallbacks, cache, accounting."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from genrec.llm import ClientConfig, LLMClient, LLMError, OpenAIClient, ResponseCache
from genrec.llm.scripted import ScriptedClient

MSG = [{"role": "user", "content": "hi"}]


def ok(text: str = '{"ranking": ["a"]}', pt: int = 5, ct: int = 3) -> httpx.Response:
    return httpx.Response(200, json={"choices": [{"message": {"content": text},
                                                  "finish_reason": "stop"}],
                                     "usage": {"prompt_tokens": pt, "completion_tokens": ct}})


def client(handler, **kw) -> OpenAIClient:
    kw.setdefault("backoff_s", 0.0)
    return OpenAIClient(base_url="http://llm.test", transport=httpx.MockTransport(handler), **kw)


def test_protocol_conformance() -> None:
    assert isinstance(client(lambda r: ok()), LLMClient)
    assert isinstance(ScriptedClient(["x"]), LLMClient)


def test_request_shape_and_api_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}
    monkeypatch.setenv("MY_KEY", "sk-test")

    def handler(req: httpx.Request) -> httpx.Response:
        seen["url"] = str(req.url)
        seen["auth"] = req.headers.get("authorization")
        seen["body"] = json.loads(req.content)
        return ok()

    c = client(handler, api_key_env="MY_KEY", model="m1")
    out = c.chat(MSG, schema={"type": "object"}, max_tokens=7, seed=3)
    assert seen["url"] == "http://llm.test/v1/chat/completions"
    assert seen["auth"] == "Bearer sk-test"
    body = seen["body"]
    assert body["model"] == "m1" and body["max_tokens"] == 7 and body["seed"] == 3
    assert body["response_format"]["type"] == "json_schema"
    assert out.text == '{"ranking": ["a"]}' and out.structured == "json_schema"


def test_no_key_no_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    seen = {}

    def handler(req: httpx.Request) -> httpx.Response:
        seen["auth"] = req.headers.get("authorization")
        return ok()

    client(handler).chat(MSG)
    assert seen["auth"] is None


def test_retries_then_succeeds_with_accounting() -> None:
    calls = {"n": 0}

    def handler(req: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx.ConnectError("refused")
        if calls["n"] == 2:
            return httpx.Response(503, text="busy")
        if calls["n"] == 3:
            return httpx.Response(429, headers={"retry-after": "0"}, text="slow down")
        return ok(pt=11, ct=4)

    c = client(handler, max_retries=3)
    out = c.chat(MSG)
    assert out.prompt_tokens == 11 and calls["n"] == 4
    u = c.usage
    assert (u.requests, u.http_requests, u.retries, u.failures) == (1, 4, 3, 0)
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (11, 4, 15)


def test_gives_up_after_retries() -> None:
    c = client(lambda r: httpx.Response(500, text="boom"), max_retries=2)
    with pytest.raises(LLMError, match="giving up after 3 tries"):
        c.chat(MSG)
    assert c.usage.http_requests == 3 and c.usage.failures == 1


def test_timeout_is_retried() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    c = client(handler, max_retries=1)
    with pytest.raises(LLMError, match="ReadTimeout"):
        c.chat(MSG)
    assert c.usage.http_requests == 2


def test_non_retryable_status_fails_at_once() -> None:
    c = client(lambda r: httpx.Response(401, text="bad key"), max_retries=5)
    with pytest.raises(LLMError, match="401"):
        c.chat(MSG)
    assert c.usage.http_requests == 1


def test_backoff_grows_and_is_capped() -> None:
    c = OpenAIClient(backoff_s=1.0, backoff_max_s=3.0)
    assert 0.5 <= c._backoff(0, None) <= 1.0
    assert 1.0 <= c._backoff(1, None) <= 2.0
    assert c._backoff(5, None) <= 3.0
    assert c._backoff(0, "2") == 2.0 and c._backoff(0, "99") == 3.0


def test_structured_output_falls_back_and_remembers() -> None:
    formats = []

    def handler(req: httpx.Request) -> httpx.Response:
        body = json.loads(req.content)
        rf = body.get("response_format", {}).get("type")
        formats.append(rf)
        if rf == "json_schema":
            return httpx.Response(500, text="response_format type json_schema not supported")
        if rf == "json_object":
            return httpx.Response(400, text="schema not supported")
        return ok("ranking: a")

    c = client(handler, max_retries=3)
    out = c.chat(MSG, schema={"type": "object"})
    assert formats == ["json_schema", "json_object", None]  # the 500 was not retried
    assert out.structured == "none"
    c.chat(MSG, schema={"type": "object"})
    assert formats[-1] is None and len(formats) == 4  # the accepted mode is remembered


def test_cache_hits_skip_http_and_are_plain_json(tmp_path: Path) -> None:
    calls = {"n": 0}

    def handler(req: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return ok("hello", pt=9, ct=2)

    c = client(handler, cache_dir=str(tmp_path))
    a = c.chat(MSG, max_tokens=10)
    b = c.chat(MSG, max_tokens=10)
    c.chat(MSG, max_tokens=11)  # another request, another key
    assert calls["n"] == 2 and not a.cached and b.cached and b.text == "hello"
    assert c.usage.cached == 1 and c.usage.prompt_tokens == 18
    files = sorted(tmp_path.rglob("*"))
    entries = [f for f in files if f.is_file()]
    assert len(entries) == 2 and not any(f.name.endswith(".tmp") for f in entries)
    data = json.loads(entries[0].read_text())
    assert data["request"]["messages"] == MSG and "text" in data
    # a fresh client reads the same cache; a corrupt file is a miss, not a crash
    c2 = client(handler, cache_dir=str(tmp_path))
    assert c2.chat(MSG, max_tokens=10).cached
    for f in entries:
        f.write_text("{not json")
    assert not c2.chat(MSG, max_tokens=10).cached


def test_cache_key_ignores_nothing_that_matters(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    b1 = {"model": "m", "messages": MSG, "temperature": 0.0}
    cache.put(b1, {"text": "x"})
    assert cache.get(dict(b1)) is not None
    assert cache.get({**b1, "temperature": 0.5}) is None
    assert cache.get({**b1, "model": "other"}) is None


def test_concurrency_limit() -> None:
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def handler(req: httpx.Request) -> httpx.Response:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.02)
        with lock:
            state["now"] -= 1
        return ok()

    c = client(handler, max_concurrency=2)
    results = c.chat_many([{"messages": MSG, "seed": i} for i in range(10)])
    assert all(not isinstance(r, LLMError) for r in results)
    assert state["max"] <= 2 and c.usage.requests == 10


def test_chat_many_returns_errors_in_place() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        seed = json.loads(req.content)["seed"]
        return ok() if seed % 2 == 0 else httpx.Response(403, text="no")

    out = client(handler).chat_many([{"messages": MSG, "seed": i} for i in range(4)])
    assert [isinstance(o, LLMError) for o in out] == [False, True, False, True]


def test_malformed_response_is_an_error() -> None:
    c = client(lambda r: httpx.Response(200, json={"nope": 1}))
    with pytest.raises(LLMError, match="malformed"):
        c.chat(MSG)


def test_config_forbids_unknown_keys() -> None:
    with pytest.raises(ValueError):
        ClientConfig(base_url="x", modle="typo")
    assert OpenAIClient(ClientConfig(base_url="http://h:1")).url == "http://h:1/v1/chat/completions"
    assert OpenAIClient(base_url="http://h:1/v1/").url == "http://h:1/v1/chat/completions"
