"""The request every configuration is measured with: the last 60 real S&P 500 daily candles.

The body is validated with the service's own `runtime.schemas.PredictionRequest`, so a load run never
measures a validation error by accident.
"""

from __future__ import annotations

import json
from typing import Any

from runtime.constants import WINDOW_LENGTH

#: Valid for the service's `SYMBOL_PATTERN` and for the seed peer's ``^[A-Z]+/[A-Z]+$`` alike.
SYMBOL = "SPX/USD"
EXCHANGE = "binance"


def sp500_candles(n: int = WINDOW_LENGTH) -> list[dict[str, Any]]:
    """The last ``n`` daily candles of ``arch.data.sp500`` as API dicts (ISO timestamps in UTC with 'Z')."""
    try:
        from arch.data import sp500
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("arch is not installed, run `pip install .[train]` (or `pip install arch`)") from e
    df = sp500.load().tail(n)
    return [
        {
            "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "open": float(row.Open),
            "high": float(row.High),
            "low": float(row.Low),
            "close": float(row.Close),
            "volume": float(row.Volume),
        }
        for ts, row in zip(df.index, df.itertuples(index=False), strict=True)
    ]


def request_body(candles: list[dict[str, Any]], *, symbol: str = SYMBOL, exchange: str = EXCHANGE) -> dict[str, Any]:
    """The seed's /predict body: ``{"symbol", "exchange", "sequence": [60 candles]}``."""
    from runtime.schemas import PredictionRequest

    body = {"symbol": symbol, "exchange": exchange, "sequence": candles}
    PredictionRequest.model_validate(body)  # raises with field paths if the data were ever unfit
    return body


def window(candles: list[dict[str, Any]]) -> list[list[float]]:
    """Candles → one [60][5] window in the model's feature order (open, high, low, close, volume)."""
    from runtime.constants import FEATURES

    return [[float(c[f]) for f in FEATURES] for c in candles]


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
