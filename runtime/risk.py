"""FMEA-style risk scoring of a signal, vectorised over a batch of windows (numpy only).

Each factor is scored 1-10 and the risk priority number is their product, as in a failure-mode-and-effects
analysis: severity (how much a wrong signal could cost: the window's volatility), occurrence (how likely the
signal is wrong: the model's normalised entropy) and detection (how hard a bad input is to notice: zero volume,
price gaps, volume spikes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from runtime.types import FloatArray

#: Per-candle close-to-close volatility at which severity steps up from 1 to 10.
_VOL_EDGES = np.array([0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.08])
#: RPN upper bounds of the low, medium and high levels; above the last: critical.
_LEVEL_EDGES = np.array([100, 200, 400])
_LEVELS = ("low", "medium", "high", "critical")


def assess(windows: FloatArray, probabilities: FloatArray) -> list[dict[str, Any]]:
    """Risk assessments for windows (n, 60, 5) and their probabilities (n, 3), one dict per window."""
    w = windows.astype(np.float64, copy=False)
    close, open_, volume = w[:, :, 3], w[:, :, 0], w[:, :, 4]
    log_ret = np.diff(np.log(close), axis=1)  # (n, 59)
    vol = log_ret.std(axis=1)  # (n,)
    severity = 1 + np.searchsorted(_VOL_EDGES, vol, side="right")

    p = np.clip(probabilities.astype(np.float64, copy=False), 1e-12, 1.0)
    entropy = -(p * np.log(p)).sum(axis=1) / np.log(p.shape[1])  # (n,) in [0, 1]
    occurrence = np.clip(np.ceil(entropy * 10), 1, 10).astype(np.int64)

    zero_volume = (volume <= 0).mean(axis=1)  # fraction of candles
    gaps = np.abs(np.log(open_[:, 1:] / close[:, :-1])).max(axis=1)  # largest open-vs-previous-close jump
    median_vol = np.median(volume, axis=1)
    spike = np.where(median_vol > 0, volume[:, -1] / np.where(median_vol > 0, median_vol, 1), 0.0)
    has_zero = zero_volume > 0
    has_gap = gaps > 5 * np.maximum(vol, 1e-12)
    has_spike = spike > 5
    detection = np.clip(1 + 3 * has_zero + 3 * has_gap + 3 * has_spike, 1, 10)

    rpn = severity * occurrence * detection
    level = np.searchsorted(_LEVEL_EDGES, rpn, side="left")

    out = []
    for i in range(len(w)):
        factors = [f"volatility {vol[i]:.4f} per candle (severity {int(severity[i])})"]
        factors.append(f"model entropy {entropy[i]:.2f} of maximum (occurrence {int(occurrence[i])})")
        if has_zero[i]:
            factors.append(f"{zero_volume[i]:.0%} of candles have zero volume")
        if has_gap[i]:
            factors.append(f"price gap of {gaps[i]:.2%} between candles")
        if has_spike[i]:
            factors.append(f"last volume is {spike[i]:.1f}x the window median")
        out.append(
            {
                "severity": int(severity[i]),
                "occurrence": int(occurrence[i]),
                "detection": int(detection[i]),
                "risk_priority_number": int(rpn[i]),
                "risk_level": _LEVELS[int(level[i])],
                "volatility": float(vol[i]),
                "factors": factors,
            }
        )
    return out
