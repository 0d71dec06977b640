"""Chat-completions clients: the :class:`LLMClient` protocol and an OpenAI-compatible client.

:class:`OpenAIClient` talks to any server that implements ``POST /v1/chat/completions`` (vLLM,
llama.cpp's server, Ollama, hosted APIs) over httpx, with timeouts, retries with exponential
backoff, a concurrency limit, an on-disk JSON response cache keyed by a hash of the request,
and token accounting. Structured output uses a bounded JSON schema through ``response_format``
where the server accepts it; the client downgrades to ``json_object`` and then to plain text
(the caller parses robustly) when the server rejects it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, Self, TypedDict, runtime_checkable

import httpx
from pydantic import BaseModel, ConfigDict, Field

from genrec._io import atomic_write_text

__all__ = [
    "ChatMessage",
    "ClientConfig",
    "Completion",
    "LLMClient",
    "LLMError",
    "OpenAIClient",
    "ResponseCache",
    "TokenUsage",
]

_log = logging.getLogger(__name__)

StructuredMode = Literal["json_schema", "json_object", "none"]


class ChatMessage(TypedDict):
    """One chat message: ``{"role": "system" | "user" | "assistant", "content": str}``."""

    role: str
    content: str


@dataclass(frozen=True)
class Completion:
    """One chat completion.

    Attributes:
        text: The assistant message content (may be empty or malformed).
        finish_reason: ``stop``, ``length``, ... as the server reported it.
        prompt_tokens: Prompt tokens (server-reported; 0 when it reports none).
        completion_tokens: Completion tokens.
        structured: The mode the server actually honoured for this request.
        cached: Whether the answer came from the on-disk cache.
        latency_s: Wall time of the request (0 for a cache hit).
    """

    text: str
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    structured: StructuredMode = "none"
    cached: bool = False
    latency_s: float = 0.0


class LLMError(RuntimeError):
    """A request failed for good (after retries, or with a non-retryable status)."""


@runtime_checkable
class LLMClient(Protocol):
    """What the LLM layer needs from a chat model: one chat call, optionally schema-bound."""

    def chat(self, messages: Sequence[ChatMessage], *, schema: dict[str, Any] | None = None,
             max_tokens: int = 256, temperature: float = 0.0,
             seed: int | None = None) -> Completion:
        """Send ``messages``; with ``schema`` ask for JSON that conforms to it.

        Raises:
            LLMError: When the request fails for good.
        """
        ...


@dataclass
class TokenUsage:
    """Running totals of one client (thread-safe through the client's lock).

    Attributes:
        requests: Calls to :meth:`OpenAIClient.chat`.
        cached: Calls answered from the cache.
        http_requests: HTTP requests sent, retries included.
        retries: Retried attempts.
        failures: Calls that raised :class:`LLMError`.
        prompt_tokens: Prompt tokens of answered (non-cached) requests.
        completion_tokens: Completion tokens of answered (non-cached) requests.
        latency_s: Summed wall time of answered requests.
    """

    requests: int = 0
    cached: int = 0
    http_requests: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for results files)."""
        return {**self.__dict__, "total_tokens": self.total_tokens}


class ClientConfig(BaseModel):
    """How to reach an OpenAI-compatible chat-completions endpoint."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = "http://127.0.0.1:8080/v1"
    """API root; ``/chat/completions`` is appended (a trailing ``/v1`` is added if absent)."""
    model: str = "default"
    """Model name sent with every request."""
    api_key_env: str | None = "OPENAI_API_KEY"
    """Environment variable holding the API key (read at construction; optional locally)."""
    timeout_s: float = Field(60.0, gt=0)
    """Read/write timeout of one HTTP request."""
    connect_timeout_s: float = Field(5.0, gt=0)
    """Connect timeout."""
    max_retries: int = Field(3, ge=0)
    """Retries after a transport error, a timeout, HTTP 408/409/429 or 5xx."""
    backoff_s: float = Field(0.25, ge=0)
    """First backoff; doubled per retry, with jitter, capped by ``backoff_max_s``."""
    backoff_max_s: float = Field(8.0, ge=0)
    """Largest single backoff (a server's ``Retry-After`` is honoured up to this)."""
    max_concurrency: int = Field(4, ge=1)
    """Requests in flight at once, over all threads that share the client."""
    cache_dir: str | None = None
    """Folder of the on-disk response cache; no cache when None."""
    cache_scope: str | None = None
    """Which server the cache keys name; default: the normalised chat-completions URL (so
    two servers never share answers). Set a stable name for a server whose URL changes from
    run to run, such as a local llama.cpp server on a free port."""
    structured: Literal["auto", "json_schema", "json_object", "none"] = "auto"
    """How to ask for schema-bound JSON. ``auto`` tries ``json_schema``, then ``json_object``
    with the schema, then none, remembering the first one the server accepts."""
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Extra fields merged into every request body (e.g. ``{"top_k": 1}``)."""


def _request_key(body: dict[str, Any], scope: str | None = None) -> str:
    keyed = body if scope is None else {"scope": scope, "request": body}
    canonical = json.dumps(keyed, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _normalise_url(url: str) -> str:
    """``url`` with scheme and host lower-cased, a default port and a trailing ``/`` dropped."""
    try:
        u = httpx.URL(url)
    except httpx.InvalidURL:  # the request itself will say what is wrong with it
        return url
    default = {"http": 80, "https": 443}.get(u.scheme)
    port = f":{u.port}" if u.port is not None and u.port != default else ""
    host = f"[{u.host}]" if ":" in u.host else u.host  # IPv6
    return f"{u.scheme}://{host}{port}{u.path.rstrip('/')}"


def _count(value: Any) -> int:
    """A token count from a server's ``usage``: a non-negative number, else 0."""
    if isinstance(value, bool):
        return 0
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        return 0
    return int(x) if math.isfinite(x) and x > 0 else 0


def _content(message: Any) -> str:
    """The text of a message: a string, or the text parts of a list of content parts.

    Raises:
        TypeError: For anything else (a malformed response).
    """
    if not isinstance(message, dict):
        raise TypeError(f"message is a {type(message).__name__}")
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        return "".join(t for p in content if isinstance(t := p.get("text"), str))
    raise TypeError(f"content is a {type(content).__name__}")


class ResponseCache:
    """Completions on disk, one JSON file per request, keyed by a SHA-256 of the request.

    Files are written atomically (a reader never sees a partial file) and hold JSON only.
    ``scope`` (the server, for :class:`OpenAIClient`) is part of the key when given.

    Args:
        root: Cache folder (created on first write).
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, body: dict[str, Any], *, scope: str | None = None) -> dict[str, Any] | None:
        """The stored entry of ``body`` or None (an unreadable file counts as a miss)."""
        path = self._path(_request_key(body, scope))
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        ok = isinstance(entry, dict) and isinstance(entry.get("text"), str)
        return entry if ok else None

    def put(self, body: dict[str, Any], entry: dict[str, Any], *,
            scope: str | None = None) -> None:
        """Store ``entry`` (a JSON-serialisable dict) for ``body``."""
        stored = {"request": body, **entry} | ({} if scope is None else {"scope": scope})
        atomic_write_text(self._path(_request_key(body, scope)),
                          json.dumps(stored, ensure_ascii=False))


_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
_FORMAT_HINTS = ("response_format", "json_schema", "schema", "grammar")


class OpenAIClient:
    """An :class:`LLMClient` for OpenAI-compatible chat-completions servers.

    Thread-safe: share one client between threads; at most ``max_concurrency`` requests are
    in flight at once.

    Args:
        config: Endpoint, model, retries, cache; defaults to :class:`ClientConfig`.
        transport: An httpx transport (tests use ``httpx.MockTransport``).
        **overrides: Fields that replace those of ``config``.
    """

    def __init__(self, config: ClientConfig | None = None, *,
                 transport: httpx.BaseTransport | None = None, **overrides: Any) -> None:
        merged = (config or ClientConfig()).model_dump() | overrides
        self.config = ClientConfig.model_validate(merged)
        self.usage = TokenUsage()
        self._transport = transport
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.config.max_concurrency)
        self._http: httpx.Client | None = None
        self._mode: StructuredMode | None = (None if self.config.structured == "auto"
                                             else self.config.structured)
        self._cache = ResponseCache(self.config.cache_dir) if self.config.cache_dir else None
        self._scope = self.config.cache_scope or _normalise_url(self.url)

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The chat-completions URL."""
        base = self.config.base_url.rstrip("/")
        if not base.endswith("/v1"):
            base += "/v1"
        return f"{base}/chat/completions"

    def _client(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                headers = {"Content-Type": "application/json"}
                key = os.environ.get(self.config.api_key_env) if self.config.api_key_env else None
                if key:
                    headers["Authorization"] = f"Bearer {key}"
                timeout = httpx.Timeout(self.config.timeout_s,
                                        connect=self.config.connect_timeout_s)
                limits = httpx.Limits(max_connections=self.config.max_concurrency)
                self._http = httpx.Client(headers=headers, timeout=timeout, limits=limits,
                                          transport=self._transport)
            return self._http

    def close(self) -> None:
        """Close the connection pool."""
        with self._lock:
            if self._http is not None:
                self._http.close()
                self._http = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add(self, **counts: float) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self.usage, k, getattr(self.usage, k) + v)

    # -- requests ---------------------------------------------------------------------------
    def _body(self, messages: Sequence[ChatMessage], schema: dict[str, Any] | None,
              mode: StructuredMode, max_tokens: int, temperature: float,
              seed: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_tokens": max_tokens, "temperature": temperature,
            **self.config.extra_body,
        }
        if seed is not None:
            body["seed"] = seed
        if schema is not None and mode == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "output", "strict": True, "schema": schema}}
        elif schema is not None and mode == "json_object":
            body["response_format"] = {"type": "json_object", "schema": schema}
        return body

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        """Seconds before retry ``attempt + 1``: always finite, in ``[0, backoff_max_s]``."""
        cap = self.config.backoff_max_s
        if retry_after:
            try:
                wait = float(retry_after)
            except ValueError:  # an HTTP date, or garbage: the exponential backoff below
                wait = math.nan
            if math.isfinite(wait):  # "-1" waits 0 s; "nan" and "inf" are ignored
                return min(max(wait, 0.0), cap)
        base = min(self.config.backoff_s * (2 ** min(attempt, 60)), cap)
        return base * (0.5 + random.random() / 2)  # jitter spreads out synchronized retries

    def _post(self, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """POST with retries; returns the decoded JSON and the wall time of the last try."""
        last: str = ""
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                self._add(retries=1)
            retry_after = None
            t0 = time.perf_counter()
            try:
                with self._slots:
                    self._add(http_requests=1)
                    resp = self._client().post(self.url, json=body)
                elapsed = time.perf_counter() - t0
            except (httpx.TimeoutException, httpx.TransportError) as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if resp.status_code == 200:
                    try:
                        return resp.json(), elapsed
                    except ValueError:
                        last = "HTTP 200 with a body that is not JSON"
                elif resp.status_code in _RETRY_STATUS and not _format_rejected(resp, body):
                    last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                    retry_after = resp.headers.get("retry-after")
                else:
                    raise _StatusError(resp.status_code, resp.text[:500])
            if attempt < self.config.max_retries:
                delay = self._backoff(attempt, retry_after)
                _log.debug("LLM request failed (%s); retry %d in %.2fs", last, attempt + 1, delay)
                time.sleep(delay)
        raise LLMError(f"{self.url}: giving up after {self.config.max_retries + 1} tries ({last})")

    def chat(self, messages: Sequence[ChatMessage], *, schema: dict[str, Any] | None = None,
             max_tokens: int = 256, temperature: float = 0.0,
             seed: int | None = None) -> Completion:
        """One chat completion; see :class:`LLMClient`.

        Raises:
            LLMError: After the retries, or at once for a non-retryable status.
        """
        self._add(requests=1)
        modes: list[StructuredMode]
        if schema is None:
            modes = ["none"]
        elif self._mode is not None:
            modes = [self._mode]
        else:
            modes = ["json_schema", "json_object", "none"]
        for i, mode in enumerate(modes):
            body = self._body(messages, schema, mode, max_tokens, temperature, seed)
            if self._cache is not None and \
                    (hit := self._cache.get(body, scope=self._scope)) is not None:
                self._add(cached=1)
                return Completion(hit["text"], str(hit.get("finish_reason") or "stop"),
                                  _count(hit.get("prompt_tokens")),
                                  _count(hit.get("completion_tokens")), mode, cached=True)
            try:
                data, elapsed = self._post(body)
            except _StatusError as e:
                if i + 1 < len(modes) and (e.status in (400, 422, 500, 501)):
                    _log.info("server rejected response_format %r (HTTP %d); trying %r",
                              mode, e.status, modes[i + 1])
                    continue
                self._add(failures=1)
                raise LLMError(f"{self.url}: HTTP {e.status}: {e.text}") from None
            except LLMError:
                self._add(failures=1)
                raise
            if schema is not None and self._mode is None:
                self._mode = mode
            return self._completion(body, data, mode, elapsed)
        self._add(failures=1)  # pragma: no cover - the last mode never "continues"
        raise LLMError("no structured-output mode was accepted")

    def _completion(self, body: dict[str, Any], data: Any, mode: StructuredMode,
                    elapsed: float) -> Completion:
        # Whatever a server sends, a response that cannot be read is an LLMError, never a
        # crash (chat_many keeps the other answers of a batch).
        try:
            choice = data["choices"][0]
            text = _content(choice.get("message", {}))
            finish = str(choice.get("finish_reason") or "stop")
        except Exception:  # noqa: BLE001 - any shape at all may come back
            self._add(failures=1)
            raise LLMError(f"{self.url}: malformed response {str(data)[:200]}") from None
        usage = data.get("usage") if isinstance(data, dict) else None
        usage = usage if isinstance(usage, dict) else {}  # a malformed usage is ignored
        pt, ct = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
        self._add(prompt_tokens=pt, completion_tokens=ct, latency_s=elapsed)
        if self._cache is not None:
            entry = {"text": text, "finish_reason": finish, "prompt_tokens": pt,
                     "completion_tokens": ct}
            try:
                self._cache.put(body, entry, scope=self._scope)
            except OSError as e:  # a full disk loses the cache entry, not the answer
                _log.warning("LLM response cache not written: %s", e)
        return Completion(text, finish, pt, ct, mode, cached=False, latency_s=elapsed)

    def chat_many(self, requests: Sequence[dict[str, Any]]) -> list[Completion | LLMError]:
        """Run many :meth:`chat` calls concurrently (bounded by ``max_concurrency``).

        Args:
            requests: Keyword arguments of :meth:`chat`, one dict per call.

        Returns:
            One :class:`Completion` or the :class:`LLMError` it raised, in request order.
        """
        def one(kw: dict[str, Any]) -> Completion | LLMError:
            try:
                return self.chat(**kw)
            except LLMError as e:
                return e
            except Exception as e:  # noqa: BLE001 - one bad call must not lose the batch
                _log.warning("LLM request failed unexpectedly: %r", e)
                return LLMError(f"{self.url}: {type(e).__name__}: {e}")

        with ThreadPoolExecutor(self.config.max_concurrency) as pool:
            return list(pool.map(one, requests))


@dataclass
class _StatusError(Exception):
    status: int
    text: str = field(default="")


def _format_rejected(resp: httpx.Response, body: dict[str, Any]) -> bool:
    """A 5xx caused by ``response_format`` (llama-cpp-python answers 500) is not transient."""
    if "response_format" not in body or resp.status_code != 500:
        return False
    text = resp.text.lower()
    return any(h in text for h in _FORMAT_HINTS)
