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


def test_backoff_is_finite_and_never_negative() -> None:
    c = OpenAIClient(backoff_s=1.0, backoff_max_s=3.0)
    assert c._backoff(0, "-1") == 0.0
    for bad in ("nan", "inf", "-inf", "Wed, 21 Oct 2015 07:28:00 GMT"):
        assert 0.5 <= c._backoff(0, bad) <= 1.0  # ignored: the exponential backoff
    assert 0.0 <= c._backoff(10_000, None) <= 3.0  # no overflow however many retries
    for ra in ("-1", "nan"):  # end to end: an LLMError after the retries, not a ValueError
        c = client(lambda r, ra=ra: httpx.Response(503, headers={"retry-after": ra}),
                   max_retries=1)
        with pytest.raises(LLMError, match="giving up"):
            c.chat(MSG)


@pytest.mark.parametrize("usage", [{"prompt_tokens": "n/a", "completion_tokens": 3}, [1], "x",
                                   {"prompt_tokens": None, "completion_tokens": float("nan")},
                                   {"prompt_tokens": -4, "completion_tokens": True}])
def test_malformed_usage_is_ignored(usage) -> None:
    body = json.dumps({"choices": [{"message": {"content": "x"}}], "usage": usage},
                      allow_nan=True)
    c = client(lambda r: httpx.Response(200, content=body.encode(),
                                        headers={"content-type": "application/json"}))
    out = c.chat(MSG)
    assert out.text == "x" and out.prompt_tokens == 0
    assert out.completion_tokens == (3 if isinstance(usage, dict) and
                                     usage.get("completion_tokens") == 3 else 0)


@pytest.mark.parametrize("body", [[], "str", {"choices": []}, {"choices": [{"message": None}]},
                                  {"choices": [{"message": {"content": ["a"]}}]},
                                  {"choices": [{"message": {"content": 7}}]}, {"choices": "x"}])
def test_unreadable_responses_are_llm_errors(body) -> None:
    c = client(lambda r: httpx.Response(200, json=body), max_retries=0)
    with pytest.raises(LLMError, match="malformed"):
        c.chat(MSG)
    assert c.usage.failures == 1


def test_content_parts_are_joined() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}]
    c = client(lambda r: httpx.Response(200, json={"choices": [{"message": {"content": parts}}]}))
    assert c.chat(MSG).text == "ab"


def test_chat_many_keeps_the_batch_when_one_response_is_unreadable() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        seed = json.loads(req.content)["seed"]
        if seed == 1:
            return httpx.Response(200, json={"choices": [{"message": None}], "usage": [1]})
        return ok(pt=2) if seed == 2 else httpx.Response(200, json={
            "choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": "n/a"}})

    out = client(handler, max_retries=0).chat_many(
        [{"messages": MSG, "seed": i} for i in range(3)])
    assert [type(o).__name__ for o in out] == ["Completion", "LLMError", "Completion"]


def test_cache_key_names_the_server(tmp_path: Path) -> None:
    def server(text: str):
        return httpx.MockTransport(lambda r: ok(text))

    def make(url: str, text: str, **kw) -> OpenAIClient:
        return OpenAIClient(base_url=url, transport=server(text), cache_dir=str(tmp_path), **kw)

    assert make("http://server-a", "from A").chat(MSG).text == "from A"
    b = make("http://server-b", "from B").chat(MSG)
    assert b.text == "from B" and not b.cached  # another server: not A's answer
    same = make("HTTP://Server-A:80/v1/", "never sent").chat(MSG)
    assert same.cached and same.text == "from A"  # the same server, written differently
    # a stable scope for a server whose port changes from run to run
    make("http://127.0.0.1:1234", "first", cache_scope="gguf:tiny").chat(MSG)
    again = make("http://127.0.0.1:5678", "second", cache_scope="gguf:tiny").chat(MSG)
    assert again.cached and again.text == "first"


def test_llm_gguf_cache_survives_a_new_port(monkeypatch, tmp_path) -> None:
    # --llm-gguf starts a server on a free port each run; with the URL in the cache key its
    # answers would never be reused. The runner keys them by the model file instead.
    import contextlib

    from genrec.llm import runner

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    scopes = []

    class FakeServer(contextlib.AbstractContextManager):
        def __init__(self, path, **_):
            self.base_url, self.alias = f"http://127.0.0.1:{40000 + len(scopes)}/v1", "m"

        def __exit__(self, *exc):
            return None

    monkeypatch.setattr(runner, "LocalLlamaServer", FakeServer)
    for _ in range(2):
        with runner.llm_client(gguf=gguf, cache_dir=str(tmp_path / "c")) as client:
            scopes.append(client._scope)
    assert scopes[0] == scopes[1] and scopes[0].startswith("gguf:")
