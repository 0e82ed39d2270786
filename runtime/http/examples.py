"""Examples for the OpenAPI document and Swagger UI: a valid 60-candle window from the seed's example candle, and
the seed's response example with the service's additions."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np

from runtime.constants import WINDOW_LENGTH

#: The seed's example candle (its OHLCVPoint's json_schema_extra), the first of the example window.
SEED_CANDLE: Final = {
    "timestamp": "2024-01-15T10:30:00Z",
    "open": 42150.50,
    "high": 42300.00,
    "low": 42100.00,
    "close": 42250.75,
    "volume": 1234.56,
}


def example_window() -> list[dict[str, Any]]:
    """A valid window: the seed's candle, then 59 more one minute apart on a small deterministic walk.

    Integer cents throughout, so every value is exact on every platform; each candle opens at the previous close,
    moves at most 13.75 and has low <= open, close <= high.
    """
    start = datetime(2024, 1, 15, 10, 30, tzinfo=UTC)
    candles = [dict(SEED_CANDLE)]
    close = 4_225_075  # cents
    for i in range(1, WINDOW_LENGTH):
        open_ = close
        close = open_ + ((i * 37) % 23 - 11) * 125
        high = max(open_, close) + 500 + (i * 13) % 7 * 100
        low = min(open_, close) - 400 - (i * 11) % 5 * 100
        volume = 123_456 + ((i * 29) % 17 - 8) * 2_500
        candles.append(
            {
                "timestamp": (start + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "open": open_ / 100,
                "high": high / 100,
                "low": low / 100,
                "close": close / 100,
                "volume": volume / 100,
            }
        )
    return candles


def example_request(exchange: str = "binance") -> dict[str, Any]:
    """The documented /predict body (the seed's symbol and exchange)."""
    return {"symbol": "BTC/USDT", "exchange": exchange, "sequence": example_window()}


def _window_sha256(candles: list[dict[str, Any]]) -> str:
    rows = [[c["open"], c["high"], c["low"], c["close"], c["volume"]] for c in candles]
    return hashlib.sha256(np.asarray(rows, dtype="<f4").tobytes()).hexdigest()


#: The seed's PredictionResponse example, with the fields the service adds and a risk score that matches its
#: one factor (the seed's 2.5 does not: "High market volatility" alone adds 3.0).
EXAMPLE_RESPONSE: Final[dict[str, Any]] = {
    "prediction": {
        "signal": "buy",
        "confidence": 0.85,
        "probabilities": {"sell": 0.05, "hold": 0.10, "buy": 0.85},
        "symbol": "BTC/USDT",
        "exchange": "binance",
        "model_version": "v1.2.0",
        "inference_time_ms": 12.5,
        "timestamp": "2024-01-15T10:30:00Z",
        "request_id": "5b4854fdb3a84ce39add4abebfd440eb",
        "precision": "int8",
        "provider": "cpu",
    },
    "risk": {
        "risk_score": 3.0,
        "risk_level": "medium",
        "factors": ["High market volatility"],
        "recommendation": "Consider reduced position size",
        "volatility": 0.0612,
        "trend_strength": 0.45,
        "fmea": {
            "severity": 7,
            "occurrence": 6,
            "detection": 1,
            "risk_priority_number": 42,
            "risk_level": "low",
            "log_volatility": 0.0594,
            "factors": ["volatility 0.0594 per candle (severity 7)", "model entropy 0.55 of maximum (occurrence 6)"],
        },
    },
    "audit": {
        "model_sha256": "9ca945c28711b7c8f132967f63080163964d951e65002d7c2b7b6f672d16473a",
        "window_sha256": _window_sha256(example_window()),
    },
}
