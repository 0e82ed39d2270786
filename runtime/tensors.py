"""The v2 protocol's one input tensor, checked against the model and turned into float32 windows. Knows no wire.

KServe v2 REST (`runtime.http.v2_tensors`) and gRPC (`runtime.grpc`) carry the same tensor in different
envelopes: a JSON header with JSON data or a binary tail, or a protobuf message with typed contents or
``raw_input_contents``. Both call these functions, so a tensor is refused by the same rule, with the same message,
whichever protocol carried it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any, Final

import numpy as np

from runtime.constants import INPUT_NAME, N_CLASSES, N_FEATURES, OUTPUT_NAME, WINDOW_LENGTH
from runtime.errors import BadRequest
from runtime.types import Float32Array

DATATYPE: Final = "FP32"
#: Most windows in one v2 infer request. The batcher runs a request whole, so this also bounds one model run.
MAX_INFER_WINDOWS: Final = 1024
#: The wire layout of FP32 tensors in both protocols (raw bytes are little-endian).
FP32_LE: Final = np.dtype("<f4")
#: The model's tensors as v2 metadata describes them (-1: the batch axis, any size).
INPUT_SHAPE: Final = (-1, WINDOW_LENGTH, N_FEATURES)
OUTPUT_SHAPE: Final = (-1, N_CLASSES)

_PRICE_COLUMNS = slice(0, 4)  # open, high, low, close; column 4 is volume
_KINDS: Final = {"b": "booleans", "U": "strings", "O": "nulls, objects or integers beyond 64 bits"}


def names(values: Iterable[str]) -> list[str]:
    """Tensor names for an error message, bounded: they come from the client."""
    return [n[:64] for n in itertools.islice(values, 8)]


def max_windows(max_queue: int) -> int:
    # A request wider than the admission queue could never be admitted: that is the client's error, not a 503.
    return min(MAX_INFER_WINDOWS, max_queue)


def check_input(input_names: Sequence[str], datatype: str, shape: Sequence[int], limit: int) -> int:
    """The input's name, datatype and shape against the model; the number of values it must carry."""
    shown = names(input_names)
    if shown != [INPUT_NAME]:
        raise BadRequest(f"inputs {shown} do not match the model's inputs ['{INPUT_NAME}']")
    if datatype != DATATYPE:
        raise BadRequest(f"input '{INPUT_NAME}' has datatype '{datatype[:32]}'; the model takes '{DATATYPE}'")
    dims = list(shape)
    if len(dims) != 3 or dims[1:] != [WINDOW_LENGTH, N_FEATURES] or not 1 <= dims[0] <= limit:
        raise BadRequest(
            f"input '{INPUT_NAME}' has shape {dims[:8]}; expected [n, {WINDOW_LENGTH}, {N_FEATURES}] "
            f"with 1 <= n <= {limit}"
        )
    return math.prod(dims)


def windows_from_bytes(raw: bytes, shape: Sequence[int]) -> Float32Array:
    """Little-endian FP32 bytes (already checked to be 4 bytes per value) as checked windows."""
    # Little-endian float32 is the native layout here; copy so the array is aligned and writable.
    windows = np.frombuffer(raw, dtype=FP32_LE).astype(np.float32).reshape(tuple(shape))
    check_values(windows)
    return windows


def windows_from_values(data: Any, shape: Sequence[int]) -> Float32Array:
    """Numbers (flat or nested, row-major) as checked windows; anything but a regular array of numbers is refused."""
    numel = math.prod(shape)
    # Without a dtype numpy reveals strings, nulls, bools and ragged nesting instead of coercing them.
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError, OverflowError) as e:
        raise BadRequest(f"input '{INPUT_NAME}' data is not a regular array of numbers: {e}") from e
    if arr.dtype.kind not in "iuf":
        found = _KINDS.get(arr.dtype.kind, f"'{arr.dtype}' values")
        raise BadRequest(f"input '{INPUT_NAME}' data must hold only numbers, found {found}")
    if arr.size != numel:
        raise BadRequest(f"input '{INPUT_NAME}' data has {arr.size} values; shape {list(shape)} needs {numel}")
    with np.errstate(over="ignore"):  # values beyond float32 become inf and are reported by check_values
        windows = arr.astype(np.float32).reshape(tuple(shape))
    check_values(windows)
    return windows


def check_values(windows: Float32Array) -> None:
    """What the graph's normalisation needs to stay finite, and /predict's per-candle bounds: finite float32,
    prices (columns 0-3) > 0, volume (column 4) >= 0. The first failing value is named by its index."""
    finite = np.isfinite(windows)
    bad = ~finite
    bad[..., _PRICE_COLUMNS] |= finite[..., _PRICE_COLUMNS] & (windows[..., _PRICE_COLUMNS] <= 0)
    bad[..., -1] |= finite[..., -1] & (windows[..., -1] < 0)
    if bad.any():
        n, t, f = (int(i) for i in np.argwhere(bad)[0])
        raise BadRequest(
            f"input '{INPUT_NAME}'[{n}, {t}, {f}] is {float(windows[n, t, f])!r}: values must be finite "
            f"float32, prices (columns 0-3) > 0 and volume (column 4) >= 0; {int(bad.sum())} value(s) fail"
        )


def check_outputs(output_names: Sequence[str]) -> None:
    """Requested outputs, when any are named, must be the model's one output."""
    shown = names(output_names)
    if shown and shown != [OUTPUT_NAME]:
        raise BadRequest(f"requested outputs {shown} do not match the model's outputs ['{OUTPUT_NAME}']")
