"""The HTTP service: a FastAPI app built by :func:`create_app`.

Endpoints: ``GET /health``, ``GET /models``, ``POST /recommend``, ``POST /similar``,
``POST /feedback``, ``GET /metrics`` (Prometheus text), ``POST /admin/reload``, the playground
page at ``/playground`` and the OpenAPI schema at ``/openapi.json`` (docs at ``/docs``).

Client errors never become a 500: bodies are validated (422), unknown models and items are
404 with a message, oversized bodies are 413, and a store outage is 503.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
import os
import signal
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field

from genrec import __version__
from genrec.serving._playground import PLAYGROUND_HTML
from genrec.serving.bundle import BundleError
from genrec.serving.feedback import (
    FeedbackRecord,
    FeedbackStore,
    StoreUnavailableError,
    open_store,
)
from genrec.serving.schemas import (
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    HealthResponse,
    ModelInfo,
    ModelsResponse,
    RecommendRequest,
    RecommendResponse,
    ReloadRequest,
    ReloadResponse,
    SimilarRequest,
    SimilarResponse,
)
from genrec.serving.service import (
    ModelPool,
    ModelService,
    Query,
    Ranked,
    UnknownItemError,
    UnknownModelError,
)

__all__ = ["SPEC_ENV", "ServeSettings", "create_app", "create_app_from_env", "parse_model_arg"]

_log = logging.getLogger(__name__)


class ServeSettings(BaseModel):
    """How the service runs."""

    model_config = ConfigDict(extra="forbid")

    feedback_url: str = "sqlite:///genrec-feedback.db"
    """``postgresql://user@host:port/db`` or ``sqlite:///path`` (a plain path is SQLite)."""
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    """Larger request bodies get 413."""
    max_batch: int = Field(default=64, ge=1)
    """Most requests ranked together in one model call."""
    admin_token: str | None = None
    """When set, ``POST /admin/reload`` needs ``Authorization: Bearer <token>``."""
    reload_on_sighup: bool = True
    """Reload every model when the process gets SIGHUP (main-thread event loops only)."""
    multiprocess: bool = False
    """This app is one of several uvicorn workers (``genrec serve --workers N``): a reload
    is checked here, then done by the supervisor, which replaces every worker (SIGHUP to the
    parent); metrics are summed over workers (prometheus_client multiprocess mode)."""


def parse_model_arg(arg: str | Path) -> tuple[str | None, Path]:
    """``NAME=DIR`` or ``DIR`` (the name then comes from the bundle's manifest)."""
    text = str(arg)
    name, sep, path = text.partition("=")
    if sep and name and "/" not in name and not Path(text).exists():
        return name, Path(path)
    return None, Path(text)


SPEC_ENV = "GENREC_SERVE_SPEC"
"""Environment variable holding the JSON spec that :func:`create_app_from_env` reads."""


def create_app_from_env() -> FastAPI:
    """App factory for uvicorn workers (``uvicorn --factory``), set up by ``$GENREC_SERVE_SPEC``.

    The spec is ``{"models": [[name or null, dir], ...], "settings": {...}, "threads": n}``, as
    written by ``genrec serve --workers N``.

    Raises:
        KeyError: If the variable is not set.
    """
    spec = json.loads(os.environ[SPEC_ENV])
    if spec.get("threads"):
        import torch

        torch.set_num_threads(int(spec["threads"]))
    return create_app([(n, Path(p)) for n, p in spec["models"]],
                      settings=ServeSettings(**spec["settings"]))


