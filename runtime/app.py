"""The HTTP API: routes, auth, limits and the one JSON error shape. Model work goes through the batcher."""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import os
import re
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime import __version__
from runtime.batching import Batcher
from runtime.body import read_body
from runtime.constants import WINDOW_LENGTH
from runtime.decoding import Window, decode_batch, decode_prediction
from runtime.drift import DriftMonitor
from runtime.errors import (
    BadRequest,
    DeadlineExceeded,
    EdgeError,
    NotReady,
    Overloaded,
    RateLimited,
    StaleWindow,
    Unauthorized,
    UnsupportedMediaType,
)
from runtime.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from runtime.metrics import Metrics
from runtime.openapi import openapi_schema
from runtime.predictions import responses
from runtime.ratelimit import RateLimiter, retry_after
from runtime.risk import window_features
from runtime.schemas import ReloadRequest
from runtime.session import Model, ModelInfo, threads_per_worker
from runtime.settings import Settings

log = logging.getLogger("runtime.app")
access_log = logging.getLogger("runtime.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
_JSON_TYPES = ("application/json",)
_RELOAD_BODY_LIMIT = 4096
#: Request ids: a random per-process prefix and a counter, as unique as uuid4 within and across workers, without
#: a getrandom() call per request.
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count()
ModelLoader = Callable[[Settings, "str | None"], Model]


def default_model_loader(settings: Settings, version: str | None = None) -> Model:
    return Model.load(
        settings.model_path(version),
        precision=settings.precision,
        provider=settings.provider,
        intra_op_threads=threads_per_worker(settings.intra_op_threads, settings.workers),
        batch_invariant=settings.batch_invariant,
    )


class ReloadFailed(EdgeError):
    status_code = 409
    code = "RELOAD_FAILED"


@dataclass
class Service:
    """Everything a request needs; built in the lifespan, reached through ``app.state.service``."""

    settings: Settings
    api_keys: list[bytes]
    loader: ModelLoader
    metrics: Metrics = field(default_factory=Metrics)
    model: Model | None = None
    batcher: Batcher | None = None
    drift: DriftMonitor | None = None
    version: str | None = None
    #: Requests the HTTP server holds (parsed or not); set by the server. With one, a request may run inline.
    backlog: Callable[[], int] | None = None
    #: Requests past admission and not yet answered (see `admission`).
    admitted: int = 0
    ready: bool = False
    draining: bool = False
    rate_limiter: RateLimiter | None = None
    drift_loader: threading.Thread | None = None
    started: float = field(default_factory=time.perf_counter)
    background: set[asyncio.Task[None]] = field(default_factory=set)
    _reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def begin_draining(self) -> None:
        """Turn /ready false so load balancers move away. Requests already received are still served: the
        server stops accepting connections itself, and the batcher stops admitting only at lifespan shutdown."""
        self.draining = True
        self.ready = False

    def install(self, model: Model) -> None:
        """Make `model` the one new batches run on; a batch already taken finishes on the old one."""
        if self.batcher is not None:
            self.batcher.swap_run(model.run, model.info)
        self.model = model
        self.metrics.set_model(model.info)

    async def reload(self, version: str | None = None) -> tuple[ModelInfo, ModelInfo]:
        """Verify and warm the new model off the loop, then swap it in; on failure the old one keeps serving."""
        async with self._reload_lock:
            assert self.model is not None
            old = self.model.info
            target = version or self.version
            try:
                new = await asyncio.to_thread(self.loader, self.settings, target)
            except Exception as e:
                self.metrics.reloads.labels("failed").inc()
                log.error("reload failed; still serving %s", old.version, extra={"reason": str(e)})
                raise ReloadFailed(f"reload failed, still serving version {old.version}: {e}") from e
            self.install(new)
            self.version = target
            self.metrics.reloads.labels("ok").inc()
            log.info("model reloaded", extra={"previous_version": old.version, "model_version": new.info.version})
            self.start_drift_monitor()
            return old, new.info

    def start_drift_monitor(self) -> None:
        """Load the FP32 reference in the background (not on the start-up path) and sample live traffic."""
        rate = self.settings.drift_sample_rate
        if rate <= 0 or self.model is None or self.model.info.precision != "int8":
            return
        info = self.model.info
        previous = self.drift

        def load() -> None:
            try:
                reference = Model.load(
                    self.settings.model_path(self.version),
                    precision="fp32",
                    provider=info.provider,
                    intra_op_threads=1,
                    batch_invariant=False,  # a reference for INT8 vs FP32 drift: batched FP32 moves rows by ~1e-7
                )
            except Exception:
                log.exception("drift monitor disabled: the FP32 reference could not be loaded")
                return
            monitor = DriftMonitor(reference, self.metrics, rate)
            monitor.start()
            self.drift = monitor
            if previous is not None:
                previous.stop()

        loader = threading.Thread(target=load, name="edge-drift-load", daemon=True)
        self.drift_loader = loader
        loader.start()

    def stop_drift_monitor(self, timeout: float = 10.0) -> None:
        """Wait for a reference still loading (onnxruntime aborts the process if torn down mid-load), then stop."""
        if self.drift_loader is not None:
            self.drift_loader.join(timeout)
        if self.drift is not None:
            self.drift.stop()


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def error_body(error: str, code: str, details: list[dict[str, Any]] | None = None, rid: str | None = None) -> Any:
    return {"error": error, "code": code, "details": details or [], "request_id": rid}


def _request_id(scope: Scope) -> str | None:
    rid = scope.get("edge.request_id")
    return rid if isinstance(rid, str) else None


def detail(loc: Iterable[str | int], message: str, type_: str) -> dict[str, str]:
    """One entry of an error's `details`, as the seed's validation handler writes it (dotted `field`)."""
    return {"field": ".".join(str(part) for part in loc), "message": message, "type": type_}


def _validation_details(e: ValidationError) -> tuple[int, str, str, list[dict[str, Any]]]:
    # FastAPI (the seed) prefixes body fields with "body": clients parse "body.sequence.3.high".
    errors = e.errors(include_url=False, include_input=False, include_context=False)
    details = [detail(("body", *err["loc"]), err["msg"], err["type"]) for err in errors]
    if any(err["type"] == "json_invalid" for err in errors):
        return 400, "BAD_REQUEST", "request body is not valid JSON", details
    return 422, "VALIDATION_FAILED", "Validation Error", details


# -- request plumbing -------------------------------------------------------------------------------------------
def _authorize(request: Request, service: Service) -> None:
    _check_api_key(request.headers.get("x-api-key"), service)


def _check_api_key(supplied: str | None, service: Service) -> None:
    """401 unless `supplied` is one of the keys (or none are set); then 429 if that key has used its rate."""
    matched = -1  # without keys, every caller shares one bucket
    if service.api_keys:
        if supplied is None:
            raise Unauthorized("missing X-API-Key header")
        candidate = supplied.encode()
        for i, key in enumerate(service.api_keys):  # no early exit: the time taken does not depend on the match
            if hmac.compare_digest(candidate, key):
                matched = i
        if matched < 0:
            raise Unauthorized("invalid API key")
    limiter = service.rate_limiter
    if limiter is not None:
        wait = limiter.acquire(matched)
        if wait > 0:
            service.metrics.rejected.labels("rate_limited").inc()
            raise RateLimited(
                f"rate limit of {limiter.rate:g} requests/s for this API key reached; retry in {wait:.3f} s",
                headers={"Retry-After": retry_after(wait)},
            )


def _check_json_type(content_type: str) -> None:
    if content_type.split(";", 1)[0].strip().lower() not in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type '{content_type[:100]}' is not supported; send 'application/json'",
            details=[detail(("header", "content-type"), "must be application/json", "media_type")],
        )


