"""Turn validated candles into the model's input tensor.

Normalisation (prices relative to the last close, volume relative to the window) lives inside the ONNX graph,
so this module only lays candles out as float32 ``[n, WINDOW_LENGTH, N_FEATURES]`` in `FEATURES` order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from runtime.schemas import PredictionRequest
from runtime.types import FloatArray


def requests_to_windows(requests: Sequence[PredictionRequest]) -> FloatArray:
    """Requests → float32 model input of shape (n, WINDOW_LENGTH, N_FEATURES)."""
    if len(requests) == 1:
        return requests[0].window[None]
    return np.stack([req.window for req in requests])