class _Metrics:
    """Prometheus metrics of one app (own registry, so several apps can live in a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("genrec_http_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram(
            "genrec_http_request_duration_seconds", "Request latency by route", ["route"],
            buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10), registry=r)
        self.recommendations = Counter("genrec_recommendations", "Answers by model and kind",
                                       ["model", "endpoint", "cold_start"], registry=r)
        self.feedback = Counter("genrec_feedback_events", "Feedback events", ["result"],
                                registry=r)
        self.batch_sizes = Histogram("genrec_rank_batch_size", "Requests ranked per model call",
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.models = Gauge("genrec_models_loaded", "Models served", registry=r,
                            multiprocess_mode="livemax")
        self.reloads = Counter("genrec_model_reloads", "Reloads by result", ["result"],
                               registry=r)
        self.info = Gauge("genrec_build_info", "Version", ["version"], registry=r,
                          multiprocess_mode="livemax")
        self.info.labels(__version__).set(1)


class _Guard:
    """Pure ASGI middleware: caps request bodies (413) and records metrics for every request.

    The body is read here, bounded by ``max_body_bytes``, and replayed to the app, so an
    oversized or endless chunked body never reaches the JSON parser.
    """

    def __init__(self, app: Any, metrics: _Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body_bytes

    async def _reject(self, send: Any, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

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
            declared = dict(scope.get("headers") or []).get(b"content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
                await self._reject(send_wrapper, 413, f"request body over {self.max_body} bytes")
                return
            if scope["method"] in ("POST", "PUT", "PATCH"):
                chunks, size, more = [], 0, True
                while more:
                    msg = await receive()
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


def _json_safe(value: Any) -> Any:
    """``value`` made encodable: a 422 that echoes ``1e400`` or a lone surrogate back must not
    fail to encode (that would be a 500), so non-finite floats become strings and
    unencodable characters ``?``."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")  # lone surrogates
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


