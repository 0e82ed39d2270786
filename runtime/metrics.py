"""Prometheus metrics, one registry per app (so tests and reloads never collide on a global registry).

With ``--workers N`` (``PROMETHEUS_MULTIPROC_DIR`` set by the server, see `runtime.workers`) prometheus-client
writes every value to the shared directory and `render` aggregates all workers; each gauge says how
(`multiprocess_mode`: live sums for what is in flight now, the live maximum for what describes the model).
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from runtime.batching import BATCH_INVARIANCE_ATOL
from runtime.session import ModelInfo
from runtime.statistics import InferenceStatistics, RequestTiming
from runtime.workers import multiprocess_dir

#: Request latency buckets in seconds: the service answers in about a millisecond, so resolve below it.
_LATENCY_BUCKETS = (
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_DIFF_BUCKETS = (1e-5, 1e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST
STREAM_OUTCOMES = ("ok", "warming", "invalid", "overloaded", "rate_limited", "error")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # What every Prometheus Python target exports on the default registry, on ours: process_* (resident and
        # virtual memory, CPU seconds, open and max fds, start time; read from /proc, Linux only), python_info and
        # python_gc_*. In prometheus_client's multiprocess mode these describe the process that answered the scrape.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.requests = Counter("edge_requests", "HTTP requests by route and status.", ["route", "status"], registry=r)
        self.latency = Histogram(
            "edge_request_duration_seconds",
            "Time from request start to response start.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "edge_requests_in_flight", "HTTP requests being handled.", registry=r, multiprocess_mode="livesum"
        )
        self.queue_time = Histogram(
            "edge_queue_seconds",
            "Time a window waited for its model run (oldest in the batch).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_time = Histogram(
            "edge_compute_seconds", "Model run time per batch.", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram("edge_batch_size", "Windows per model run.", buckets=_BATCH_BUCKETS, registry=r)
        self.queued = Gauge(
            "edge_queue_windows",
            "Windows admitted and waiting for the model.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.rejected = Counter(
            "edge_rejected",
            "Requests refused before inference, by reason (overloaded, deadline, stale).",
            ["reason"],
            registry=r,
        )
        self.model_info = Gauge(
            "edge_model_info",
            "The model being served (value 1).",
            ["name", "version", "precision", "provider", "intra_op_threads"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.reloads = Counter("edge_model_reloads", "Model reloads by outcome.", ["outcome"], registry=r)
        self.batch_invariance_bound = Gauge(
            "edge_batch_invariance_bound",
            "Largest |change| of a window's probabilities caused by the other windows of its model run: 0 when "
            "batch-invariant (the default on CPU), else the bound measured on held-out markets "
            "(BATCH_INVARIANCE_ATOL; EDGE_BATCH_INVARIANT=false or CUDA).",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.drift_windows = Counter(
            "edge_drift_windows", "Live windows re-run on FP32 by the quantization drift monitor.", registry=r
        )
        self.drift_agreements = Counter(
            "edge_drift_argmax_agreements", "Sampled windows where INT8 and FP32 chose the same class.", registry=r
        )
        self.drift_dropped = Counter(
            "edge_drift_dropped", "Sampled windows skipped because the drift monitor was busy.", registry=r
        )
        self.drift_abs_diff = Histogram(
            "edge_drift_max_abs_diff",
            "Per-window max |p_int8 - p_fp32| over the classes.",
            buckets=_DIFF_BUCKETS,
            registry=r,
        )
        self.drift_worst = Gauge(
            "edge_drift_worst_abs_diff",
            "Largest per-window |p_int8 - p_fp32| seen since start.",
            registry=r,
            multiprocess_mode="max",
        )
        # Shadow: a candidate version run on sampled live windows; labelled by both versions, so after a reload the
        # serving version's figures start a new series instead of mixing two models.
        pair = ["serving_version", "shadow_version"]
        self.shadow_windows = Counter(
            "edge_shadow_windows", "Live windows the shadow version also computed.", pair, registry=r
        )
        self.shadow_agreements = Counter(
            "edge_shadow_argmax_agreements",
            "Shadowed windows where both versions chose the same class.",
            pair,
            registry=r,
        )
        self.shadow_agreement = Gauge(
            "edge_shadow_agreement_ratio",
            "Share of shadowed windows where the shadow version chose the served version's class (argmax).",
            pair,
            registry=r,
        )
        self.shadow_abs_diff = Histogram(
            "edge_shadow_abs_diff",
            "Per-window max |p_serving - p_shadow| over the classes.",
            pair,
            buckets=_DIFF_BUCKETS,
            registry=r,
        )
        self.shadow_dropped = Counter(
            "edge_shadow_dropped",
            "Sampled windows skipped because the shadow was busy.",
            ["shadow_version"],
            registry=r,
        )
        self.shadow_active = Gauge(
            "edge_shadow_active", "1 while the shadow version runs (0 once stopped).", ["shadow_version"], registry=r
        )

        self.stream_connections = Gauge(
            "edge_stream_connections", "Open /stream WebSocket connections.", registry=r, multiprocess_mode="livesum"
        )
        self.stream_messages = Counter(
            "edge_stream_messages",
            "/stream messages by outcome: ok (a signal), warming (fewer than 60 candles stored), invalid (refused "
            "by a rule, nothing stored), overloaded, rate_limited, error.",
            ["outcome"],
            registry=r,
        )
        # Children made up front: every outcome is exported from the start, and the hot path skips labels().
        self.stream_outcome = {outcome: self.stream_messages.labels(outcome) for outcome in STREAM_OUTCOMES}

        #: Triton's statistics extension (GET /v2/models/stats, gRPC ModelStatistics) reads these.
        self.stats = InferenceStatistics()
        self.inference_requests = Counter(
            "edge_inference_requests",
            "Admitted inference requests of every protocol (HTTP, v2, /stream messages, gRPC) by outcome: success, "
            "fail (bad input, auth, deadline or inference error after admission).",
            ["outcome"],
            registry=r,
        )
        self._success = self.inference_requests.labels("success")
        self._fail = self.inference_requests.labels("fail")

    def set_model(self, info: ModelInfo) -> None:
        if multiprocess_dir() is not None:
            # clear() is not implemented in multiprocess mode (values live in this worker's shared file): the
            # previous model's series is zeroed instead, so `livemax` shows 1 only for what some worker serves.
            for sample in next(iter(self.model_info.collect())).samples:
                self.model_info.labels(**sample.labels).set(0)
        else:
            self.model_info.clear()
        self.model_info.labels(info.name, info.version, info.precision, info.provider, str(info.intra_op_threads)).set(
            1
        )
        self.batch_invariance_bound.set(0.0 if info.batch_invariant else BATCH_INVARIANCE_ATOL)

    def observe_batch(self, size: int, compute_ms: float, queue_ms: float) -> None:
        """Called from the inference thread after every model run."""
        self.batch_size.observe(size)
        self.compute_time.observe(compute_ms / 1000)
        self.queue_time.observe(queue_ms / 1000)
        self.stats.observe_run(size, compute_ms)

    def observe_request(self, timing: RequestTiming, ok: bool, now_ns: int) -> None:
        """An admitted request finished (on the loop)."""
        (self._success if ok else self._fail).inc()
        self.stats.observe_request(timing, ok, now_ns)

    def render(self) -> bytes:
        """This process's registry, or with several workers every worker's values added up."""
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, str(path))  # type: ignore[no-untyped-call]
        return generate_latest(registry)
