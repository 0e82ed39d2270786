"""Shadow before promotion: a candidate version computes a sample of live windows off the hot path.

An operator promotes a fine-tuned version on evidence from real traffic: `/metrics` shows how often the candidate
chooses the served version's signal (``edge_shadow_agreement_ratio``) and how far their probabilities are apart
(``edge_shadow_abs_diff``). The pattern is the drift monitor's: one thread, a small bounded queue, samples dropped
(and counted) when it is busy, never waited for; the request's answer never depends on it.
"""

from __future__ import annotations

import logging
import queue
import random
import threading

import numpy as np

from runtime.errors import ConfigurationError
from runtime.metrics import Metrics
from runtime.repository import READY, Repository, VersionEntry
from runtime.session import Model, ModelInfo
from runtime.settings import Settings
from runtime.types import Float32Array

log = logging.getLogger(__name__)

_Item = tuple[Float32Array, Float32Array, str]


class ShadowMonitor:
    """Runs `candidate` on sampled windows and compares it with what the served model answered."""

    def __init__(
        self,
        candidate: Model,
        directory: str,
        metrics: Metrics,
        sample_rate: float,
        max_pending: int = 8,
        seed: int | None = None,
    ) -> None:
        self.candidate = candidate
        self.version = candidate.info.version
        #: The repository directory it was loaded from (a load of that directory promotes it).
        self.directory = directory
        self.metrics = metrics
        self.sample_rate = sample_rate
        self._rng = random.Random(seed)
        self._queue: queue.Queue[_Item | None] = queue.Queue(max_pending)
        self._thread = threading.Thread(target=self._work, name="edge-shadow", daemon=True)
        self._totals: dict[str, tuple[int, int]] = {}  # serving version -> (windows, agreements)
        self._stopping = False

    def start(self) -> None:
        self._thread.start()
        self.metrics.shadow_active.labels(self.version).set(1)

    def stop(self) -> None:
        self._stopping = True  # a full queue is not drained: the worker stops after its current item
        try:
            self._queue.put(None, timeout=1)  # wakes a worker waiting on an empty queue
        except queue.Full:
            pass
        self._thread.join(5)
        self.metrics.shadow_active.labels(self.version).set(0)

    def offer(self, windows: Float32Array, probabilities: Float32Array, serving: ModelInfo) -> None:
        """Maybe sample these windows (n, 60, 5) with the served probabilities (n, 3). Never blocks."""
        if self._rng.random() >= self.sample_rate:
            return
        try:
            self._queue.put_nowait((windows, probabilities, serving.version))
        except queue.Full:
            self.metrics.shadow_dropped.labels(self.version).inc(len(windows))

    def _work(self) -> None:
        # As the drift monitor: no lower OS priority (a descheduled thread holding the GIL stalls the event loop).
        while (item := self._queue.get()) is not None and not self._stopping:
            windows, served, serving_version = item
            try:
                shadow = self.candidate.run(windows)  # (n, 3)
            except Exception:
                log.exception("shadow version %s failed on a batch", self.version)
                continue
            diff = np.abs(shadow - served).max(axis=1)  # (n,)
            agree = int((shadow.argmax(axis=1) == served.argmax(axis=1)).sum())
            labels = (serving_version, self.version)
            windows_seen, agreements = self._totals.get(serving_version, (0, 0))
            windows_seen, agreements = windows_seen + len(windows), agreements + agree
            self._totals[serving_version] = (windows_seen, agreements)
            self.metrics.shadow_windows.labels(*labels).inc(len(windows))
            self.metrics.shadow_agreements.labels(*labels).inc(agree)
            self.metrics.shadow_agreement.labels(*labels).set(agreements / windows_seen)
            histogram = self.metrics.shadow_abs_diff.labels(*labels)
            for d in diff:
                histogram.observe(float(d))


def shadow_entry(settings: Settings, repository: Repository) -> VersionEntry | None:
    """The repository entry `settings.shadow_version` names; None when none is named.

    `ConfigurationError` when the version is not in the repository or is UNAVAILABLE: shadowing a model that does
    not verify would produce figures about nothing an operator could promote.
    """
    version = settings.shadow_version
    if version is None:
        return None
    entries = repository.scan()
    entry = next((e for e in entries if e.version == version), None)
    if entry is None:
        listed = ", ".join(e.version for e in entries) or "none"
        raise ConfigurationError(
            f"EDGE_SHADOW_VERSION '{version}' is not in the model repository '{repository.model_dir}' "
            f"(versions: {listed})"
        )
    if entry.state != READY:
        raise ConfigurationError(f"EDGE_SHADOW_VERSION '{version}' is UNAVAILABLE: {entry.reason}")
    return entry


def start_shadow(settings: Settings, repository: Repository, metrics: Metrics) -> ShadowMonitor | None:
    """The shadow `settings.shadow_version` names, checked (`shadow_entry`), loaded and started."""
    entry = shadow_entry(settings, repository)
    if entry is None:
        return None
    # Same precision, provider and batch invariance as the served model, so the figures compare models, not
    # kernels; one thread, so it takes at most one CPU from serving.
    candidate = Model.load(
        settings.model_path(entry.directory),
        precision=settings.precision,
        provider=settings.provider,
        intra_op_threads=1,
        batch_invariant=settings.batch_invariant,
    )
    monitor = ShadowMonitor(candidate, entry.directory, metrics, settings.shadow_sample_rate)
    monitor.start()
    log.info("shadowing version %s on %.0f%% of requests", entry.version, 100 * settings.shadow_sample_rate)
    return monitor
