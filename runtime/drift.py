"""Quantization drift monitor: re-run a sample of live windows on the FP32 model, off the hot path.

Offline parity is checked on historical data; markets move on. This reports, on the traffic the service
actually sees, how often INT8 and FP32 choose the same signal and how far their probabilities drift apart.
"""

from __future__ import annotations

import logging
import queue
import random
import threading

import numpy as np

from runtime.metrics import Metrics
from runtime.session import Model
from runtime.types import Float32Array

log = logging.getLogger(__name__)

_STOP = None


class DriftMonitor:
    """A background thread with a small bounded queue: when it is busy, samples are dropped, never waited for."""

    def __init__(
        self, reference: Model, metrics: Metrics, sample_rate: float, max_pending: int = 8, seed: int | None = None
    ) -> None:
        self.reference = reference
        self.metrics = metrics
        self.sample_rate = sample_rate
        self._rng = random.Random(seed)
        self._queue: queue.Queue[tuple[Float32Array, Float32Array] | None] = queue.Queue(max_pending)
        self._thread = threading.Thread(target=self._work, name="edge-drift", daemon=True)
        self._worst = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        try:
            self._queue.put(_STOP, timeout=1)
        except queue.Full:
            pass
        self._thread.join(5)

    def offer(self, windows: Float32Array, probabilities: Float32Array) -> None:
        """Maybe sample these windows (n, 60, 5) with their INT8 probabilities (n, 3). Never blocks."""
        if self._rng.random() >= self.sample_rate:
            return
        try:
            self._queue.put_nowait((windows, probabilities))
        except queue.Full:
            self.metrics.drift_dropped.inc(len(windows))

    def _work(self) -> None:
        # No lower OS priority for this thread: a descheduled thread that holds the GIL would stall the event
        # loop (priority inversion, seen as p99 spikes). It stays cheap by sampling and by dropping when busy.
        while (item := self._queue.get()) is not None:
            windows, int8 = item
            try:
                fp32 = self.reference.run(windows)
            except Exception:
                log.exception("drift monitor: FP32 reference run failed")
                continue
            diff = np.abs(fp32 - int8).max(axis=1)  # (n,)
            agree = int((fp32.argmax(axis=1) == int8.argmax(axis=1)).sum())
            self.metrics.drift_windows.inc(len(windows))
            self.metrics.drift_agreements.inc(agree)
            for d in diff:
                self.metrics.drift_abs_diff.observe(float(d))
            self._worst = max(self._worst, float(diff.max()))
            self.metrics.drift_worst.set(self._worst)
