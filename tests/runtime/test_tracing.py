"""Tracing: W3C traceparent continued and echoed; OpenTelemetry spans for request, queue wait and model run."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import market_windows, window_to_payload

from runtime.errors import ConfigurationError
from runtime.settings import Settings
from runtime.tracing import TraceParent, parse_traceparent, tracer_from_settings, tracing_enabled

JSON = {"content-type": "application/json"}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"

otel_sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="the `otel` extra is not installed")
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402


def _body(seed: int = 0) -> bytes:
    return json.dumps(window_to_payload(market_windows(1, seed)[0])).encode()


@pytest.fixture
def traced(committed_model_dir: Path) -> Iterator[Callable[..., tuple[Any, InMemorySpanExporter]]]:
    """Factory: a TestClient whose app exports its spans to an in-memory exporter."""
    from starlette.testclient import TestClient

    from runtime.http.app import create_app

    clients: list[TestClient] = []

    def make(**overrides: Any) -> tuple[TestClient, InMemorySpanExporter]:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        settings = Settings(model_dir=committed_model_dir, intra_op_threads=1, drift_sample_rate=0, **overrides)
        client = TestClient(create_app(settings, tracer_provider=provider), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client, exporter

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def _by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


# -- W3C trace context, no tracer ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(TRACEPARENT, TraceParent(TRACE_ID, PARENT_ID, 1), id="valid"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-00", TraceParent(TRACE_ID, PARENT_ID, 0), id="not-sampled"),
        pytest.param(f"01-{TRACE_ID}-{PARENT_ID}-01-extra", TraceParent(TRACE_ID, PARENT_ID, 1), id="future-version"),
        pytest.param(f"00-{TRACE_ID}-{PARENT_ID}-01-extra", None, id="v00-too-long"),
        pytest.param(f"ff-{TRACE_ID}-{PARENT_ID}-01", None, id="version-ff"),
        pytest.param(f"00-{'0' * 32}-{PARENT_ID}-01", None, id="zero-trace-id"),
        pytest.param(f"00-{TRACE_ID}-{'0' * 16}-01", None, id="zero-parent-id"),
        pytest.param(TRACEPARENT.upper(), None, id="upper-case"),
        pytest.param(TRACEPARENT[:-1], None, id="short"),
        pytest.param(TRACEPARENT.replace("-", "_"), None, id="separators"),
        pytest.param(f"00-{TRACE_ID[:-1]}g-{PARENT_ID}-01", None, id="not-hex"),
        pytest.param("", None, id="empty"),
    ],
)
def test_parse_traceparent(value: str, expected: TraceParent | None) -> None:
    assert parse_traceparent(value.encode()) == expected


def test_traceparent_is_continued_without_a_tracer(make_client: Any) -> None:
    client = make_client(drift_sample_rate=0)
    response = client.post("/predict", content=_body(), headers={**JSON, "traceparent": TRACEPARENT})
    assert response.status_code == 200
    version, trace_id, span_id, flags = response.headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert len(span_id) == 16 and span_id not in (PARENT_ID, "0" * 16)
    again = client.post("/predict", content=_body(), headers={**JSON, "traceparent": TRACEPARENT})
    assert again.headers["traceparent"].split("-")[2] != span_id  # a new span per request
    assert "traceparent" not in client.post("/predict", content=_body(), headers=JSON).headers


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([("traceparent", "garbage")], id="garbage"),
        pytest.param([("traceparent", f"00-{'0' * 32}-{PARENT_ID}-01")], id="zero-trace"),
        pytest.param([("traceparent", ("\u00ff" * 55).encode("latin-1"))], id="latin-1"),
        pytest.param([("traceparent", TRACEPARENT), ("traceparent", TRACEPARENT)], id="twice"),
    ],
)
def test_a_malformed_traceparent_is_ignored(make_client: Any, headers: list[tuple[str, str | bytes]]) -> None:
    client = make_client(drift_sample_rate=0)
    response = client.post("/predict", content=_body(), headers=[("content-type", "application/json"), *headers])
    assert response.status_code == 200, response.text
    assert "traceparent" not in response.headers


def test_access_log_carries_the_trace_id(make_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    client = make_client(access_log=True, drift_sample_rate=0)
    with caplog.at_level("INFO", logger="runtime.access"):
        response = client.post("/predict", content=_body(), headers={**JSON, "traceparent": TRACEPARENT})
        client.get("/health")
    records = [r for r in caplog.records if r.name == "runtime.access"]
    traced, plain = records[0].__dict__, records[1].__dict__
    assert traced["trace_id"] == TRACE_ID
    assert traced["span_id"] == response.headers["traceparent"].split("-")[2]
    assert "trace_id" not in plain


# -- OpenTelemetry spans ---------------------------------------------------------------------------------------------
def test_predict_spans_join_the_callers_trace(traced: Callable[..., Any]) -> None:
    client, exporter = traced()
    response = client.post("/predict", content=_body(), headers={**JSON, "traceparent": TRACEPARENT})
    assert response.status_code == 200
    spans = exporter.get_finished_spans()
    (request,) = _by_name(spans, "POST /predict")
    (queue,) = _by_name(spans, "edge.queue")
    (run,) = _by_name(spans, "edge.model_run")
    ctx = request.get_span_context()
    assert request.kind == SpanKind.SERVER
    assert f"{ctx.trace_id:032x}" == TRACE_ID
    assert request.parent is not None and f"{request.parent.span_id:016x}" == PARENT_ID and request.parent.is_remote
    # The echoed traceparent names our request span as the parent of whatever the caller does next.
    assert response.headers["traceparent"] == f"00-{TRACE_ID}-{ctx.span_id:016x}-01"
    for child in (queue, run):
        assert child.parent is not None and child.parent.span_id == ctx.span_id
        assert child.get_span_context().trace_id == ctx.trace_id
    attrs = request.attributes or {}
    assert attrs["http.route"] == "/predict" and attrs["http.response.status_code"] == 200
    assert attrs["edge.request_id"] == response.headers["x-request-id"]
    run_attrs = run.attributes or {}
    assert run_attrs["edge.batch.size"] == 1
    assert run_attrs["edge.model.precision"] == "int8" and run_attrs["edge.model.version"]
    assert float(run_attrs["edge.compute_ms"]) > 0  # type: ignore[arg-type]
    # Placed in time: queued, then run, inside the request.
    assert request.start_time is not None and request.end_time is not None
    assert queue.end_time is not None and run.start_time is not None and run.end_time is not None
    assert queue.end_time <= run.start_time < run.end_time
    assert request.start_time <= run.start_time and run.end_time <= request.end_time
    assert (run.end_time - run.start_time) / 1e6 == pytest.approx(float(run_attrs["edge.compute_ms"]), abs=1e-3)  # type: ignore[arg-type]


def test_a_new_trace_without_traceparent_and_no_echo(traced: Callable[..., Any]) -> None:
    client, exporter = traced()
    response = client.post("/predict", content=_body(), headers=JSON)
    assert response.status_code == 200 and "traceparent" not in response.headers
    (request,) = _by_name(exporter.get_finished_spans(), "POST /predict")
    assert request.parent is None


def test_an_unsampled_caller_records_nothing_but_is_still_continued(traced: Callable[..., Any]) -> None:
    client, exporter = traced()
    unsampled = f"00-{TRACE_ID}-{PARENT_ID}-00"
    response = client.post("/predict", content=_body(), headers={**JSON, "traceparent": unsampled})
    assert response.status_code == 200
    assert (
        response.headers["traceparent"].startswith(f"00-{TRACE_ID}-") and response.headers["traceparent"][-2:] == "00"
    )
    assert exporter.get_finished_spans() == ()


def test_concurrent_requests_share_a_batch_run(traced: Callable[..., Any]) -> None:
    # A batching window long enough that requests sent together share one model run.
    client, exporter = traced(max_batch_delay_us=100_000, max_batch_size=4)
    statuses: list[int] = []

    def send(seed: int) -> None:
        statuses.append(client.post("/predict", content=_body(seed), headers=JSON).status_code)

    threads = [threading.Thread(target=send, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert statuses == [200] * 4
    spans = exporter.get_finished_spans()
    runs = _by_name(spans, "edge.model_run")
    requests = {s.get_span_context().span_id for s in _by_name(spans, "POST /predict")}
    assert len(runs) == 4 and {r.parent.span_id for r in runs if r.parent} == requests  # one per request
    shared = [r for r in runs if (r.attributes or {})["edge.batch.size"] > 1]  # type: ignore[operator]
    assert shared, [r.attributes for r in runs]
    run_ids = {(r.attributes or {})["edge.batch.run_id"] for r in shared}
    assert len(run_ids) < len(shared)  # requests of one batch carry the same run id


@pytest.mark.parametrize(
    ("path", "route", "make_body"),
    [
        pytest.param(
            "/predict/batch",
            "/predict/batch",
            lambda: json.dumps({"requests": [window_to_payload(w) for w in market_windows(3)]}).encode(),
            id="batch",
        ),
        pytest.param("/predict", "/predict", lambda: b"{", id="bad-json"),
    ],
)
def test_other_routes_are_traced(traced: Callable[..., Any], path: str, route: str, make_body: Any) -> None:
    client, exporter = traced()
    response = client.post(path, content=make_body(), headers=JSON)
    (request,) = _by_name(exporter.get_finished_spans(), f"POST {route}")
    assert (request.attributes or {})["http.response.status_code"] == response.status_code
    runs = _by_name(exporter.get_finished_spans(), "edge.model_run")
    assert len(runs) == (1 if response.status_code == 200 else 0)
    if runs:
        assert (runs[0].attributes or {})["edge.batch.size"] == 3


def test_a_server_error_marks_the_span(traced: Callable[..., Any]) -> None:
    client, exporter = traced(api_keys="k" * 16)
    assert client.post("/predict", content=_body(), headers=JSON).status_code == 401
    (request,) = _by_name(exporter.get_finished_spans(), "POST /predict")
    assert request.status.status_code == StatusCode.UNSET  # a 4xx is the caller's error, not ours
    unknown = client.get("/nowhere")
    assert unknown.status_code == 404
    assert _by_name(exporter.get_finished_spans(), "GET unmatched")


# -- configuration and export --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tracing", "environ", "expected"),
    [
        pytest.param(None, {}, False, id="default-off"),
        pytest.param(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True, id="endpoint"),
        pytest.param(None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True, id="traces"),
        pytest.param(False, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False, id="forced-off"),
        pytest.param(True, {}, True, id="forced-on"),
    ],
)
def test_tracing_switch(tracing: bool | None, environ: dict[str, str], expected: bool) -> None:
    assert tracing_enabled(Settings(tracing=tracing), environ) is expected


def test_tracing_without_the_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if the extra were not installed
    with pytest.raises(ConfigurationError, match=r"pip install 'neuraltrade-edge\[otel\]'"):
        tracer_from_settings(Settings(tracing=True), environ={})
    assert tracer_from_settings(Settings(), environ={}) is None  # off: nothing imported, nothing needed


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        _Collector.received.append((self.path, body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_spans_reach_an_otlp_http_collector(committed_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: OTEL_EXPORTER_OTLP_ENDPOINT alone turns tracing on; spans arrive as OTLP/HTTP protobuf."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from starlette.testclient import TestClient

    from runtime.http.app import create_app

    collector = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    _Collector.received = []
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.server_address[1]}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "edge-under-test")
    try:
        app = create_app(Settings(model_dir=committed_model_dir, intra_op_threads=1, drift_sample_rate=0))
        with TestClient(app) as client:
            response = client.post("/predict", content=_body(), headers={**JSON, "traceparent": TRACEPARENT})
            assert response.status_code == 200
        # Leaving the client stopped the service, which flushed the batch exporter.
    finally:
        collector.shutdown()
    assert _Collector.received and all(path == "/v1/traces" for path, _ in _Collector.received)
    names, services, trace_ids = set(), set(), set()
    for _, body in _Collector.received:
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            services |= {a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"}
            for scope_spans in resource_spans.scope_spans:
                names |= {s.name for s in scope_spans.spans}
                trace_ids |= {s.trace_id.hex() for s in scope_spans.spans}
    assert {"POST /predict", "edge.queue", "edge.model_run"} <= names
    assert services == {"edge-under-test"} and trace_ids == {TRACE_ID}
