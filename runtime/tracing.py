"""Tracing: W3C Trace Context always, OpenTelemetry spans when the `otel` extra is installed and tracing is on.

Protocol-neutral, so every protocol layer traces the same way: a layer parses the incoming `traceparent` with
`parse_traceparent`, opens the request's span with `Tracer.start_request` (or `propagate` alone when no tracer is
configured) and ends it with the route and status; the service core calls `Tracer.record_run` when the request's
model run comes back, which adds the request's queue wait and model run as child spans.

Off (no tracer), the hot path pays one `is None` check per request, plus one header-name comparison while the
headers are scanned anyway; an incoming `traceparent` is still echoed with a span id of ours (`propagate`).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runtime import __version__
from runtime.errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

    from runtime.settings import Settings

log = logging.getLogger(__name__)

TRACEPARENT = b"traceparent"
INSTALL_HINT = "pip install 'neuraltrade-edge[otel]'"
_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
#: The request span of the task being served: set by `start_request`, read by `record_run` in the service core
#: (same asyncio task, so the protocol layer does not have to pass it through the core's signatures).
_CURRENT: ContextVar[Span | None] = ContextVar("edge_request_span", default=None)


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A valid W3C `traceparent`: the caller's trace, its span (our parent) and its trace flags."""

    trace_id: str  # 32 lower-case hex digits, not all zero
    parent_id: str  # 16 lower-case hex digits, not all zero
    flags: int  # the trace-flags byte; bit 0 = sampled


def parse_traceparent(value: bytes) -> TraceParent | None:
    """The header's value, or None when it is malformed (a malformed one is ignored, never an error).

    W3C Trace Context, section 3.2: `version-traceid-parentid-flags` in lower-case hex; version `ff` and all-zero
    ids are invalid; version 00 is exactly 55 characters; a later version may append `-`-separated fields.
    """
    text = value.decode("latin-1")
    if len(text) < 55 or text[2] != "-" or text[35] != "-" or text[52] != "-":
        return None
    version, trace_id, parent_id, flags = text[:2], text[3:35], text[36:52], text[53:55]
    if not _HEX.issuperset(version + trace_id + parent_id + flags) or version == "ff":
        return None
    if (version == "00" and len(text) != 55) or (len(text) > 55 and text[55] != "-"):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, parent_id, int(flags, 16))


def format_traceparent(trace_id: str, span_id: str, flags: int) -> bytes:
    return f"00-{trace_id}-{span_id}-{flags & 0xFF:02x}".encode()


def new_span_id() -> str:
    """16 hex digits, never all zero. `random` as the OpenTelemetry SDK's id generator: ids need to be unique,
    not secret, and a getrandom() call per request is measurable."""
    return f"{random.getrandbits(64) or 1:016x}"


