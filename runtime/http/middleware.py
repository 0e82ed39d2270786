"""HTTP middleware: request ids, timing, access log and the JSON 500 (`EdgeMiddleware`); CORS (`JSONCORSMiddleware`)."""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.errors import detail
from runtime.http.errors import error_body, json_response
from runtime.metrics import Metrics
from runtime.tracing import TRACEPARENT, RequestTrace, Tracer, parse_traceparent, propagate

log = logging.getLogger("runtime.http")
access_log = logging.getLogger("runtime.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
#: Request ids: a random per-process prefix and a counter, as unique as uuid4 within and across workers, without
#: a getrandom() call per request.
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count()


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
        tracer: Tracer | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_header_bytes = max_header_bytes
        self.debug = debug
        self.log_requests = log_requests
        self.direct = direct or {}
        self.tracer = tracer
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
        traceparent: bytes | None = None
        header_bytes = 0
        for name, value in scope["headers"]:
            header_bytes += len(name) + len(value) + 4
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                rid = candidate if _REQUEST_ID.match(candidate) else None
            elif name == TRACEPARENT:
                # Two traceparent headers cannot both be the parent: W3C says treat that as none.
                traceparent = value if traceparent is None else b""
        rid = rid or f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"
        scope["edge.request_id"] = rid
        if header_bytes > self.max_header_bytes:
            # httptools has already buffered them; refusing still keeps them away from every handler.
            too_large = json_response(
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
        trace: RequestTrace | None = None
        if traceparent is not None or self.tracer is not None:
            trace = self._start_trace(scope, traceparent, rid)
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
                if trace is not None and trace.echo is not None:
                    headers.append((TRACEPARENT, trace.echo))
                message = {**message, "headers": headers}
            await send(message)

        direct = self.direct.get((scope["method"], scope["path"]))
        label = scope["path"] if direct is not None else "unmatched"
        self.metrics.in_flight.inc()
        try:
            await (direct or self.app)(scope, receive, send_wrapper)
        except ClientDisconnect:
            # The client went, or the server cut a body that took too long (EDGE_BODY_TIMEOUT_S): no one to answer.
            status = 499
        except Exception as exc:
            log.exception("unhandled error", extra={"request_id": rid, "path": scope.get("path")})
            if started:
                raise
            message = f"internal error: {type(exc).__name__}: {exc}" if self.debug else "internal server error"
            response = json_response(500, error_body(message, "INTERNAL_ERROR", rid=rid))
            await response(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            if route is not None and hasattr(route, "path"):
                # Label by route template, never by raw path: unknown paths must not grow the series count.
                label = route.path
            self.metrics.in_flight.dec()
            self._observe(label, status, elapsed)
            if trace is not None:
                trace.end(scope["method"], label, status)
            if self.log_requests:
                fields = {
                    "request_id": rid,
                    "method": scope.get("method"),
                    "route": label,
                    "status": status,
                    "latency_ms": round(elapsed * 1000, 3),
                }
                if trace is not None:
                    fields["trace_id"] = trace.trace_id
                    fields["span_id"] = trace.span_id
                access_log.info("request", extra=fields)

    def _start_trace(self, scope: Scope, traceparent: bytes | None, rid: str) -> RequestTrace | None:
        """Continue the caller's trace (a malformed traceparent is ignored) and, with a tracer, open our span."""
        parent = parse_traceparent(traceparent) if traceparent else None
        if self.tracer is None:
            return propagate(parent)
        attributes = {"http.request.method": scope["method"], "url.path": scope["path"], "edge.request_id": rid}
        return self.tracer.start_request(scope["method"], parent, attributes)


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
        return json_response(response.status_code, body, headers)
