"""Batch invariance: how far coalescing windows into one model run moves each window's probabilities.

Dynamic INT8 quantization picks one activation scale per tensor, i.e. per batch, so a window's neighbours in a
batch change its quantization grid and so, slightly, its probabilities. This measures that on real market
windows (daily S&P 500 and NASDAQ candles from `arch`): every window alone (batch 1) against the same windows
cut into consecutive batches of each size. `runtime.batching.BATCH_INVARIANCE_ATOL` is the bound the service
states; the run reports whether every measured difference is inside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.floor import load_session
from runtime.batching import BATCH_INVARIANCE_ATOL
from runtime.constants import FEATURES, INPUT_NAME, WINDOW_LENGTH

#: Batch sizes compared with batch 1: powers of two up to the CPU default and beyond, and a full /predict/batch.
BATCH_SIZES = (2, 4, 8, 16, 32, 64, 100)


def market_windows(n: int = 512) -> np.ndarray[Any, Any]:
    """``n`` real windows (float32, (n, 60, 5)), evenly spaced over both daily series of `arch`, oldest first."""
    try:
        from arch.data import nasdaq, sp500
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("arch is not installed, run `pip install .[train]` (or `pip install arch`)") from e
    columns = [f.capitalize() for f in FEATURES]
    series = [df[columns].dropna().to_numpy(dtype=np.float64) for df in (sp500.load(), nasdaq.load())]
    per_series = [n // 2, n - n // 2]
    windows: list[np.ndarray[Any, Any]] = []
    for arr, k in zip(series, per_series, strict=True):
        starts = np.linspace(0, len(arr) - WINDOW_LENGTH, k).astype(int)
        windows.extend(arr[s : s + WINDOW_LENGTH] for s in starts)
    return np.stack(windows).astype(np.float32)


def _run(session: Any, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    out: np.ndarray[Any, Any] = session.run(None, {INPUT_NAME: x})[0]
    return out


def measure(
    model_dir: Path,
    windows: np.ndarray[Any, Any],
    *,
    precisions: Sequence[str] = ("int8", "fp32"),
    batch_sizes: Sequence[int] = BATCH_SIZES,
) -> dict[str, Any]:
    """Per precision and batch size: max, p99 and median |Δp| against batch 1, and argmax agreement."""
    out: dict[str, Any] = {"windows": len(windows), "atol": BATCH_INVARIANCE_ATOL, "points": []}
    for precision in precisions:
        session = load_session(model_dir, precision, 1)
        alone = np.concatenate([_run(session, windows[i : i + 1]) for i in range(len(windows))])  # (n, 3)
        top2 = np.sort(alone, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]  # how far each window is from a tie between its two top classes
        for b in batch_sizes:
            batched = np.concatenate([_run(session, windows[i : i + b]) for i in range(0, len(windows), b)])
            diff = np.abs(batched - alone).max(axis=1)  # (n,) per-window max over the classes
            flips = batched.argmax(1) != alone.argmax(1)
            out["points"].append(
                {
                    "precision": precision,
                    "batch": b,
                    "max_abs_dp": float(diff.max()),
                    "p99_abs_dp": float(np.quantile(diff, 0.99)),
                    "median_abs_dp": float(np.median(diff)),
                    "argmax_agreement": float(1 - flips.mean()),
                    # A changed signal is only acceptable on a near-tie (top two classes within 2 x the bound).
                    "flips_outside_near_ties": int((flips & (margin > 2 * BATCH_INVARIANCE_ATOL)).sum()),
                }
            )
    out["within_atol"] = all(
        p["max_abs_dp"] <= BATCH_INVARIANCE_ATOL and p["flips_outside_near_ties"] == 0 for p in out["points"]
    )
    return out


def markdown(result: dict[str, Any]) -> list[str]:
    """The RESULTS.md section."""
    lines = [
        "## Batched vs unbatched answers (the same model, batch 1 against batches of each size)",
        "",
        f"{result['windows']} real daily windows (S&P 500 and NASDAQ from `arch`), each run alone and in consecutive "
        f"batches; the service's stated bound `BATCH_INVARIANCE_ATOL` is {result['atol']:g}. "
        + (
            "Every difference is within it."
            if result["within_atol"]
            else "**Some difference exceeds it, or a signal changed away from a near-tie.**"
        ),
        "",
        "| precision | batch | max \\|Δp\\| | p99 \\|Δp\\| | median \\|Δp\\| | argmax agreement "
        "| flips off near-ties |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in result["points"]:
        lines.append(
            f"| {p['precision']} | {p['batch']} | {p['max_abs_dp']:.2e} | {p['p99_abs_dp']:.2e} "
            f"| {p['median_abs_dp']:.2e} | {100 * p['argmax_agreement']:.2f}% | {p['flips_outside_near_ties']} |"
        )
    return lines
