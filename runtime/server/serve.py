"""Process model: uvicorn with one in-process app, or N worker processes sharing the port.

The uvicorn-internal tweaks live in this package, each behind a setting that falls back to stock uvicorn:
`EDGE_COALESCE_WRITES` (`transport.py`: a response's header block and body in one write), the connection limits
`EDGE_HEADER_TIMEOUT_S`, `EDGE_BODY_TIMEOUT_S`, `EDGE_MAX_PIPELINED` and the header budget `EDGE_MAX_HEADER_BYTES`
(`protocol.py`; with all of them and coalescing off, stock httptools), `EDGE_INLINE_WHEN_IDLE`
(reads `Server.server_state.tasks` to know when a request is alone) and `EDGE_DRAIN_DELAY_S` (`signals.py`: chains
onto uvicorn's signal handlers). pyproject pins uvicorn to the range the tests ran.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import ModuleType
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette

from runtime.http.app import create_app
from runtime.manifest import Manifest
from runtime.repository import Repository
from runtime.server.limits import ProtocolLimits
from runtime.server.protocol import EdgeHttpProtocol
from runtime.server.signals import SERVER_HOOKS
from runtime.service import Service, default_model_loader
from runtime.session import Model, require_cuda
from runtime.settings import Settings
from runtime.shadow import shadow_entry
from runtime.workers import shared_dir

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("runtime")


def uvicorn_options(settings: Settings, model_free: set[asyncio.Task[Any]] | None = None) -> dict[str, object]:
    """uvicorn's options for `settings`; `model_free` collects the tasks of requests that never run the model
    (see `EdgeHttpProtocol`), for the backlog that decides when a request runs inline."""
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:  # pragma: no cover - uvloop is a base dependency on Linux
        loop = "asyncio"
    limits = protocol_limits(settings)
    return {
        "host": settings.host,
        "port": settings.port,
        "loop": loop,
        # httptools, through EdgeHttpProtocol unless every tweak it carries is off (protocol.py). A partial of a
        # module-level class with a frozen dataclass pickles, so worker processes (spawned) get it too.
        "http": (
            functools.partial(EdgeHttpProtocol, limits=limits, model_free=model_free) if limits.active else "httptools"
        ),
        "lifespan": "on",
        "access_log": False,
        "log_config": None,
        "server_header": False,
        # X-Forwarded-* are not used (nothing is logged or decided by client address): skip that middleware.
        "proxy_headers": False,
        "timeout_graceful_shutdown": settings.graceful_timeout,
        # /stream: websockets' sans-I/O protocol refuses a message over the body limit with close code 1009
        # before buffering it; no per-message deflate (a candle message is ~150 bytes: compressing it costs CPU
        # and latency for nothing, and a compressed bomb is one less thing to bound).
        "ws": "websockets-sansio",
        "ws_max_size": settings.max_body_bytes,
        "ws_per_message_deflate": False,
        # No limit_concurrency: uvicorn would answer past it with a bare text 503, probes included. Admission is
        # bounded by the batcher's queue instead (JSON 503 + Retry-After); connection counts belong to the proxy.
        "backlog": 2048,
    }


def protocol_limits(settings: Settings) -> ProtocolLimits:
    return ProtocolLimits(
        coalesce_writes=settings.coalesce_writes,
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        max_pipelined=settings.max_pipelined,
        max_header_bytes=settings.max_header_bytes if settings.header_limit_while_reading else 0,
        max_connections=settings.connection_cap(),
    )


def _tune_interpreter(settings: Settings) -> None:
    # Measured at 64 connections on 2 CPUs: 1215 req/s at Python's default 5 ms, 1411 at 0.2 ms.
    sys.setswitchinterval(settings.gil_switch_interval_us / 1e6)


def protocol_servers(settings: Settings) -> list[Callable[[Service], AbstractAsyncContextManager[object]]]:
    """Servers beside HTTP on the same loop and service: gRPC when its port is set (its extra checked now, so a
    missing one stops start-up with the install command before the model is loaded)."""
    if not settings.grpc_port:
        return []
    from runtime.grpc.server import check_installed, grpc_server

    check_installed()
    return [grpc_server]


def app_from_env() -> Starlette:
    """Factory for worker processes: settings come from the EDGE_ environment the parent exported."""
    from runtime import logs

    settings = Settings()
    logs.configure(settings.log_level)
    _tune_interpreter(settings)
    return create_app(settings, on_start=SERVER_HOOKS, servers=protocol_servers(settings))


def serve(settings: Settings, uvicorn: ModuleType, *, tracer_provider: TracerProvider | None = None) -> int:
    """Run the server until it is stopped. `tracer_provider` (one process only) replaces the OTLP exporter that
    settings would configure: `bench.tracing` serves with an in-memory exporter through it."""
    started = time.perf_counter()
    _tune_interpreter(settings)
    if tracer_provider is not None and settings.workers != 1:
        raise ValueError("a tracer_provider is an in-process object: it serves one worker only")
    servers = protocol_servers(settings)
    # Before binding: a shadow version that is missing or UNAVAILABLE stops start-up with the reason (exit 1).
    shadow_entry(settings, Repository(settings.model_dir))
    if settings.workers == 1:
        # Load and warm before binding: a bad model fails here with a clear message and exit code 1.
        model = default_model_loader(settings, settings.model_version)
        log.info("model warmed in %.3f s", time.perf_counter() - started)
        preloaded = [model]

        def loader(s: Settings, version: str | None) -> Model:
            # The first call (start-up) takes the model warmed above; reloads read the disk again.
            return preloaded.pop() if preloaded else default_model_loader(s, version)

        app = create_app(
            settings, model_loader=loader, on_start=SERVER_HOOKS, servers=servers, tracer_provider=tracer_provider
        )
        model_free: set[asyncio.Task[Any]] = set()
        config = uvicorn.Config(app, **uvicorn_options(settings, model_free))
        server = uvicorn.Server(config)
        if settings.inline_when_idle:
            tasks = server.server_state.tasks  # one asyncio task per request (or WebSocket) the server holds

            def backlog() -> int:
                # Requests that may need the model: probes, metrics and docs do not count (with the stock
                # protocol, EDGE_COALESCE_WRITES and every limit off, nothing is tagged and they all count). A
                # task leaves the sets one loop step after its response is written, and the client's next request
                # can be read in between: count only unfinished tasks when few are left.
                n = len(tasks) - len(model_free)
                return n if n > 2 else sum(1 for task in tasks if not task.done() and task not in model_free)

            app.state.service.backlog = backlog
        server.run()
        return 0

    # Verify once in the parent so a bad artifact stops start-up instead of crash-looping N workers.
    path = settings.model_path()
    manifest = Manifest.load(path)
    for name in manifest.onnx_files():
        manifest.verify(path, name)
    if settings.provider == "cuda":
        require_cuda()  # one clear refusal here rather than N workers failing in turn
    settings.export_to_environ()
    # Metrics and readiness shared by the workers (runtime.workers): created before they are spawned, removed after.
    with shared_dir():
        uvicorn.run(
            "runtime.server.serve:app_from_env", factory=True, workers=settings.workers, **uvicorn_options(settings)
        )
    return 0
