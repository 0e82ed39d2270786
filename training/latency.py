"""Bare onnxruntime single-window latency: no server, no batching, just `session.run` on one window."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from runtime.constants import INPUT_NAME
from runtime.session import session_options

#: Product target: INT8 at batch 1 at least this many times faster than FP32.
TARGET_INT8_SPEEDUP: Final = 1.8
THREAD_COUNTS: Final = (1, 2)


def _session(path: Path, threads: int) -> ort.InferenceSession:
    # The service's own session options: latency is measured as serving runs the model.
    return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])


def _stats(seconds: npt.NDArray[np.float64]) -> dict[str, float]:
    return {"median_ms": float(np.median(seconds) * 1e3), "p90_ms": float(np.percentile(seconds, 90) * 1e3)}


def compare_latency(
    fp32_path: Path, int8_path: Path, window: npt.NDArray[np.float32], *, runs: int = 500, warmup: int = 50
) -> dict[str, Any]:
    """FP32 vs INT8 at batch 1 for each thread count: median and p90 of `runs` timed calls after `warmup`.

    The two sessions are called alternately, one call each per round, so that load from other processes on a
    shared machine hits both alike; timing them one after the other made the ratio swing by 2x between runs.
    """
    feed = {INPUT_NAME: window[None] if window.ndim == 2 else window}
    out: dict[str, Any] = {"batch_size": 1, "runs": runs, "target_int8_speedup": TARGET_INT8_SPEEDUP}
    for threads in THREAD_COUNTS:
        sessions = {"fp32": _session(fp32_path, threads), "int8": _session(int8_path, threads)}
        for _ in range(warmup):  # first calls allocate buffers and pick kernels
            for session in sessions.values():
                session.run(None, feed)
        times = {name: np.empty(runs) for name in sessions}
        for i in range(runs):
            for name, session in sessions.items():
                start = time.perf_counter()
                session.run(None, feed)
                times[name][i] = time.perf_counter() - start
        fp32, int8 = _stats(times["fp32"]), _stats(times["int8"])
        speedup = fp32["median_ms"] / int8["median_ms"]
        out[f"threads_{threads}"] = {
            "fp32": fp32,
            "int8": int8,
            "int8_speedup": round(speedup, 3),
            "target_met": bool(speedup >= TARGET_INT8_SPEEDUP),
        }
    return out
