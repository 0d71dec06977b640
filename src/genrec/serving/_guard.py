"""The ASGI middleware in front of every request: keys, scopes, rate limits, body limits, metrics.

Everything a request is refused for here is refused before its body is read: a client without
a valid key, with a key lacking the route's scope, or over its rate limit costs the service
one header parse. A body is read with a deadline and a size cap, so a stalled or endless
upload is answered and its connection closed.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

from genrec.serving.auth import OPEN_PATHS, KeyRing, RateLimiter, route_scope

__all__ = ["KEY_SCOPE", "Guard"]

KEY_SCOPE = "genrec.key"
"""ASGI scope entry holding the request's :class:`~genrec.serving.auth.ApiKey` (None: open)."""


def _secret(headers: dict[bytes, bytes]) -> str | None:
    auth = headers.get(b"authorization")
    if auth is not None:
        scheme, _, token = auth.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer":
            return token.strip()
        return None
    key = headers.get(b"x-api-key")
    return key.decode("latin-1").strip() if key is not None else None


class Guard:
    """Pure ASGI middleware: authenticates, rate-limits, caps and times request bodies (413,
    408), and records metrics for every request.

    The body is read here, bounded by ``max_body_bytes`` and ``body_timeout``, and replayed to
    the app, so an oversized, endless or stalled body never reaches the JSON parser. Every
    refusal carries ``Connection: close``: the rest of a refused body is never read.
    """

    def __init__(self, app: Any, metrics: Any, max_body_bytes: int, body_timeout: float,
                 keys: KeyRing, limiter: RateLimiter) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body_bytes
        self.body_timeout = body_timeout
        self.keys = keys
        self.limiter = limiter

    async def _reject(self, send: Any, status: int, detail: str,
                      extra: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close"), *extra]})
        await send({"type": "http.response.body", "body": body})

    async def _admit(self, scope: Any, headers: dict[bytes, bytes], send: Any) -> bool:
        """Check the key, its scope and its rate; answer and return False if refused."""
        scope[KEY_SCOPE] = None
        if not self.keys.enabled or scope["path"] in OPEN_PATHS:
            return True
        key = self.keys.lookup(_secret(headers))
        if key is None:
            await self._reject(send, 401, "a valid API key is required "
                               "(Authorization: Bearer KEY or X-API-Key: KEY)",
                               [(b"www-authenticate", b"Bearer")])
            return False
        need = route_scope(scope["path"])
        if not key.allows(need):
            await self._reject(send, 403, f"key {key.id!r} lacks the {need!r} scope")
            return False
        wait = self.limiter.take(key)
        if wait > 0:
            await self._reject(send, 429, f"rate limit of key {key.id!r} exceeded",
                               [(b"retry-after", str(max(1, math.ceil(wait))).encode())])
            return False
        scope[KEY_SCOPE] = key
        return True

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            headers = dict(scope.get("headers") or [])
            if not await self._admit(scope, headers, send_wrapper):
                return
            declared = headers.get(b"content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
                await self._reject(send_wrapper, 413, f"request body over {self.max_body} bytes")
                return
            if scope["method"] in ("POST", "PUT", "PATCH"):
                deadline = time.monotonic() + self.body_timeout
                chunks, size, more = [], 0, True
                while more:
                    try:
                        msg = await asyncio.wait_for(receive(), deadline - time.monotonic())
                    except TimeoutError:
                        await self._reject(send_wrapper, 408, "request body not received within "
                                           f"{self.body_timeout:g} s")
                        return
                    if msg["type"] == "http.disconnect":
                        return
                    chunk = msg.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        await self._reject(send_wrapper, 413,
                                           f"request body over {self.max_body} bytes")
                        return
                    chunks.append(chunk)
                    more = msg.get("more_body", False)
                body = b"".join(chunks)
                sent = [False]

                async def replay() -> Any:
                    if not sent[0]:
                        sent[0] = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                await self.app(scope, replay, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(label, scope["method"], str(status[0])).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - t0)
