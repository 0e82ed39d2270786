"""Answer checks: a server is measured only while its /predict answers match bare onnxruntime."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from bench.servers import Server, http_request, post_predict

CLASSES = ("sell", "hold", "buy")
#: |Δp| between a server's answer and bare onnxruntime on the same window above which it is wrong, not noise.
VERIFY_ATOL = 1e-3


def verify(server: Server, body: bytes, expected: dict[str, list[float]], api_key: str) -> dict[str, Any]:
    """A 200 with a signal and three probabilities summing to 1 that match bare ORT on the same window."""
    precision = server.spec.precision
    try:
        status, parsed, raw = post_predict(server.port, body, api_key)
    except OSError as e:
        return {"ok": False, "detail": f"no answer: {e}"}
    if status != 200 or not isinstance(parsed, dict):
        return {"ok": False, "status": status, "detail": f"HTTP {status}: {raw[:300]!r}"}
    if server.spec.kind == "http":  # the HTTP floor has no model: a JSON 200 is all it promises
        return {"ok": True, "status": status, "max_abs_dp": None, "detail": "200, fixed body (no model)"}
    try:
        pred = parsed["prediction"]
        probs = [float(pred["probabilities"][k]) for k in CLASSES]
        signal = pred["signal"]
    except (KeyError, TypeError, ValueError) as e:
        return {"ok": False, "status": status, "detail": f"malformed body ({e}): {raw[:300]!r}"}
    problems = []
    if signal != CLASSES[int(np.argmax(probs))]:
        problems.append(f"signal {signal!r} is not the arg-max of {probs}")
    if abs(sum(probs) - 1) > 1e-4:
        problems.append(f"probabilities sum to {sum(probs)}")
    ref = expected.get(precision)
    max_dp = max(abs(a - b) for a, b in zip(probs, ref, strict=True)) if ref else None
    if max_dp is not None and max_dp > VERIFY_ATOL:
        problems.append(f"probabilities {probs} differ from bare ORT {precision.upper()} {ref} by {max_dp:.2e}")
    return {
        "ok": not problems,
        "status": status,
        "signal": signal,
        "probabilities": probs,
        "max_abs_dp": max_dp,
        "detail": "; ".join(problems) or f"200, signal {signal}, vs bare ORT {precision.upper()}",
    }


def ready_info(server: Server) -> dict[str, Any] | None:
    """What the service says about itself on /ready (precision, provider, intra-op threads)."""
    status, raw = http_request(server.port, "GET", "/ready", quiet=True)
    try:
        info = json.loads(raw) if status == 200 else None
    except ValueError:
        return None
    return info if isinstance(info, dict) else None