class _Batcher:
    """Coalesces the ranking of requests that arrive together into one model call.

    The first request of a batch schedules the flush with ``call_soon``: the event loop first
    runs the request tasks that are already ready, which join the batch, then the flush. A
    lone request is ranked at once; nothing ever waits on a timer.
    """

    def __init__(self, svc: ModelService, max_batch: int, sizes: Histogram) -> None:
        self.svc = svc
        self.max_batch = max_batch
        self.sizes = sizes
        self._pending: list[tuple[Query, asyncio.Future[Ranked]]] = []
        self._scheduled = False

    async def rank(self, query: Query) -> Ranked:
        """The answer to ``query``, computed in the next batch."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Ranked] = loop.create_future()
        self._pending.append((query, fut))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        live = [(q, f) for q, f in batch if not f.done()]  # a cancelled request drops out
        if not live:
            return
        self.sizes.observe(len(live))
        try:
            results = self.svc.rank([q for q, _ in live])
        except Exception as e:  # noqa: BLE001 - handed to each waiting request
            for _, f in live:
                f.set_exception(e)
            return
        for (_, f), r in zip(live, results, strict=True):
            f.set_result(r)


def _json(body: dict[str, Any]) -> Response:
    """A JSON response from plain data (finite floats and valid strings only)."""
    return Response(json.dumps(body, ensure_ascii=False, allow_nan=False).encode(),
                    media_type="application/json")


def _scored(svc: ModelService, r: Ranked) -> list[dict[str, Any]]:
    out = svc.item_info(r.items.tolist())
    for d, s in zip(out, r.scores.tolist(), strict=True):
        d["score"] = s
    return out


def create_app(models: ModelPool | Sequence[str | Path | tuple[str | None, Path]], *,
               settings: ServeSettings | None = None,
               store: FeedbackStore | None = None) -> FastAPI:
    """Build the service.

    Args:
        models: A pool, or bundle folders (``DIR``, ``NAME=DIR`` or ``(name, DIR)``); the first
            is the default model.
        settings: Service settings (defaults: SQLite feedback in ``./genrec-feedback.db``).
        store: A feedback store to use instead of opening ``settings.feedback_url``.

    Returns:
        The FastAPI app (run it with uvicorn).

    Raises:
        BundleError: If a bundle fails verification.
        StoreUnavailableError: If the feedback store cannot be opened.
    """
    settings = settings or ServeSettings()
    if isinstance(models, ModelPool):
        pool = models
    else:
        pool = ModelPool([m if isinstance(m, tuple) else parse_model_arg(m) for m in models])
    own_store = store is None
    fb: FeedbackStore = store if store is not None else open_store(settings.feedback_url)
    metrics = _Metrics()
    metrics.models.set(len(pool.names))
    started = time.time()

    def reload(name: str | None) -> list[str]:
        try:
            done = pool.reload(name)
        except BundleError:
            metrics.reloads.labels("error").inc()
            raise
        metrics.reloads.labels("ok").inc()
        metrics.models.set(len(pool.names))
        gc.collect()
        gc.freeze()  # the new models are long-lived too (see lifespan)
        return done

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        hooked = False
        # Under a uvicorn supervisor, SIGHUP goes to the supervisor, which replaces workers.
        if settings.reload_on_sighup and not settings.multiprocess and hasattr(signal, "SIGHUP"):
            def on_hup() -> None:
                async def go() -> None:
                    try:
                        await run_in_threadpool(reload, None)
                    except Exception as e:  # noqa: BLE001 - keep serving the old models
                        _log.error("SIGHUP reload failed, old models kept: %s", e)
                loop.create_task(go())
            try:
                loop.add_signal_handler(signal.SIGHUP, on_hup)
                hooked = True
            except (NotImplementedError, RuntimeError, ValueError):
                _log.debug("SIGHUP reload unavailable outside the main thread")
        _log.info("serving %s; feedback store: %s", ", ".join(pool.names), fb.kind)
        # Everything loaded so far (libraries, models, id maps) lives as long as the process:
        # keep it out of the cyclic GC, whose full passes over it stalled every request for
        # ~140 ms every few seconds under load.
        gc.freeze()
        yield
        if hooked:
            loop.remove_signal_handler(signal.SIGHUP)
        if own_store:
            fb.close()

    app = FastAPI(title="genrec", version=__version__, lifespan=lifespan,
                  description="Recommendations, similar items and feedback from genrec models.",
                  responses={400: {"model": ErrorResponse, "description": "Undecodable body"},
                             422: {"description": "Invalid body"},
                             413: {"model": ErrorResponse, "description": "Body too large"}})
    app.state.pool = pool
    app.state.store = fb
    app.state.metrics = metrics

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _json_safe(jsonable_encoder(e.errors()))},
                            status_code=422)

    @app.exception_handler(UnknownItemError)
    async def _unknown_item(_: Request, e: UnknownItemError) -> JSONResponse:
        return JSONResponse({"detail": e.message}, status_code=404)

    @app.exception_handler(UnknownModelError)
    async def _unknown_model(_: Request, e: UnknownModelError) -> JSONResponse:
        return JSONResponse({"detail": e.message}, status_code=404)

    @app.exception_handler(StoreUnavailableError)
    async def _store_down(_: Request, e: StoreUnavailableError) -> JSONResponse:
        _log.error("feedback store unavailable: %s", e)
        return JSONResponse({"detail": "feedback store unavailable; nothing was stored"},
                            status_code=503)

    @app.exception_handler(Exception)
    async def _internal(_: Request, e: Exception) -> JSONResponse:
        _log.exception("internal error: %s", e)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    not_found: dict[int | str, dict[str, Any]] = {
        404: {"model": ErrorResponse, "description": "Unknown model or item"}}

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/playground")

    @app.get("/playground", response_class=HTMLResponse, summary="Web playground")
    async def playground() -> HTMLResponse:
        """Pick a user, see their history and recommendations with titles."""
        return HTMLResponse(PLAYGROUND_HTML)

    @app.get("/health", response_model=HealthResponse,
             responses={503: {"model": HealthResponse, "description": "Not ready"}})
    def health() -> JSONResponse:
        """Liveness and readiness: models loaded and feedback store reachable."""
        ok = bool(pool.names) and fb.ping()
        body = HealthResponse(status="ok" if ok else "degraded", models=pool.names,
                              feedback_store=fb.kind, uptime_seconds=time.time() - started)
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    @app.get("/models", response_model=ModelsResponse)
    async def list_models() -> ModelsResponse:
        """Served models, default first, with their sizes, config and sample user ids."""
        services = pool.services()
        return ModelsResponse(models=[ModelInfo(**s.describe(), default=i == 0)
                                      for i, s in enumerate(services)])

    # The scoring endpoints are ``async`` and score on the event loop, through a batcher:
    # requests that arrive together share one model call (a transformer scores 16 histories
    # for little more than the price of one). They return the JSON themselves (the shape of
    # the response model, which documents it) to skip a second validation pass.
    batchers: weakref.WeakKeyDictionary[ModelService, _Batcher] = weakref.WeakKeyDictionary()

    def batcher(svc: ModelService) -> _Batcher:
        b = batchers.get(svc)
        if b is None:
            b = batchers[svc] = _Batcher(svc, settings.max_batch, metrics.batch_sizes)
        return b

    @app.post("/recommend", response_model=RecommendResponse, responses=not_found)
    async def recommend(req: RecommendRequest) -> Response:
        """Top-k items for a user id and/or an explicit history of raw item ids.

        A known user is ranked as that user (their learned vector, if the model has one) with
        their stored history plus ``history``; a history-only request, or an unknown user
        with a history, is ranked from that history alone. An unknown user (without history)
        gets the most popular items, flagged ``cold_start: true``. Unknown items in
        ``history`` are a 404.
        """
        svc = pool.get(req.model)
        f = req.filters
        q = svc.prepare(user=req.user, history=req.history, k=req.k,
                        exclude_seen=req.exclude_seen, blocked_categories=f.blocked_categories,
                        blocked_items=f.blocked_items, categories=f.categories)
        r = await batcher(svc).rank(q)
        metrics.recommendations.labels(svc.name, "recommend", str(r.cold_start).lower()).inc()
        return _json({
            "model": svc.name, "user": req.user, "cold_start": r.cold_start, "reason": r.reason,
            "items": _scored(svc, r), "history_length": len(r.history),
            "history": svc.item_info(r.history.tolist()) if req.include_history else None,
        })

    @app.post("/similar", response_model=SimilarResponse, responses=not_found)
    async def similar(req: SimilarRequest) -> Response:
        """Items most related to ``item`` according to the model: its recommendations for an
        anonymous user whose history is ``item`` alone (the item itself is never returned)."""
        svc = pool.get(req.model)
        f = req.filters
        q = svc.prepare_similar(req.item, k=req.k, blocked_categories=f.blocked_categories,
                                blocked_items=f.blocked_items, categories=f.categories)
        r = await batcher(svc).rank(q)
        metrics.recommendations.labels(svc.name, "similar", "false").inc()
        return _json({"model": svc.name, "item": svc.item_info(r.history.tolist())[0],
                      "items": _scored(svc, r)})

    @app.post("/feedback", response_model=FeedbackResponse,
              responses={503: {"model": ErrorResponse, "description": "Store unavailable"}})
    def feedback(req: FeedbackRequest) -> FeedbackResponse:
        """Store feedback events; they are committed to disk before the answer is sent."""
        now = time.time()
        records = [FeedbackRecord(user_id=e.user, item_id=e.item, event=e.event, value=e.value,
                                  ts=e.timestamp if e.timestamp is not None else now,
                                  model=e.model, event_id=e.event_id, received_at=now)
                   for e in req.events]
        stored = fb.add(records)
        metrics.feedback.labels("stored").inc(stored)
        metrics.feedback.labels("duplicate").inc(len(records) - stored)
        return FeedbackResponse(accepted=len(records), stored=stored)

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}})
    async def prometheus() -> Response:
        """Request counts and latencies, answers, feedback and reloads (Prometheus format)."""
        registry = metrics.registry
        if settings.multiprocess and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload", response_model=ReloadResponse,
              responses={**not_found, 401: {"model": ErrorResponse},
                         409: {"model": ErrorResponse, "description": "Bundle refused"}})
    def admin_reload(req: ReloadRequest | None = None,
                     authorization: str | None = Header(None)) -> Any:
        """Re-read model bundles from disk and swap them in without a restart.

        The new bundle is verified first; if it is corrupted or partial the old model stays
        in service and the answer is 409.
        """
        if settings.admin_token is not None and authorization != f"Bearer {settings.admin_token}":
            return JSONResponse({"detail": "admin token required"}, status_code=401)
        try:
            done = reload(req.model if req else None)
            if settings.multiprocess:  # the bundles are good: have every worker replaced
                os.kill(os.getppid(), signal.SIGHUP)
        except BundleError as e:
            return JSONResponse({"detail": f"reload refused, old model kept: {e}"},
                                status_code=409)
        return ReloadResponse(reloaded=done)

    app.add_middleware(_Guard, metrics=metrics, max_body_bytes=settings.max_body_bytes)
    return app
