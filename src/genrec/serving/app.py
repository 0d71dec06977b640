"""The HTTP service: a FastAPI app built by :func:`create_app`.

Endpoints: ``GET /health``, ``GET /models``, ``POST /recommend``, ``POST /similar``,
``POST /feedback``, ``GET /metrics`` (Prometheus text), ``POST /admin/reload``, the playground
page at ``/playground`` and the OpenAPI schema at ``/openapi.json`` (docs at ``/docs``).

Client errors never become a 500: bodies are validated (422, without echoing the input back),
unknown models and items are 404 with a message, oversized bodies are 413, stalled ones 408,
and a store outage is 503.

With API keys configured (:mod:`genrec.serving.auth`) every route but ``/health`` needs a key
with the route's scope (401/403), each key is rate-limited (429 with ``Retry-After``), stored
histories go only to keys with the ``history`` scope, and feedback ``event_id`` values are
scoped to the key that wrote them. Every model passes a smoke test before it goes live, at
start and on every reload; ``/health`` reports each model's readiness.
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
from genrec.serving._guard import KEY_SCOPE, Guard
from genrec.serving._playground import PLAYGROUND_HTML
from genrec.serving.auth import ApiKey, KeyRing, RateLimiter
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
    ModelStatus,
    ModelsResponse,
    RecommendRequest,
    RecommendResponse,
    ReloadRequest,
    ReloadResponse,
    SimilarRequest,
    SimilarResponse,
)
from genrec.serving.signing import SignatureVerifier
from genrec.serving.service import (
    ModelPool,
    ModelService,
    Query,
    Ranked,
    UnknownItemError,
    UnknownModelError,
)

__all__ = ["SPEC_ENV", "ServeSettings", "create_app", "create_app_from_env", "keyring_of",
           "parse_model_arg"]

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
    """An API key with the ``admin`` scope only (key id ``admin``); setting it turns access
    control on for every route."""
    api_keys: list[dict[str, Any]] = Field(default_factory=list)
    """API keys in the keys-file format (:mod:`genrec.serving.auth`); empty: open service."""
    rate_limit: float = Field(default=50.0, ge=0)
    """Requests per second per key, for keys without their own ``rate`` (0: unlimited)."""
    body_timeout: float = Field(default=10.0, gt=0)
    """Seconds a client may take to send a request body; then 408 and the connection closes."""
    verify_key: str | None = None
    """Key file (Ed25519 public key or HMAC secret): every bundle must carry a valid
    signature made with it, at start and on every reload."""
    reload_on_sighup: bool = True
    """Reload every model when the process gets SIGHUP (main-thread event loops only)."""
    rate_share: int = Field(default=1, ge=1)
    """Processes serving side by side (``genrec serve --workers N``); each enforces
    ``1 / rate_share`` of every key's rate and burst, so together they allow no more."""
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


def keyring_of(settings: ServeSettings) -> KeyRing:
    """The keys ``settings`` configure (``api_keys`` plus ``admin_token``)."""
    entries = list(settings.api_keys)
    if settings.admin_token:
        entries.append({"id": "admin", "key": settings.admin_token, "scopes": ["admin"]})
    return KeyRing.from_entries(entries, "serve settings")


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
            self.svc.last_error = f"{type(e).__name__}: {e}"  # /health reports it
            for _, f in live:
                f.set_exception(e)
            return
        self.svc.last_error = None
        for (_, f), r in zip(live, results, strict=True):
            f.set_result(r)