async def _read_json_body(request: Request, limit: int) -> bytes:
    headers = request.headers
    return await _read_json(request.receive, headers.get("content-type"), headers.get("content-length"), limit)


async def _read_json(receive: Receive, content_type: str | None, length: str | None, limit: int) -> bytes:
    """A JSON request's body from its Content-Type and Content-Length values: 415, 400 and 413 as they apply."""
    _check_json_type(content_type or "")
    body = await read_body(receive, length, limit)
    if not body:
        raise BadRequest("request body is empty; send a JSON object")
    return body


def _serving(service: Service) -> Service:
    if service.batcher is None or service.model is None:
        raise NotReady("model is not loaded yet")
    return service


@contextmanager
def admission(service: Service) -> Iterator[None]:
    """Admit a request or answer 503 at once, before its body is read or parsed (work overload cannot afford).

    Two bounds: windows queued for the model, and requests admitted and not yet answered. The second bounds the
    latency of what is accepted: requests also wait in the event loop (to be parsed) before the model's queue.
    """
    batcher = service.batcher
    assert batcher is not None
    if batcher.queued_windows >= batcher.max_queue:
        service.metrics.rejected.labels("overloaded").inc()
        raise Overloaded(f"admission queue full ({batcher.max_queue} windows queued); retry shortly")
    limit = service.settings.max_pending_requests
    if service.admitted >= limit:
        service.metrics.rejected.labels("overloaded").inc()
        raise Overloaded(f"{limit} requests already admitted; retry shortly")
    service.admitted += 1
    try:
        yield
    finally:
        service.admitted -= 1


