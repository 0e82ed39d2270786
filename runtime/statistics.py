"""Per-model inference statistics in the shape of Triton's statistics extension. Knows no protocol.

Recorded once, in the service core, for every protocol alike (/predict, /predict/batch, /stream, v2 REST, gRPC):

- per request, by `Service.admission` and the service's model calls: ``success`` / ``fail`` (count and total time
  from admission to the answer being built), and for successful requests ``compute_input`` (admission to the
  windows being queued: reading, parsing and validating the input), ``queue`` (queued to its model run starting),
  ``compute_infer`` (the model run it shared) and ``compute_output`` (result to the answer built; writing it to
  the socket is not included);
- per model run, by the batcher's hook: ``inference_count`` (windows computed), ``execution_count`` (model runs),
  ``last_inference`` (ms since the epoch) and, per batch size, the runs and their ``compute_infer`` time.

A request refused before admission (overloaded, not ready) is counted by ``edge_rejected_total``, not here, and
windows whose deadline passed in the queue are never computed, so they are not inferences.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class Duration:
    """Triton's ``StatisticDuration``: how many, and their total time in nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += max(ns, 0)

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class RequestTiming:
    """One admitted request's clock readings (`time.perf_counter_ns`), filled in as it crosses the service."""

    admitted: int
    queued: int = 0  # its windows handed to the batcher (or run inline)
    answered: int = 0  # the model's result back on the loop
    queue_ns: int = 0
    infer_ns: int = 0


@dataclass
class InferenceStatistics:
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    #: batch size -> its model runs and their compute time.
    batches: dict[int, Duration] = field(default_factory=dict)
    # The batcher's thread writes `batches` while the loop may be reading it for a statistics request.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def observe_run(self, size: int, compute_ms: float) -> None:
        """One model run of `size` windows (called where it ran: the inference thread, or the loop when inline)."""
        with self._lock:
            self.inference_count += size
            self.execution_count += 1
            self.last_inference_ms = time.time_ns() // 1_000_000
            duration = self.batches.get(size)
            if duration is None:
                duration = self.batches[size] = Duration()
            duration.add(int(compute_ms * 1e6))

    def observe_request(self, timing: RequestTiming, ok: bool, now_ns: int) -> None:
        """An admitted request answered (`ok`) or failed; its stages are counted only when it succeeded."""
        if not ok:
            self.fail.add(now_ns - timing.admitted)
            return
        self.success.add(now_ns - timing.admitted)
        if timing.answered:
            self.compute_input.add(timing.queued - timing.admitted)
            self.queue.add(timing.queue_ns)
            self.compute_infer.add(timing.infer_ns)
            self.compute_output.add(now_ns - timing.answered)

    def batch_sizes(self) -> list[tuple[int, Duration]]:
        with self._lock:
            return [(size, Duration(d.count, d.ns)) for size, d in sorted(self.batches.items())]
