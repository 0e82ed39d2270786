"""From probabilities to the seed's `PredictionResponse`: one definition for the HTTP routes, v2 and replay.

Knows no HTTP. Everything an answer says about a window is a function of the window, the probabilities and the
model that computed them - except the request id, the time and the measured compute time - so
`python -m runtime replay` rebuilds the same answer offline with these same functions.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from runtime.batching import BatchResult
from runtime.constants import CLASSES
from runtime.decoding import Window
from runtime.risk import WindowFeatures, assess, seed_assessment
from runtime.session import ModelInfo
from runtime.types import Float32Array

#: Fields of an answer that depend on when and how it was served, not on the window: replay does not compare them.
VOLATILE_FIELDS = frozenset({"inference_time_ms", "timestamp", "request_id"})


def window_sha256(window: Float32Array) -> str:
    """sha256 of the exact float32 [60, 5] window fed to the model, as little-endian bytes."""
    return hashlib.sha256(window.astype("<f4", copy=False).tobytes()).hexdigest()


def audit_record(window: Float32Array, info: ModelInfo, result: BatchResult | None = None) -> dict[str, Any]:
    """What computed an answer: the model file's sha256 and the window's, so `python -m runtime replay` can
    recompute it. When the model is not batch-invariant the answer also depends on its batch, so the record
    names that model run and its size."""
    record: dict[str, Any] = {"model_sha256": info.sha256, "window_sha256": window_sha256(window)}
    if not info.batch_invariant and result is not None:
        record["batch"] = {"run": result.run_id, "size": result.batch_size}
    return record


def responses(
    reqs: list[Window],
    probabilities: Float32Array,
    features: WindowFeatures,
    info: ModelInfo,
    *,
    result: BatchResult | None = None,
    compute_ms: float = 0.0,
    request_id: str = "",
    now: str | None = None,
) -> list[dict[str, Any]]:
    """The seed's `PredictionResponse` per window (probabilities (n, 3) in request order); the service's
    additions (request id, precision, provider, the FMEA breakdown, the audit record) are extra keys."""
    fmea = assess(features, probabilities)
    now = now or datetime.now(UTC).isoformat()
    compute_ms = round(compute_ms, 4)
    out = []
    for i, (req, probs) in enumerate(zip(reqs, probabilities.tolist(), strict=True)):
        idx = probs.index(max(probs))  # the first maximum, as numpy's argmax
        confidence = probs[idx]
        out.append(
            {
                "prediction": {
                    "signal": CLASSES[idx],
                    "confidence": confidence,
                    "probabilities": dict(zip(CLASSES, probs, strict=True)),
                    "symbol": req.symbol,
                    "exchange": req.exchange,
                    "model_version": info.version,
                    "inference_time_ms": compute_ms,
                    "timestamp": now,
                    "request_id": request_id if len(reqs) == 1 else f"{request_id}-{i}",
                    "precision": info.precision,
                    "provider": info.provider,
                },
                "risk": {**seed_assessment(confidence, req.closes), "fmea": fmea[i]},
                "audit": audit_record(req.window, info, result),
            }
        )
    return out