def _check_fresh(service: Service, reqs: list[Window]) -> None:
    max_age = service.settings.max_window_age_s
    if max_age <= 0:
        return
    now = datetime.now(UTC)
    for i, req in enumerate(reqs):
        age = (now - req.last_timestamp).total_seconds()
        if age > max_age:
            service.metrics.rejected.labels("stale").inc()
            loc: list[str | int] = ["sequence", WINDOW_LENGTH - 1, "timestamp"]
            raise StaleWindow(
                f"window is stale: last candle is {age:.0f} s old, the limit is {max_age:g} s",
                details=[
                    detail(
                        ["body", *loc] if len(reqs) == 1 else ["body", "requests", i, *loc],
                        f"last candle older than {max_age:g} s",
                        "stale_window",
                    )
                ],
            )


async def _run(
    service: Service, reqs: list[Window], *, deadline: float | None, rid: str
) -> tuple[list[dict[str, Any]], float]:
    """Windows through the batcher; the candle-only risk features are computed while the model runs."""
    _check_fresh(service, reqs)
    windows = reqs[0].window[None] if len(reqs) == 1 else np.stack([r.window for r in reqs])  # (n, 60, 5)
    batcher = service.batcher
    assert batcher is not None
    result = None
    if service.backlog is not None and service.backlog() <= 1:
        # Alone on the server: skip both thread hand-offs (see Batcher.run_inline_if_idle).
        result = batcher.run_inline_if_idle(windows)
    if result is not None:
        features = window_features(windows)
    else:
        try:
            pending = batcher.enqueue(windows, deadline=deadline)
        except Overloaded:
            service.metrics.rejected.labels("overloaded").inc()
            raise
        # The candle-only risk features are computed while the model runs on the inference thread.
        features = window_features(windows)
        try:
            result = await pending
        except DeadlineExceeded:
            service.metrics.rejected.labels("deadline").inc()
            raise
    probs = result.probabilities
    info: ModelInfo = result.tag
    if service.drift is not None and info.precision == "int8":
        service.drift.offer(windows, probs)
    answers = responses(
        reqs, probs, features, info, result=result, compute_ms=result.compute_ms, request_id=rid
    )
    return answers, result.compute_ms


def _deadline(request: Request) -> float | None:
    return _parse_deadline(request.headers.get("x-deadline-ms"))


def _parse_deadline(raw: str | None) -> float | None:
    """An optional ``X-Deadline-Ms`` header: the request's budget in ms from now; stale work is not computed."""
    if raw is None:
        return None
    try:
        budget = float(raw)
    except ValueError:
        budget = float("nan")
    if not (0 < budget <= 600_000):
        raise BadRequest(
            f"X-Deadline-Ms '{raw[:32]}' must be a number of milliseconds in (0, 600000]",
            details=[detail(("header", "x-deadline-ms"), "must be in (0, 600000]", "value_error")],
        )
    return time.perf_counter() + budget / 1000


