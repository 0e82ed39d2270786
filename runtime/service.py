"""The service core: everything a request needs, whatever protocol carried it. Knows no HTTP.

`Service` holds the model, the batcher, the drift monitor and the counters; protocol layers (`runtime.http`, and
later gRPC and streams) call `authorize`, `admission`, `ready_to_serve` and `infer` and encode what comes back in
their own way. A request crosses protocol -> service -> batching -> session once and comes back the same way.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from runtime.batching import Batcher, BatchResult
from runtime.constants import WINDOW_LENGTH
from runtime.decoding import Window
from runtime.drift import DriftMonitor
from runtime.errors import (
    DeadlineExceeded,
    NotReady,
    Overloaded,
    RateLimited,
    ReloadFailed,
    ReloadInProgress,
    StaleWindow,
    Unauthorized,
    detail,
)
from runtime.metrics import Metrics
from runtime.predictions import responses
from runtime.ratelimit import RateLimiter, retry_after
from runtime.risk import window_features
from runtime.session import Model, ModelInfo, instances_per_worker, threads_per_worker
from runtime.settings import Settings
from runtime.types import Float32Array
from runtime.workers import WorkerGroup, multiprocess_dir

log = logging.getLogger("runtime.service")

ModelLoader = Callable[[Settings, "str | None"], Model]


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
    #: The other worker processes of this server (``--workers N``), None when this process serves alone.
    group: WorkerGroup | None = None

    @classmethod
    def from_settings(cls, settings: Settings, loader: ModelLoader = default_model_loader) -> Service:
        limiter = RateLimiter(settings.rate_limit, settings.rate_limit_bucket()) if settings.rate_limit else None
        shared = multiprocess_dir()
        return cls(
            group=WorkerGroup(shared, settings.workers) if shared is not None else None,
            settings=settings,
            api_keys=settings.all_api_keys(),
            loader=loader,
            version=settings.model_version,
            rate_limiter=limiter,
        )

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Load, verify and warm the model, start the batcher (inside the running loop); then ready."""
        self.draining = False  # a lifespan may start again on the same app (tests, embedding servers)
        model = self.loader(self.settings, self.version)
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
        if self.group is not None:
            self.group.exit()

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

    async def reload(self, version: str | None = None) -> tuple[ModelInfo, ModelInfo]:
        """Verify and warm the new model off the loop, then swap it in; on failure the old one keeps serving.

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
                new = await asyncio.to_thread(self.loader, self.settings, target)
            except Exception as e:
                self.metrics.reloads.labels("failed").inc()
                log.error("reload failed; still serving %s", old.version, extra={"reason": str(e)})
                raise ReloadFailed(f"reload failed, still serving version {old.version}: {e}") from e
            self.install(new)
            self.version = target
            self.metrics.reloads.labels("ok").inc()
            log.info("model reloaded", extra={"previous_version": old.version, "model_version": new.info.version})
            # The previous reload's reference may still be loading: let it finish (and install) first, so one
            # loader runs at a time and each monitor replaces, and stops, the one before it.
            await asyncio.to_thread(self.wait_for_drift_loader)
            self.start_drift_monitor()
            return old, new.info

    def start_drift_monitor(self) -> None:
        """Load the FP32 reference in the background (not on the start-up path) and sample live traffic.

        One drift monitor ever: the new one replaces the current one, which is stopped (its thread joined, its
        FP32 session released). A loader still running from an earlier call is waited for by the new one, so
        two never load at once and they install in order.
        """
        rate = self.settings.drift_sample_rate
        if rate <= 0 or self.model is None or self.model.info.precision != "int8":
            return
        info = self.model.info
        version = self.version
        earlier = self.drift_loader

        def load() -> None:
            if earlier is not None:
                earlier.join()
            try:
                reference = Model.load(
                    self.settings.model_path(version),
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
            previous, self.drift = self.drift, monitor
            if previous is not None:
                previous.stop()

        loader = threading.Thread(target=load, name="edge-drift-load", daemon=True)
        self.drift_loader = loader
        loader.start()

    def wait_for_drift_loader(self, timeout: float = 30.0) -> None:
        """Block until a drift reference still loading has been installed (or has failed)."""
        if self.drift_loader is not None:
            self.drift_loader.join(timeout)

    def stop_drift_monitor(self, timeout: float = 10.0) -> None:
        """Wait for a reference still loading (onnxruntime aborts the process if torn down mid-load), then stop."""
        self.wait_for_drift_loader(timeout)
        if self.drift is not None:
            self.drift.stop()
            self.drift = None

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

    def authorize(self, supplied: str | None) -> None:
        """401 unless `supplied` is one of the keys (or none are set); then 429 if that key has used its rate."""
        matched = -1  # without keys, every caller shares one bucket
        if self.api_keys:
            if supplied is None:
                raise Unauthorized("missing X-API-Key header")
            candidate = supplied.encode()
            for i, key in enumerate(self.api_keys):  # no early exit: the time taken does not depend on the match
                if hmac.compare_digest(candidate, key):
                    matched = i
            if matched < 0:
                raise Unauthorized("invalid API key")
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
        try:
            yield
        finally:
            self.admitted -= 1

    def check_fresh(self, reqs: list[Window]) -> None:
        max_age = self.settings.max_window_age_s
        if max_age <= 0:
            return
        now = datetime.now(UTC)
        for i, req in enumerate(reqs):
            age = (now - req.last_timestamp).total_seconds()
            if age > max_age:
                self.metrics.rejected.labels("stale").inc()
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

    def _submit(self, windows: Float32Array, deadline: float | None) -> BatchResult | asyncio.Future[BatchResult]:
        batcher = self.serving()
        if self.backlog is not None and self.backlog() <= 1:
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
            return pending
        try:
            return await pending
        except DeadlineExceeded:
            self.metrics.rejected.labels("deadline").inc()
            raise

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
        """Offer a computed batch to the drift monitor; return the model that computed it."""
        info: ModelInfo = result.tag
        if self.drift is not None and info.precision == "int8":
            self.drift.offer(windows, result.probabilities)
        return info