class RequestTrace:
    """One request's place in a trace: what goes in the access log and the `traceparent` echoed on the response."""

    __slots__ = ("_span", "_token", "echo", "span_id", "trace_id")

    def __init__(
        self,
        trace_id: str,
        span_id: str,
        echo: bytes | None,
        span: Span | None = None,
        token: Token[Span | None] | None = None,
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        #: The response's `traceparent` (our span as the parent), or None when the request brought none.
        self.echo = echo
        self._span = span
        self._token = token

    def end(self, method: str, route: str, status: int) -> None:
        """Name the span by its route template (known only now) and close it with the response status."""
        span = self._span
        if span is None:
            return
        if self._token is not None:
            _CURRENT.reset(self._token)
        from opentelemetry.trace import Status, StatusCode

        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
        span.end()


def propagate(parent: TraceParent | None) -> RequestTrace | None:
    """Without a tracer: continue an incoming trace with a span id of ours, so the caller's trace stays joined."""
    if parent is None:
        return None
    span_id = new_span_id()
    return RequestTrace(parent.trace_id, span_id, format_traceparent(parent.trace_id, span_id, parent.flags))


class Tracer:
    """OpenTelemetry spans for requests, their queue wait and their model run. Needs the `otel` extra."""

    def __init__(self, provider: TracerProvider, *, owned: bool = False) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._provider = provider
        self._owned = owned  # only a provider we built is shut down with us (a test's own is left to it)
        self._tracer = provider.get_tracer("runtime", __version__)

    def start_request(self, name: str, parent: TraceParent | None, attributes: Mapping[str, str | int]) -> RequestTrace:
        """Open the request's SERVER span (a child of `parent` when one came in) and make it the current one."""
        trace = self._trace
        context = None
        if parent is not None:
            remote = trace.SpanContext(
                int(parent.trace_id, 16),
                int(parent.parent_id, 16),
                is_remote=True,
                trace_flags=trace.TraceFlags(parent.flags),
            )
            context = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        span = self._tracer.start_span(name, context=context, kind=trace.SpanKind.SERVER, attributes=dict(attributes))
        ctx = span.get_span_context()
        trace_id, span_id = f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
        echo = format_traceparent(trace_id, span_id, int(ctx.trace_flags)) if parent is not None else None
        return RequestTrace(trace_id, span_id, echo, span, _CURRENT.set(span))

    def record_run(
        self,
        *,
        started: float,
        queue_ms: float,
        compute_ms: float,
        batch_size: int,
        run_id: int,
        model: Mapping[str, str],
    ) -> None:
        """The current request's queue wait and model run, as child spans of its request span.

        `started` is the `time.perf_counter()` at which its model run began; the batch's run shows once per
        request that shared it, with the batch size and run id that tie those spans together.
        """
        parent = _CURRENT.get()
        if parent is None or not parent.is_recording():
            return
        # perf_counter is the clock the batcher measures with; spans want epoch nanoseconds.
        offset = time.time_ns() - time.perf_counter_ns()
        run_start = int(started * 1e9) + offset
        context = self._trace.set_span_in_context(parent)
        batch = {"edge.batch.size": batch_size, "edge.batch.run_id": run_id}
        queue = self._tracer.start_span(
            "edge.queue",
            context=context,
            attributes={**batch, "edge.queue_ms": queue_ms},
            start_time=run_start - int(queue_ms * 1e6),
        )
        queue.end(end_time=run_start)
        attributes: dict[str, str | int | float] = {**batch, "edge.compute_ms": compute_ms}
        attributes.update({f"edge.model.{key}": value for key, value in model.items()})
        run = self._tracer.start_span("edge.model_run", context=context, attributes=attributes, start_time=run_start)
        run.end(end_time=run_start + int(compute_ms * 1e6))

    def shutdown(self) -> None:
        """Flush what is batched for export and stop the exporter (only a provider built by `from_settings`)."""
        if self._owned:
            self._provider.shutdown()


def tracing_enabled(settings: Settings, environ: Mapping[str, str]) -> bool:
    """EDGE_TRACING when set; otherwise on exactly when an OTLP endpoint is configured."""
    if settings.tracing is not None:
        return settings.tracing
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def tracer_from_settings(
    settings: Settings, *, provider: TracerProvider | None = None, environ: Mapping[str, str] | None = None
) -> Tracer | None:
    """The service's tracer: `provider` when given (tests), else an OTLP-exporting one when tracing is on, else None.

    The exporter reads the standard `OTEL_EXPORTER_OTLP_*` variables (endpoint, headers, protocol) and the SDK reads
    `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_TRACES_SAMPLER[_ARG]`.
    """
    if provider is not None:
        return Tracer(provider)
    env = os.environ if environ is None else environ
    if not tracing_enabled(settings, env):
        return None
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as e:
        raise ConfigurationError(
            "tracing is on (EDGE_TRACING=true or OTEL_EXPORTER_OTLP_ENDPOINT is set) but OpenTelemetry is not "
            f"installed: run `{INSTALL_HINT}`, or set EDGE_TRACING=false"
        ) from e
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "neuraltrade-edge"}))
    built = TracerProvider(resource=resource)
    built.add_span_processor(BatchSpanProcessor(_otlp_exporter(env)))
    log.info("tracing on", extra={"exporter": "otlp", "endpoint": env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")})
    return Tracer(built, owned=True)


def _otlp_exporter(environ: Mapping[str, str]) -> Any:
    """OTLP over HTTP/protobuf (the `otel` extra), or gRPC when OTEL_EXPORTER_OTLP_PROTOCOL=grpc and it is installed."""
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

            return GrpcExporter()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    except ImportError as e:
        install = "pip install opentelemetry-exporter-otlp-proto-grpc" if protocol == "grpc" else INSTALL_HINT
        raise ConfigurationError(
            f"the OTLP {protocol or 'http/protobuf'} exporter is not installed: run `{install}`"
        ) from e