# -- routes -----------------------------------------------------------------------------------------------------
class PredictEndpoint:
    """``POST /predict`` as a plain ASGI app: the hot path builds no Starlette Response and no middleware frames.

    `EdgeMiddleware` calls it directly for ``POST /predict``; it is also the Starlette route's endpoint, so any
    other method still gets the router's 405. Errors become the one JSON error shape here, as the app's handlers
    would make them.
    """

    def __init__(self, service: Service) -> None:
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # One pass over the raw headers instead of a Request and its Headers (first occurrence wins, as there).
        content_type = length = api_key = deadline = None
        for name, value in scope["headers"]:
            if name == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
            elif name == b"content-length" and length is None:
                length = value.decode("latin-1")
            elif name == b"x-api-key" and api_key is None:
                api_key = value.decode("latin-1")
            elif name == b"x-deadline-ms" and deadline is None:
                deadline = value.decode("latin-1")
        try:
            service = _serving(self.service)
            with admission(service):
                _check_api_key(api_key, service)
                body = await _read_json(receive, content_type, length, service.settings.max_body_bytes)
                window = decode_prediction(body, service.settings.exchanges)
                [payload], _ = await _run(
                    service, [window], deadline=_parse_deadline(deadline), rid=_request_id(scope) or ""
                )
        except (EdgeError, ValidationError) as exc:
            request = Request(scope, receive)
            handler = _edge_error if isinstance(exc, EdgeError) else _validation_error
            response = await handler(request, exc)
            await response(scope, receive, send)
            return
        encoded = msgspec.json.encode(payload)  # probabilities are checked finite; everything else is bounded
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(encoded))],
            }
        )
        await send({"type": "http.response.body", "body": encoded})


async def predict_batch(request: Request) -> Response:
    service = _serving(request.app.state.service)
    with admission(service):
        _authorize(request, service)
        body = await _read_json_body(request, service.settings.max_body_bytes)
        windows = decode_batch(body, service.settings.exchanges)
        predictions, _ = await _run(service, windows, deadline=_deadline(request), rid=_request_id(request.scope) or "")
    return _json(200, predictions)  # the seed's list[PredictionResponse], in request order


async def health(request: Request) -> Response:
    return _json(200, {"status": "alive", "version": __version__})


async def ready(request: Request) -> Response:
    service: Service = request.app.state.service
    if not service.ready or service.model is None:
        reason = "draining" if service.draining else "loading"
        return _json(503, error_body(f"not ready: {reason}", "NOT_READY", rid=_request_id(request.scope)))
    info = service.model.info
    return _json(
        200,
        {
            "status": "ready",
            "model": info.name,
            "model_version": info.version,
            "precision": info.precision,
            "provider": info.provider,
            "intra_op_threads": info.intra_op_threads,
        },
    )


async def openapi(request: Request) -> Response:
    return _json(200, openapi_schema(request.app.state.service.settings.exchanges))


async def metrics(request: Request) -> Response:
    service: Service = request.app.state.service
    if service.settings.metrics_require_key:
        _authorize(request, service)
    if service.batcher is not None:
        service.metrics.queued.set(service.batcher.queued_windows)
    return Response(service.metrics.render(), media_type=METRICS_CONTENT_TYPE)


async def admin_reload(request: Request) -> Response:
    """Reload the model (optionally another version): verified and warmed before an atomic swap."""
    service: Service = request.app.state.service
    _authorize(request, service)
    if service.model is None or service.draining:
        raise NotReady("no model is being served")
    version = None
    if request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers:
        body = await _read_json_body(request, _RELOAD_BODY_LIMIT)
        version = ReloadRequest.model_validate_json(body).version
    old, new = await service.reload(version)
    return _json(
        200,
        {
            "status": "reloaded",
            "previous_version": old.version,
            "model_version": new.version,
            "precision": new.precision,
            "provider": new.provider,
        },
    )


