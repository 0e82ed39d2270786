"""The HTTP app: routes, the lifespan that starts and stops the service core, and the small routes.

`create_app` wires the protocol layers (`predict`, `v2`, `stream`, `docs`) over one `Service`; each of them imports the
service core and the shared HTTP helpers, never this module or each other.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runtime import __version__
from runtime.errors import NotReady
from runtime.http import docs, repository, stream, v2
from runtime.http.errors import HANDLERS, error_body, json_response
from runtime.http.middleware import EdgeMiddleware, JSONCORSMiddleware
from runtime.http.openapi import openapi_schema
from runtime.http.predict import PredictEndpoint, predict_batch
from runtime.http.request import check_json_type, read_json_body, request_id
from runtime.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from runtime.schemas import ReloadRequest
from runtime.service import ModelLoader, Service, default_model_loader
from runtime.settings import Settings
from runtime.tracing import tracer_from_settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

_RELOAD_BODY_LIMIT = 4096


async def health(request: Request) -> Response:
    return json_response(200, {"status": "alive", "version": __version__})


async def ready(request: Request) -> Response:
    service: Service = request.app.state.service
    waiting = service.workers_waiting() if service.ready else None
    if not service.ready or service.model is None or service.saturated or waiting is not None:
        reason = "draining" if service.draining else "saturated" if service.saturated else waiting or "loading"
        return json_response(503, error_body(f"not ready: {reason}", "NOT_READY", rid=request_id(request.scope)))
    info = service.model.info
    return json_response(
        200,
        {
            "status": "ready",
            "model": info.name,
            "model_version": info.version,
            "precision": info.precision,
            "provider": info.provider,
            "intra_op_threads": info.intra_op_threads,
            "instances": info.instances,
        },
    )


async def openapi(request: Request) -> Response:
    return json_response(200, openapi_schema(request.app.state.service.settings.exchanges))


async def metrics(request: Request) -> Response:
    service: Service = request.app.state.service
    if service.settings.metrics_require_key:
        service.authorize(request.headers.get("x-api-key"))
    if service.batcher is not None:
        service.metrics.queued.set(service.batcher.queued_windows)
    if service.group is not None:
        service.group.reap()  # a crashed worker's in-flight gauges must not count
    return Response(service.metrics.render(), media_type=METRICS_CONTENT_TYPE)


async def admin_reload(request: Request) -> Response:
    """Reload the model (optionally another version): verified and warmed before an atomic swap."""
    service: Service = request.app.state.service
    service.authorize(request.headers.get("x-api-key"))
    if service.model is None or service.draining:
        raise NotReady("no model is being served")
    version = None
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    content_type = request.headers.get("content-type")
    if content_type is not None:
        # Even with no body: a browser form POST (a "simple" cross-origin request, no preflight) must not reload.
        check_json_type(content_type)
    if has_body:
        body = await read_json_body(request, _RELOAD_BODY_LIMIT)
        version = ReloadRequest.model_validate_json(body).version
    old, new = await service.reload(version)
    return json_response(
        200,
        {
            "status": "reloaded",
            "previous_version": old.version,
            "model_version": new.version,
            "precision": new.precision,
            "provider": new.provider,
        },
    )


def create_app(
    settings: Settings,
    *,
    model_loader: ModelLoader = default_model_loader,
    on_start: Sequence[Callable[[Service], None]] = (),
    servers: Sequence[Callable[[Service], AbstractAsyncContextManager[object]]] = (),
    tracer_provider: TracerProvider | None = None,
) -> Starlette:
    """Build the ASGI app. The model is loaded and warmed in the lifespan, before /ready turns true; `on_start`
    hooks (the server's signal handlers) run in the server's loop once it has. `servers` are other protocols'
    servers over the same service (gRPC), entered once the model is ready and closed before the service stops.
    `tracer_provider` (an OpenTelemetry SDK provider) replaces the OTLP exporter that settings and the OTEL_*
    variables would configure."""
    service = Service.from_settings(settings, model_loader, tracer_from_settings(settings, provider=tracer_provider))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.start()
        for hook in on_start:
            hook(service)
        # What start-up built (the model, the app, imported modules) lives as long as the process: out of the
        # collector's generations, a full collection under load walks only what requests allocate (measured
        # during a pipelining flood: the normal client's worst request 143 -> 70 ms).
        try:
            async with AsyncExitStack() as stack:
                for server in servers:
                    await stack.enter_async_context(server(service))
                gc.freeze()
                yield
        finally:
            await service.stop()

    predict = PredictEndpoint(service)
    routes = [
        Route("/predict", predict, methods=["POST"]),
        Route("/predict/batch", predict_batch, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/admin/reload", admin_reload, methods=["POST"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *docs.routes,
        *v2.routes,
        *repository.routes,
        *stream.routes(service),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=dict(HANDLERS))
    # No 307 to the path with(out) a trailing slash: its Location would be built from the client's Host header.
    app.router.redirect_slashes = False
    app.state.service = service
    app.add_middleware(
        EdgeMiddleware,
        metrics=service.metrics,
        max_header_bytes=settings.max_header_bytes,
        debug=settings.debug,
        log_requests=settings.access_log,
        direct={("POST", "/predict"): predict},
        tracer=service.tracer,
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
