"""Turn validated candles into the model's input tensor.

Normalisation (prices relative to the last close, volume relative to the window) lives inside the ONNX graph,
so this module only lays candles out as float32 ``[n, WINDOW_LENGTH, N_FEATURES]`` in `FEATURES` order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from runtime.constants import N_FEATURES, WINDOW_LENGTH
from runtime.schemas import OHLCVPoint, PredictionRequest
from runtime.types import FloatArray


def candles_to_array(points: Sequence[OHLCVPoint]) -> FloatArray:
    """Candles → float64 array of shape (len(points), 5) in `FEATURES` order."""
    return np.array([(p.open, p.high, p.low, p.close, p.volume) for p in points], dtype=np.float64)


def requests_to_windows(requests: Sequence[PredictionRequest]) -> FloatArray:
    """Requests → float32 model input of shape (n, WINDOW_LENGTH, N_FEATURES)."""
    out = np.empty((len(requests), WINDOW_LENGTH, N_FEATURES), dtype=np.float32)
    for i, req in enumerate(requests):
        out[i] = [(p.open, p.high, p.low, p.close, p.volume) for p in req.ohlcv_data]
    return out
