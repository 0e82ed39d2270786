"""FMEA-style risk scoring of a signal, vectorised over a batch of windows (numpy only).

Each factor is scored 1-10 and the risk priority number is their product, as in a failure-mode-and-effects
analysis: severity (how much a wrong signal could cost: the window's volatility), occurrence (how likely the
signal is wrong: the model's normalised entropy) and detection (how hard a bad input is to notice: zero volume,
price gaps, volume spikes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.types import FloatArray

#: Per-candle close-to-close volatility at which severity steps up from 1 to 10.
_VOL_EDGES = np.array([0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.08])
#: RPN upper bounds of the low, medium and high levels; above the last: critical.
_LEVEL_EDGES = np.array([100, 200, 400])
_LEVELS = ("low", "medium", "high", "critical")  # RPN <= 100, <= 200, <= 400, > 400


@dataclass(frozen=True)
class WindowFeatures:
    """The parts of the risk score that need only the candles: computed while the model runs."""

    volatility: FloatArray  # (n,) std of close-to-close log returns
    severity: npt.NDArray[np.int64]  # (n,) 1-10
    zero_volume: FloatArray  # (n,) fraction of candles with zero volume
    gap: FloatArray  # (n,) largest |log(open_t / close_{t-1})|
    spike: FloatArray  # (n,) last volume / mean volume of the earlier candles
    detection: npt.NDArray[np.int64]  # (n,) 1-10


def window_features(windows: FloatArray) -> WindowFeatures:
    """Candle-only risk features for windows (n, 60, 5)."""
    w = windows.astype(np.float64, copy=False)
    open_, close, volume = w[:, :, 0], w[:, :, 3], w[:, :, 4]
    log_close = np.log(close)
    vol = np.diff(log_close, axis=1).std(axis=1)  # (n,)
    gap = np.abs(np.log(open_[:, 1:]) - log_close[:, :-1]).max(axis=1)  # (n,)
    zero_volume = (volume <= 0).mean(axis=1)
    # The mean of the earlier candles, not the median: np.median costs more than all the other features together.
    typical = volume[:, :-1].mean(axis=1)
    spike = volume[:, -1] / np.where(typical > 0, typical, np.inf)  # 0 where earlier volume is all 0
    flags = (zero_volume > 0).astype(np.int64) + (gap > 5 * np.maximum(vol, 1e-12)) + (spike > 5)
    return WindowFeatures(
        volatility=vol,
        severity=1 + np.searchsorted(_VOL_EDGES, vol, side="right"),
        zero_volume=zero_volume,
        gap=gap,
        spike=spike,
        detection=np.minimum(1 + 3 * flags, 10),
    )


def assess(features: WindowFeatures, probabilities: FloatArray) -> list[dict[str, Any]]:
    """Risk assessments from candle features and the model's probabilities (n, 3), one dict per window."""
    p = np.clip(probabilities.astype(np.float64, copy=False), 1e-12, 1.0)
    entropy = -(p * np.log(p)).sum(axis=1) / np.log(p.shape[1])  # (n,) in [0, 1]
    occurrence = np.clip(np.ceil(entropy * 10), 1, 10).astype(np.int64)
    severity, detection, vol = features.severity, features.detection, features.volatility
    rpn = severity * occurrence * detection
    level = np.searchsorted(_LEVEL_EDGES, rpn, side="left")

    out = []
    for i in range(len(p)):
        factors = [
            f"volatility {vol[i]:.4f} per candle (severity {int(severity[i])})",
            f"model entropy {entropy[i]:.2f} of maximum (occurrence {int(occurrence[i])})",
        ]
        if features.zero_volume[i] > 0:
            factors.append(f"{features.zero_volume[i]:.0%} of candles have zero volume")
        if features.gap[i] > 5 * max(vol[i], 1e-12):
            factors.append(f"price gap of {features.gap[i]:.2%} between candles")
        if features.spike[i] > 5:
            factors.append(f"last volume is {features.spike[i]:.1f}x the window's average")
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