class _Reloader:
    """Coalesces reloads: one runs at a time, and every request that arrives meanwhile joins
    the next one, which starts when the current one ends. N concurrent requests cost at most
    two reloads, and each requester gets a reload that began after its request."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self._running = False
        self._next: tuple[set[str] | None, asyncio.Future[list[str]]] | None = None

    async def request(self, name: str | None) -> list[str]:
        """Reload ``name`` (every model when None); returns the names reloaded."""
        loop = asyncio.get_running_loop()
        if self._next is None:
            self._next = (set(), loop.create_future())
        targets, fut = self._next
        if name is None or targets is None:
            self._next = (None, fut)
        else:
            targets.add(name)
        if not self._running:
            self._running = True
            loop.create_task(self._drain())
        return await asyncio.shield(fut)

    async def _drain(self) -> None:
        try:
            while self._next is not None:
                targets, fut = self._next
                self._next = None
                try:
                    done = await run_in_threadpool(
                        self.fn, None if targets is None else sorted(targets))
                except Exception as e:  # noqa: BLE001 - handed to every joined request
                    fut.set_exception(e)
                    fut.exception()  # retrieved here too: no warning when nobody waits
                else:
                    fut.set_result(done)
        finally:
            self._running = False


def _no_input(errors: list[Any]) -> list[Any]:
    """Validation errors without the offending input: a refused 1 MB body is not echoed."""
    return [{k: v for k, v in e.items() if k not in ("input", "ctx", "url")}
            if isinstance(e, dict) else e for e in errors]


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
    keys = keyring_of(settings)
    verifier = (SignatureVerifier.from_file(settings.verify_key)
                if settings.verify_key is not None else None)
    if isinstance(models, ModelPool):
        pool = models
        if verifier is not None and pool.verifier is None:
            raise ValueError("verify_key is set but the given pool does not check signatures")
    else:
        pool = ModelPool([m if isinstance(m, tuple) else parse_model_arg(m) for m in models],
                         verifier=verifier)
    own_store = store is None
    fb: FeedbackStore = store if store is not None else open_store(settings.feedback_url)
    metrics = _Metrics()
    metrics.models.set(len(pool.names))
    started = time.time()

    def reload(names: list[str] | None) -> list[str]:
        try:
            done = pool.reload(names)
        except BundleError:
            metrics.reloads.labels("error").inc()
            raise
        metrics.reloads.labels("ok").inc()
        metrics.models.set(len(pool.names))
        gc.collect()
        gc.freeze()  # the new models are long-lived too (see lifespan)
        return done

    reloader = _Reloader(reload)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        hooked = False
        # Under a uvicorn supervisor, SIGHUP goes to the supervisor, which replaces workers.
        if settings.reload_on_sighup and not settings.multiprocess and hasattr(signal, "SIGHUP"):
            def on_hup() -> None:
                async def go() -> None:
                    try:
                        await reloader.request(None)
                    except Exception as e:  # noqa: BLE001 - keep serving the old models
                        _log.error("SIGHUP reload failed, old models kept: %s", e)
                loop.create_task(go())
            try:
                loop.add_signal_handler(signal.SIGHUP, on_hup)
                hooked = True
            except (NotImplementedError, RuntimeError, ValueError):
                _log.debug("SIGHUP reload unavailable outside the main thread")
        _log.info("serving %s; feedback store: %s; %s", ", ".join(pool.names), fb.kind,
                  f"{len(keys.keys)} API key(s) required" if keys.enabled
                  else "OPEN: no API keys configured")
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
        return JSONResponse({"detail": _json_safe(jsonable_encoder(_no_input(e.errors())))},
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
        """Liveness and readiness: each model (smoke-tested, no failing calls, latest reload
        error) and the feedback store. 503 unless every model is ready and the store answers."""
        states = [ModelStatus(name=s.name, ready=s.last_error is None, error=s.last_error,
                              reload_error=pool.reload_errors.get(s.name),
                              loaded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                      time.gmtime(s.loaded_at)))
                  for s in pool.services()]
        ok = bool(states) and all(m.ready for m in states) and fb.ping()
        body = HealthResponse(status="ok" if ok else "degraded", models=pool.names,
                              feedback_store=fb.kind, uptime_seconds=time.time() - started,
                              model_status=states, auth=keys.enabled)
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

    def caller(request: Request) -> ApiKey | None:
        return request.scope.get(KEY_SCOPE)

    @app.post("/recommend", response_model=RecommendResponse,
              responses={**not_found, 403: {"model": ErrorResponse}})
    async def recommend(req: RecommendRequest, request: Request) -> Response:
        """Top-k items for a user id and/or an explicit history of raw item ids.

        A known user is ranked as that user (their learned vector, if the model has one) with
        their stored history plus ``history``; a history-only request, or an unknown user
        with a history, is ranked from that history alone. An unknown user (without history)
        gets the most popular items, flagged ``cold_start: true``. Unknown items in
        ``history`` are a 404. ``include_history`` needs a key with the ``history`` scope.
        """
        key = caller(request)
        if req.include_history and key is not None and not key.allows("history"):
            return JSONResponse({"detail": f"key {key.id!r} lacks the 'history' scope needed "
                                 "for include_history"}, status_code=403)
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
    def feedback(req: FeedbackRequest, request: Request) -> FeedbackResponse:
        """Store feedback events; they are committed to disk before the answer is sent.

        With API keys, an ``event_id`` is scoped to the key that sent it (stored as
        ``KEY_ID/EVENT_ID``): another key cannot claim it first.
        """
        now = time.time()
        key = caller(request)
        prefix = "" if key is None else f"{key.id}/"
        records = [FeedbackRecord(user_id=e.user, item_id=e.item, event=e.event, value=e.value,
                                  ts=e.timestamp if e.timestamp is not None else now,
                                  model=e.model, received_at=now,
                                  event_id=None if e.event_id is None else prefix + e.event_id)
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
                         403: {"model": ErrorResponse, "description": "Cross-site request"},
                         409: {"model": ErrorResponse, "description": "Bundle refused"},
                         415: {"model": ErrorResponse, "description": "Not a JSON body"}})
    async def admin_reload(req: ReloadRequest, request: Request,
                           content_type: str | None = Header(None),
                           origin: str | None = Header(None),
                           sec_fetch_site: str | None = Header(None)) -> Any:
        """Re-read model bundles from disk and swap them in without a restart.

        Needs an ``admin`` key and a JSON body (``{}`` for every model): a browser cannot
        send either cross-site without a CORS preflight, which this service never grants,
        and a request a browser marks cross-site is refused. Reloads are coalesced: one runs
        at a time, requests arriving meanwhile share the next one. Each new bundle is
        verified, its signature checked when required, and smoke-tested; if any step fails
        the old model stays in service and the answer is 409 with the reason.
        """
        if (content_type or "").split(";")[0].strip().lower() != "application/json":
            return JSONResponse({"detail": "POST /admin/reload takes a JSON body "
                                 "(Content-Type: application/json)"}, status_code=415)
        host = request.headers.get("host", "")
        if sec_fetch_site in ("cross-site", "same-site") or (
                origin is not None and origin.split("://", 1)[-1] != host):
            return JSONResponse({"detail": "cross-site reload refused"}, status_code=403)
        if req.model is not None:
            pool.get(req.model)  # 404 now rather than failing the shared reload
        try:
            done = await reloader.request(req.model)
            if settings.multiprocess:  # the bundles are good: have every worker replaced
                os.kill(os.getppid(), signal.SIGHUP)
        except BundleError as e:
            return JSONResponse({"detail": f"reload refused, old model kept: {e}"},
                                status_code=409)
        return ReloadResponse(reloaded=done)

    app.add_middleware(Guard, metrics=metrics, max_body_bytes=settings.max_body_bytes,
                       body_timeout=settings.body_timeout, keys=keys,
                       limiter=RateLimiter(settings.rate_limit, settings.rate_share))
    return app
