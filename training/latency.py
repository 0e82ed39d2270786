"""Bare onnxruntime single-window latency: no server, no batching, just `session.run` on one window."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from runtime.constants import INPUT_NAME

#: Product target: INT8 at batch 1 at least this many times faster than FP32.
TARGET_INT8_SPEEDUP: Final = 1.8
THREAD_COUNTS: Final = (1, 2)


def median_latency_ms(
    path: Path, window: npt.NDArray[np.float32], *, threads: int, runs: int = 500, warmup: int = 50
) -> dict[str, float]:
    """Median and p90 of `runs` timed calls after `warmup` untimed ones (first calls allocate and tune)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {INPUT_NAME: window[None] if window.ndim == 2 else window}
    for _ in range(warmup):
        session.run(None, feed)
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times[i] = time.perf_counter() - start
    return {"median_ms": float(np.median(times) * 1e3), "p90_ms": float(np.percentile(times, 90) * 1e3)}


def compare_latency(
    fp32_path: Path, int8_path: Path, window: npt.NDArray[np.float32], *, runs: int = 500
) -> dict[str, Any]:
    """FP32 vs INT8 at batch 1 for each thread count, with the speed-up and whether the target is met.

    The two models are timed alternately per thread count so that background load hits both alike.
    """
    out: dict[str, Any] = {"batch_size": 1, "runs": runs, "target_int8_speedup": TARGET_INT8_SPEEDUP}
    for threads in THREAD_COUNTS:
        fp32 = median_latency_ms(fp32_path, window, threads=threads, runs=runs)
        int8 = median_latency_ms(int8_path, window, threads=threads, runs=runs)
        speedup = fp32["median_ms"] / int8["median_ms"]
        out[f"threads_{threads}"] = {
            "fp32": fp32,
            "int8": int8,
            "int8_speedup": round(speedup, 3),
            "target_met": bool(speedup >= TARGET_INT8_SPEEDUP),
        }
    return out