# -- errors -----------------------------------------------------------------------------------------------------
def error_headers(exc: EdgeError) -> dict[str, str]:
    """Headers an error carries: its own (Retry-After of a 429), Retry-After on a 503, the 401 challenge."""
    headers = dict(exc.headers)
    if exc.status_code == 503:
        headers.setdefault("Retry-After", "1")
    elif exc.status_code == 401:
        headers["WWW-Authenticate"] = "ApiKey"
    return headers


async def _edge_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EdgeError)
    headers = error_headers(exc)
    return _json(exc.status_code, error_body(exc.message, exc.code, exc.details, _request_id(request.scope)), headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    status, code, message, details = _validation_details(exc)
    return _json(status, error_body(message, code, details, _request_id(request.scope)))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
    return _json(
        exc.status_code,
        error_body(str(exc.detail), codes.get(exc.status_code, "HTTP_ERROR"), rid=_request_id(request.scope)),
        dict(exc.headers) if exc.headers else None,
    )


class EdgeMiddleware:
    """Request id, X-Process-Time-Ms, optional access log, and a JSON 500 that leaks nothing unless debug.

    Plain ASGI rather than BaseHTTPMiddleware: it adds no task or stream per request on the hot path. Requests
    for a route in `direct` (method, path) go straight to that ASGI app, past Starlette's router and middleware.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_header_bytes: int,
        debug: bool = False,
        log_requests: bool = False,
        direct: dict[tuple[str, str], ASGIApp] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_header_bytes = max_header_bytes
        self.debug = debug
        self.log_requests = log_requests
        self.direct = direct or {}
        self._observers: dict[tuple[str, int], tuple[Callable[[], None], Callable[[float], None]]] = {}

    def _observe(self, label: str, status: int, elapsed: float) -> None:
        # prometheus_client's labels() builds and locks per call; the children are cached per (route, status).
        observers = self._observers.get((label, status))
        if observers is None:
            observers = (
                self.metrics.requests.labels(label, str(status)).inc,
                self.metrics.latency.labels(label).observe,
            )
            self._observers[(label, status)] = observers
        count, observe = observers
        count()
        observe(elapsed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = None
        header_bytes = 0
        for name, value in scope["headers"]:
            header_bytes += len(name) + len(value) + 4
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                rid = candidate if _REQUEST_ID.match(candidate) else None
        rid = rid or f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"
        scope["edge.request_id"] = rid
        if header_bytes > self.max_header_bytes:
            # httptools has already buffered them; refusing still keeps them away from every handler.
            too_large = _json(
                431,
                error_body(
                    f"request headers total {header_bytes} bytes, more than the limit of {self.max_header_bytes}",
                    "HEADERS_TOO_LARGE",
                    rid=rid,
                ),
            )
            await too_large(scope, receive, send)
            self.metrics.requests.labels("unmatched", "431").inc()
            return
        status = 500
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                elapsed = (time.perf_counter() - start) * 1000
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                headers.append((b"x-process-time-ms", f"{elapsed:.3f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        direct = self.direct.get((scope["method"], scope["path"]))
        label = scope["path"] if direct is not None else "unmatched"
        self.metrics.in_flight.inc()
        try:
            await (direct or self.app)(scope, receive, send_wrapper)
        except Exception as exc:
            log.exception("unhandled error", extra={"request_id": rid, "path": scope.get("path")})
            if started:
                raise
            message = f"internal error: {type(exc).__name__}: {exc}" if self.debug else "internal server error"
            response = _json(500, error_body(message, "INTERNAL_ERROR", rid=rid))
            await response(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            if route is not None and hasattr(route, "path"):
                # Label by route template, never by raw path: unknown paths must not grow the series count.
                label = route.path
            self.metrics.in_flight.dec()
            self._observe(label, status, elapsed)
            if self.log_requests:
                access_log.info(
                    "request",
                    extra={
                        "request_id": rid,
                        "method": scope.get("method"),
                        "route": label,
                        "status": status,
                        "latency_ms": round(elapsed * 1000, 3),
                    },
                )


def _drain_on_signals(service: Service) -> None:
    """Chain onto the server's SIGTERM/SIGINT handlers: /ready turns false the moment a stop begins, and the
    server's own shutdown (close the listener, finish in-flight requests) starts `drain_delay_s` later."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    delay = service.settings.drain_delay_s
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: Any, previous: Callable[[int, Any], Any] = previous) -> None:
            if service.draining or delay <= 0:  # a second signal stops at once
                service.begin_draining()
                previous(signum, frame)
                return
            service.begin_draining()
            log.info("draining: /ready is false; closing the listener in %.1f s", delay)
            loop.call_soon_threadsafe(loop.call_later, delay, previous, signum, None)

        signal.signal(sig, handler)


