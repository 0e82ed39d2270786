"""Synthetic market windows, for where no market data can be had (the GPU device has no network and no `arch`).

Geometric random walks with consistent OHLC, cut into model windows, and the /predict body for one of them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from bench import payload
from runtime.constants import WINDOW_LENGTH


def random_walk(n_candles: int, seed: int) -> np.ndarray:
    """Candles (n, 5) open, high, low, close, volume: a geometric random walk with consistent OHLC."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n_candles)))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(rng.normal(0, 0.002, n_candles))
    top = np.maximum(open_, close)
    bottom = np.minimum(open_, close)
    high = top * (1 + np.abs(rng.normal(0, 0.004, n_candles)))
    low = bottom * (1 - np.abs(rng.normal(0, 0.004, n_candles)))
    volume = rng.uniform(1e6, 5e6, n_candles)
    return np.stack([open_, high, low, close, volume], axis=1)


def synthetic_windows(n: int, seed: int = 0) -> np.ndarray:
    """n float32 windows (n, 60, 5) cut at random offsets from one long random walk."""
    series = random_walk(20_000, seed)
    starts = np.random.default_rng(seed + 1).integers(0, len(series) - WINDOW_LENGTH, n)
    return np.ascontiguousarray(np.stack([series[s : s + WINDOW_LENGTH] for s in starts]), dtype=np.float32)


def request_body(window: np.ndarray, symbol: str = "SYN") -> bytes:
    """A /predict body for one window, validated with the service's own schema (daily candles, UTC)."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    candles = [
        {
            "timestamp": (start + timedelta(days=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "open": float(r[0]),
            "high": float(r[1]),
            "low": float(r[2]),
            "close": float(r[3]),
            "volume": float(r[4]),
        }
        for i, r in enumerate(window.astype(np.float64))
    ]
    return payload.encode(payload.request_body(candles, symbol=symbol))
