"""The floor: bare in-process onnxruntime on one real window, no HTTP, no Python service code.

Session options mirror the service's (`runtime.session.Model.load`): ``intra_op_num_threads`` as the service
reports on /ready (or ``runtime.session.threads_per_worker`` for one worker), one inter-op thread, sequential
execution, all graph optimisations, and no spinning when single-threaded. The model files are the same
committed artifacts the servers load.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from runtime.constants import FP32_FILE, INPUT_NAME, INT8_FILE, OUTPUT_NAME
from runtime.session import session_options


def load_session(model_dir: Path, precision: str, intra_op_threads: int) -> Any:
    import onnxruntime as ort

    path = model_dir / (INT8_FILE if precision == "int8" else FP32_FILE)
    return ort.InferenceSession(
        str(path), sess_options=session_options(intra_op_threads), providers=["CPUExecutionProvider"]
    )


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an unsorted list."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(np.ceil(q / 100 * len(ordered))) - 1))
    return ordered[k]


def summarise(samples: list[float]) -> dict[str, float]:
    return {
        "runs": len(samples),
        "p50_ms": statistics.median(samples),
        "p99_ms": percentile(samples, 99),
        "mean_ms": statistics.fmean(samples),
        "min_ms": min(samples),
    }


#: The pause before each run of the idle-gap floor: about the loopback round trip a server at one connection
#: waits between requests (wrk → server → wrk measured ~90 µs here for an 8 KB POST to a bare ASGI app).
IDLE_GAP_S = 100e-6


def time_runs(
    session: Any,
    x: np.ndarray[Any, Any],
    *,
    seconds: float,
    warmup: int = 50,
    min_runs: int = 100,
    idle_gap_s: float = 0.0,
) -> list[float]:
    """Time ``session.run`` for about ``seconds``; latencies in milliseconds. Back to back, or with the thread
    asleep for ``idle_gap_s`` before each run (a CPU that idles between requests is slower to wake: that, not the
    model, is part of what a server at one connection pays and a back-to-back loop never does)."""
    feeds = {INPUT_NAME: x}
    outputs = [OUTPUT_NAME]
    for _ in range(warmup):
        session.run(outputs, feeds)
    samples: list[float] = []
    end = time.perf_counter() + seconds
    while True:
        if idle_gap_s:
            time.sleep(idle_gap_s)
        t0 = time.perf_counter()
        session.run(outputs, feeds)
        t1 = time.perf_counter()
        samples.append((t1 - t0) * 1e3)
        if t1 >= end and len(samples) >= min_runs:
            break
    return samples


def measure(
    model_dir: Path,
    window: np.ndarray[Any, Any],
    *,
    intra_op_threads: int,
    seconds: float,
    batch_sizes: tuple[int, ...] = (1, 8, 64),
) -> dict[str, Any]:
    """p50/p99 of one ``session.run``, INT8 and FP32 at each batch size, interleaved in two halves."""
    x1 = np.ascontiguousarray(window, dtype=np.float32).reshape(1, *window.shape[-2:])
    sessions = {p: load_session(model_dir, p, intra_op_threads) for p in ("int8", "fp32")}
    out: dict[str, Any] = {"intra_op_threads": intra_op_threads, "seconds_per_point": seconds, "points": {}}
    for n in batch_sizes:
        x = np.repeat(x1, n, axis=0)
        samples: dict[str, list[float]] = {"int8": [], "fp32": []}
        for _ in range(2):  # int8, fp32, int8, fp32: drift in machine load hits both alike
            for p, s in sessions.items():
                # Big batches take tens of ms a run: fewer warm-up and minimum runs keep the floor step short.
                samples[p] += time_runs(
                    s, x, seconds=seconds / 2, warmup=50 if n == 1 else 5, min_runs=100 if n == 1 else 10
                )
        for p, values in samples.items():
            out["points"][f"{p}@{n}"] = {"precision": p, "batch": n, **summarise(values)}
    if 1 in batch_sizes:
        # Context, not the floor: the same run after an idle gap, as a server at one connection sees it.
        gapped = time_runs(sessions["int8"], x1, seconds=seconds / 2, idle_gap_s=IDLE_GAP_S)
        out["idle_gap"] = {"precision": "int8", "batch": 1, "gap_us": IDLE_GAP_S * 1e6, **summarise(gapped)}
    probs = {p: s.run([OUTPUT_NAME], {INPUT_NAME: x1})[0][0].tolist() for p, s in sessions.items()}
    out["probabilities"] = probs
    return out
