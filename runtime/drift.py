"""Quantization drift monitor: re-run a sample of live windows on the FP32 model, off the hot path.

Offline parity is checked on historical data; markets move on. This reports, on the traffic the service
actually sees, how often INT8 and FP32 choose the same signal and how far their probabilities drift apart.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from pathlib import Path

import numpy as np

from runtime.metrics import Metrics
from runtime.session import Model, ModelInfo
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


class DriftSlot:
    """The one drift monitor of a service and the thread loading the next one's FP32 reference.

    One monitor ever: `replace` loads a new reference in the background (not on the start-up or reload path), and
    the new monitor replaces the current one, which is stopped (its thread joined, its FP32 session released). A
    loader still running from an earlier call is waited for by the new one, so two never load at once and they
    install in order.
    """

    def __init__(self) -> None:
        self.monitor: DriftMonitor | None = None
        self._loader: threading.Thread | None = None

    def replace(self, model_path: Path, info: ModelInfo, metrics: Metrics, sample_rate: float) -> None:
        earlier = self._loader

        def load() -> None:
            if earlier is not None:
                earlier.join()
            try:
                reference = Model.load(
                    model_path,
                    precision="fp32",
                    provider=info.provider,
                    intra_op_threads=1,
                    batch_invariant=False,  # a reference for INT8 vs FP32 drift: batched FP32 moves rows by ~1e-7
                )
            except Exception:
                log.exception("drift monitor disabled: the FP32 reference could not be loaded")
                return
            monitor = DriftMonitor(reference, metrics, sample_rate)
            monitor.start()
            previous, self.monitor = self.monitor, monitor
            if previous is not None:
                previous.stop()

        self._loader = threading.Thread(target=load, name="edge-drift-load", daemon=True)
        self._loader.start()

    def wait(self, timeout: float = 30.0) -> None:
        """Block until a reference still loading has been installed (or has failed)."""
        if self._loader is not None:
            self._loader.join(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Wait for a reference still loading (onnxruntime aborts the process if torn down mid-load), then stop."""
        self.wait(timeout)
        if self.monitor is not None:
            self.monitor.stop()
            self.monitor = None
