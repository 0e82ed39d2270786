"""The service core: everything a request needs, whatever protocol carried it. Knows no HTTP.

`Service` holds the model, the batcher, the drift monitor and the counters; protocol layers (`runtime.http`, and
later gRPC and streams) call `authorize`, `admission`, `ready_to_serve` and `infer` and encode what comes back in
their own way. A request crosses protocol -> service -> batching -> session once and comes back the same way.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.batching import Batcher, BatchResult
from runtime.decoding import Window, check_fresh
from runtime.drift import DriftMonitor, DriftSlot
from runtime.errors import (
    DeadlineExceeded,
    EdgeError,
    NotReady,
    Overloaded,
    RateLimited,
    ReloadFailed,
    ReloadInProgress,
    StaleWindow,
)
from runtime.keys import match_key
from runtime.metrics import Metrics
from runtime.predictions import responses
from runtime.ratelimit import RateLimiter, retry_after
from runtime.repository import ROOT, Repository
from runtime.risk import window_features
from runtime.session import Model, ModelInfo, instances_per_worker, threads_per_worker
from runtime.settings import Settings
from runtime.shadow import ShadowMonitor, start_shadow
from runtime.statistics import RequestTiming
from runtime.tracing import Tracer
from runtime.types import Float32Array
from runtime.workers import WorkerGroup, multiprocess_dir

log = logging.getLogger("runtime.service")

ModelLoader = Callable[[Settings, "str | None"], Model]

#: The admitted request the current task is serving: admission starts its clock, the model calls stamp it, so the
#: statistics are recorded here once for every protocol (each request is one task, or one message in turn).
_TIMING: contextvars.ContextVar[RequestTiming | None] = contextvars.ContextVar("edge_request_timing", default=None)


def default_model_loader(settings: Settings, version: str | None = None) -> Model:
    return Model.load(
        settings.model_path(version),
        precision=settings.precision,
        provider=settings.provider,
        intra_op_threads=threads_per_worker(settings.intra_op_threads, settings.workers),
        batch_invariant=settings.batch_invariant,
        instances=instances_per_worker(settings.instances, settings.workers),
        cuda_instances=settings.instances or 1,
        allow_spinning=settings.allow_spinning,
    )


@dataclass
class Service:
    """Built with the app, started in its lifespan (`start`/`stop`), reached by protocol layers."""

    settings: Settings
    api_keys: list[bytes]
    loader: ModelLoader = default_model_loader
    metrics: Metrics = field(default_factory=Metrics)
    model: Model | None = None
    batcher: Batcher | None = None
    drift_slot: DriftSlot = field(default_factory=DriftSlot)
    shadow: ShadowMonitor | None = None
    #: The served version's directory in the repository (None: the root, or EDGE_MODEL_VERSION at start).
    version: str | None = None
    #: Requests the HTTP server holds (parsed or not); set by the server. With one, a request may run inline.
    backlog: Callable[[], int] | None = None
    #: Requests past admission and not yet answered (see `admission`).
    admitted: int = 0
    ready: bool = False
    draining: bool = False
    rate_limiter: RateLimiter | None = None
    #: OpenTelemetry spans, or None (tracing off: one `is None` check per request).
    tracer: Tracer | None = None
    started: float = field(default_factory=time.perf_counter)
    background: set[asyncio.Task[None]] = field(default_factory=set)
    _reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: The other worker processes of this server (``--workers N``), None when this process serves alone.
    group: WorkerGroup | None = None
    repository: Repository = field(init=False)

    def __post_init__(self) -> None:
        self.repository = Repository(self.settings.model_dir)

    @classmethod
    def from_settings(
        cls, settings: Settings, loader: ModelLoader = default_model_loader, tracer: Tracer | None = None
    ) -> Service:
        limiter = RateLimiter(settings.rate_limit, settings.rate_limit_bucket()) if settings.rate_limit else None
        shared = multiprocess_dir()
        return cls(
            group=WorkerGroup(shared, settings.workers) if shared is not None else None,
            settings=settings,
            api_keys=settings.all_api_keys(),
            loader=loader,
            version=settings.model_version,
            rate_limiter=limiter,
            tracer=tracer,
        )

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Load, verify and warm the model, start the batcher (inside the running loop); then ready."""
        self.draining = False  # a lifespan may start again on the same app (tests, embedding servers)
        # The shadow first: an UNAVAILABLE candidate refuses start-up before anything else is built.
        self.shadow = start_shadow(self.settings, self.repository, self.metrics)
        try:
            model = self.loader(self.settings, self.version)
        except Exception:
            self.stop_shadow()
            raise
        batcher = Batcher(
            model.runners(),
            tag=model.info,
            max_batch_size=self.settings.batch_size_for(model.info.provider),
            max_batch_delay_us=self.settings.max_batch_delay_us,
            max_queue=self.settings.max_queue,
            on_batch=self.metrics.observe_batch,
        )
        batcher.start()
        self.batcher = batcher
        self.install(model)
        self.ready = True
        if self.group is not None:
            self.group.mark_ready()
        log.info(
            "ready",
            extra={
                "startup_s": round(time.perf_counter() - self.started, 3),
                "model_version": model.info.version,
                "precision": model.info.precision,
                "provider": model.info.provider,
                "threads": model.info.intra_op_threads,
                "instances": model.info.instances,
            },
        )
        self.start_drift_monitor()

    async def stop(self) -> None:
        """Finish what was admitted (up to `graceful_timeout`), then stop the batcher and the drift monitor."""
        self.begin_draining()
        if self.batcher is not None:
            await self.batcher.stop(self.settings.graceful_timeout)
        await asyncio.to_thread(self.stop_drift_monitor)
        await asyncio.to_thread(self.stop_shadow)
        if self.tracer is not None:
            await asyncio.to_thread(self.tracer.shutdown)  # flushes spans still batched for export

        if self.group is not None:
            self.group.exit()

    def stop_shadow(self) -> None:
        if self.shadow is not None:
            self.shadow.stop()
            self.shadow = None

    def begin_draining(self) -> None:
        """Turn readiness false so load balancers move away. Requests already received are still served: the
        server stops accepting connections itself, and the batcher stops admitting only at `stop`."""
        self.draining = True
        self.ready = False
        if self.group is not None:
            self.group.mark_not_ready()

    def install(self, model: Model) -> None:
        """Make `model` the one new batches run on; a batch already taken finishes on the old one."""
        if self.batcher is not None:
            self.batcher.swap_run(model.runners(), model.info)
        self.model = model
        self.metrics.set_model(model.info)

    async def reload(self, version: str | None = None, *, repository: bool = False) -> tuple[ModelInfo, ModelInfo]:
        """Verify and warm the new model off the loop, then swap it in; on failure the old one keeps serving.

        `version` is a directory of model_dir (None: the served one again) or, with `repository`, a version of the
        repository index (None: the newest READY one), refused with its reason when UNAVAILABLE.
        One reload at a time: a reload asked for while one runs gets `ReloadInProgress` (409) at once instead of
        queueing (a burst of 50 is one reload, not 50 models and drift references loaded in turn).
        """
        if self._reload_lock.locked():
            raise ReloadInProgress("a reload is already in progress; retry when it has finished")
        async with self._reload_lock:
            if self.model is None or self.draining:
                raise NotReady("no model is being served")
            old = self.model.info
            target = version or self.version
            try:
                if repository:
                    target = (await asyncio.to_thread(self.repository.resolve, version)).directory
                new = await asyncio.to_thread(self.loader, self.settings, target)
            except ReloadFailed as e:  # the repository's refusal: the version is UNAVAILABLE
                self.metrics.reloads.labels("failed").inc()
                raise ReloadFailed(f"{e.message}; still serving version {old.version}") from e
            except Exception as e:
                if isinstance(e, EdgeError) and e.status_code < 500:
                    raise  # not a failed load: a version the repository does not hold (404)
                self.metrics.reloads.labels("failed").inc()
                log.error("reload failed; still serving %s", old.version, extra={"reason": str(e)})
                raise ReloadFailed(f"reload failed, still serving version {old.version}: {e}") from e
            self.install(new)
            self.version = target
            self.metrics.reloads.labels("ok").inc()
            log.info("model reloaded", extra={"previous_version": old.version, "model_version": new.info.version})
            if self.shadow is not None and (target or ROOT) == self.shadow.directory:
                log.info("shadow version %s promoted: shadowing stopped", new.info.version)
                await asyncio.to_thread(self.stop_shadow)
            # The previous reload's reference may still be loading: let it finish (and install) first, so one
            # loader runs at a time and each monitor replaces, and stops, the one before it.
            await asyncio.to_thread(self.wait_for_drift_loader)
            self.start_drift_monitor()
            return old, new.info

    def start_drift_monitor(self) -> None:
        """Replace the drift monitor with one for the served model (`DriftSlot.replace`); off unless INT8."""
        rate = self.settings.drift_sample_rate
        if rate > 0 and self.model is not None and self.model.info.precision == "int8":
            self.drift_slot.replace(self.settings.model_path(self.version), self.model.info, self.metrics, rate)

    def wait_for_drift_loader(self, timeout: float = 30.0) -> None:
        self.drift_slot.wait(timeout)

    def stop_drift_monitor(self, timeout: float = 10.0) -> None:
        self.drift_slot.stop(timeout)

    @property
    def drift(self) -> DriftMonitor | None:
        return self.drift_slot.monitor

    def workers_waiting(self) -> str | None:
        """With several workers, why the server as a whole is not ready yet (None: every worker is)."""
        if self.group is None:
            return None
        ready = self.group.ready_workers()
        return None if ready >= self.group.workers else f"{ready} of {self.group.workers} workers ready"

    # -- per request -----------------------------------------------------------------------------------------
    @property
    def saturated(self) -> bool:
        """Every admission slot is held: readiness turns false so a load balancer sends elsewhere until one frees."""
        return self.admitted >= self.settings.max_pending_requests

    def serving(self) -> Batcher:
        """The batcher, or 503 while no model is loaded (requests already received are served while draining)."""
        if self.batcher is None or self.model is None:
            raise NotReady("model is not loaded yet")
        return self.batcher

    def authorize(self, supplied: str | None, carrier: str = "X-API-Key header") -> None:
        """401 unless `supplied` is one of the keys (or none are set); then 429 if that key has used its rate.
        `carrier` names where the protocol carries the key, for the message."""
        matched = match_key(self.api_keys, supplied, carrier)  # -1 without keys: every caller shares one bucket
        limiter = self.rate_limiter
        if limiter is not None:
            wait = limiter.acquire(matched)
            if wait > 0:
                self.metrics.rejected.labels("rate_limited").inc()
                raise RateLimited(
                    f"rate limit of {limiter.rate:g} requests/s for this API key reached; retry in {wait:.3f} s",
                    headers={"Retry-After": retry_after(wait)},
                )

    @contextmanager
    def admission(self) -> Iterator[None]:
        """Admit a request or answer 503 at once, before its body is read or parsed (work overload cannot afford).

        Two bounds: windows queued for the model, and requests admitted and not yet answered. The second bounds
        the latency of what is accepted: requests also wait in the event loop (to be parsed) before the queue.
        """
        batcher = self.serving()
        if batcher.queued_windows >= batcher.max_queue:
            self.metrics.rejected.labels("overloaded").inc()
            raise Overloaded(f"admission queue full ({batcher.max_queue} windows queued); retry shortly")
        limit = self.settings.max_pending_requests
        if self.admitted >= limit:
            self.metrics.rejected.labels("overloaded").inc()
            raise Overloaded(f"{limit} requests already admitted; retry shortly")
        self.admitted += 1
        timing = RequestTiming(time.perf_counter_ns())
        token = _TIMING.set(timing)
        ok = False
        try:
            yield
            ok = True
        finally:
            self.admitted -= 1
            _TIMING.reset(token)
            self.metrics.observe_request(timing, ok, time.perf_counter_ns())

    def check_fresh(self, reqs: list[Window]) -> None:
        try:
            check_fresh(reqs, self.settings.max_window_age_s)
        except StaleWindow:
            self.metrics.rejected.labels("stale").inc()
            raise

    def _submit(self, windows: Float32Array, deadline: float | None) -> BatchResult | asyncio.Future[BatchResult]:
        batcher = self.serving()
        timing = _TIMING.get()
        if timing is not None:
            timing.queued = time.perf_counter_ns()
        # `backlog` counts the HTTP server's requests, `admitted` those of every protocol (gRPC included).
        if self.backlog is not None and self.backlog() <= 1 and self.admitted <= 1:
            # Alone on the server: skip both thread hand-offs (see Batcher.run_inline_if_idle).
            result = batcher.run_inline_if_idle(windows)
            if result is not None:
                return result
        try:
            return batcher.enqueue(windows, deadline=deadline)
        except Overloaded:
            self.metrics.rejected.labels("overloaded").inc()
            raise

    async def _wait(self, pending: BatchResult | asyncio.Future[BatchResult]) -> BatchResult:
        if isinstance(pending, BatchResult):
            result = pending
        else:
            try:
                result = await pending
            except DeadlineExceeded:
                self.metrics.rejected.labels("deadline").inc()
                raise
        timing = _TIMING.get()
        if timing is not None:
            timing.answered = time.perf_counter_ns()
            timing.queue_ns = int(result.queue_ms * 1e6)
            timing.infer_ns = int(result.compute_ms * 1e6)
        return result

    async def run_windows(self, windows: Float32Array, *, deadline: float | None) -> tuple[BatchResult, ModelInfo]:
        """Windows (n, 60, 5) through the model (inline when alone on the server, else batched); the result and
        the model that computed it (after a hot reload it may be newer than the one the request was checked on)."""
        result = await self._wait(self._submit(windows, deadline))
        return result, self._observe(windows, result)

    async def infer(
        self, reqs: list[Window], *, deadline: float | None, request_id: str
    ) -> tuple[list[dict[str, Any]], float]:
        """Validated windows -> the seed's responses and the model run's compute time (ms)."""
        self.check_fresh(reqs)
        windows = reqs[0].window[None] if len(reqs) == 1 else np.stack([r.window for r in reqs])  # (n, 60, 5)
        pending = self._submit(windows, deadline)
        features = window_features(windows)  # candle-only risk features, while the model runs
        result = await self._wait(pending)
        info = self._observe(windows, result)
        answers = responses(
            reqs,
            result.probabilities,
            features,
            info,
            result=result,
            compute_ms=result.compute_ms,
            request_id=request_id,
        )
        return answers, result.compute_ms

    def _observe(self, windows: Float32Array, result: BatchResult) -> ModelInfo:
        """Offer a computed batch to the drift monitor, trace its queue wait and run; return the model that ran it."""
        info: ModelInfo = result.tag
        if self.tracer is not None:
            self.tracer.record_run(
                started=result.started,
                queue_ms=result.queue_ms,
                compute_ms=result.compute_ms,
                batch_size=result.batch_size,
                run_id=result.run_id,
                model={"version": info.version, "precision": info.precision, "provider": info.provider},
            )
        if self.drift is not None and info.precision == "int8":
            self.drift.offer(windows, result.probabilities)
        if self.shadow is not None:
            self.shadow.offer(windows, result.probabilities, info)
        return info