def _reload_on_sighup(service: Service) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()

    def on_hup() -> None:
        async def run() -> None:
            try:
                await service.reload()
            except ReloadFailed:
                pass  # already logged with the reason; the old model keeps serving

        task = loop.create_task(run())
        service.background.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(service.background.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
        pass


def create_app(settings: Settings, *, model_loader: ModelLoader = default_model_loader) -> Starlette:
    """Build the ASGI app. The model is loaded and warmed in the lifespan, before /ready turns true."""
    service = Service(
        settings=settings,
        api_keys=settings.all_api_keys(),
        loader=model_loader,
        version=settings.model_version,
        rate_limiter=RateLimiter(settings.rate_limit, settings.rate_limit_bucket()) if settings.rate_limit else None,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.draining = False  # a lifespan may start again on the same app (tests, embedding servers)
        model = model_loader(settings, service.version)
        batcher = Batcher(
            model.run,
            tag=model.info,
            max_batch_size=settings.batch_size_for(model.info.provider),
            max_batch_delay_us=settings.max_batch_delay_us,
            max_queue=settings.max_queue,
            on_batch=service.metrics.observe_batch,
        )
        batcher.start()
        service.batcher = batcher
        service.install(model)
        _drain_on_signals(service)
        _reload_on_sighup(service)
        service.ready = True
        log.info(
            "ready",
            extra={
                "startup_s": round(time.perf_counter() - service.started, 3),
                "model_version": model.info.version,
                "precision": model.info.precision,
                "provider": model.info.provider,
                "threads": model.info.intra_op_threads,
            },
        )
        service.start_drift_monitor()
        try:
            yield
        finally:
            service.begin_draining()
            await batcher.stop(settings.graceful_timeout)
            await asyncio.to_thread(service.stop_drift_monitor)

    from runtime import docs, v2  # v2 handlers reuse this module's auth; imported here to keep imports one-way

    predict = PredictEndpoint(service)
    routes = [
        Route("/predict", predict, methods=["POST"]),
        Route("/predict/batch", predict_batch, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/admin/reload", admin_reload, methods=["POST"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *v2.routes,
        *docs.routes,
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            EdgeError: _edge_error,
            ValidationError: _validation_error,
            HTTPException: _http_error,
        },
    )
    app.state.service = service
    app.add_middleware(
        EdgeMiddleware,
        metrics=service.metrics,
        max_header_bytes=settings.max_header_bytes,
        debug=settings.debug,
        log_requests=settings.access_log,
        direct={("POST", "/predict"): predict},
    )
    if settings.cors_origins:
        # Outside EdgeMiddleware, so the direct /predict path gets CORS headers too; off (zero cost) by default.
        app.add_middleware(
            JSONCORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"],
            allow_credentials=True,  # as the seed's
            expose_headers=["X-Request-Id", "X-Process-Time-Ms", "Retry-After"],
            max_age=600,
        )
    return app


class JSONCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered in the service's JSON error shape (not plain text)."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        reason = bytes(response.body).decode("utf-8", "replace")
        field = "origin" if "origin" in reason.lower() else "access-control-request-headers"
        if "method" in reason.lower():
            field = "access-control-request-method"
        body = error_body(reason, "CORS_REJECTED", [detail(("header", field), reason, "cors")])
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-type", "content-length")}
        return _json(response.status_code, body, headers)
