"""Request and response schemas, shared by the API and by training's data loading.

Pydantic v2 only; no HTTP and no torch here. The field rules on a candle (`Price`, `_Volume`, `_Timestamp`) and
the cross-field rules (`ohlc_violations`) are the single definition of a valid row: the API applies them to
request bodies and training (through `OHLCVPoint`) to CSV rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
    with_config,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from typing_extensions import TypedDict

from runtime.constants import CLASSES, MAX_BATCH_REQUESTS, WINDOW_LENGTH

#: Real exchange symbols: ``AAPL``, ``BRK.B``, ``^GSPC``, ``ES=F``, ``BTC-PERP``, ``1000PEPE/USDT``, ``EUR/USD``.
SYMBOL_PATTERN = r"^\^?[A-Za-z0-9][A-Za-z0-9._=\-]{0,23}(/[A-Za-z0-9][A-Za-z0-9._\-]{0,23})?$"
SYMBOL_MAX_LENGTH = 48

Signal = Literal["sell", "hold", "buy"]
RiskLevel = Literal["low", "medium", "high", "critical"]

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, str_max_length=256, frozen=True)

#: Bounds that keep every value a normal float32 (the model computes in float32) with room for window sums.
PRICE_MIN, PRICE_MAX, VOLUME_MAX = 1e-20, 1e20, 1e30

Price = Annotated[
    float,
    Field(ge=PRICE_MIN, le=PRICE_MAX, description="Price in any currency unit; finite, within [1e-20, 1e20]."),
]


_Volume = Annotated[
    float, Field(ge=0, le=VOLUME_MAX, description="Traded volume in any unit; finite, within [0, 1e30].")
]
_Timestamp = Annotated[AwareDatetime, Field(description="Candle open time, timezone-aware (ISO 8601 with offset).")]


def ohlc_violations(candles: npt.NDArray[np.float64]) -> list[tuple[int, str, dict[str, float]]]:
    """The cross-field rules on candles (n, 5) in `FEATURES` order: low <= open, close <= high.

    Returns (row, message template, values) for every broken row. This is the one definition of the rules: the
    API applies it to a whole window at once, `OHLCVPoint` to one row (training's CSV rows).
    """
    o, h, lo, c = candles[:, 0], candles[:, 1], candles[:, 2], candles[:, 3]
    # low <= min(open, close) and max(open, close) <= high also give low <= high: two checks cover all five.
    broken = (lo > np.minimum(o, c)) | (h < np.maximum(o, c))
    if not broken.any():
        return []
    out = []
    for i in np.flatnonzero(broken):
        values = {"open": float(o[i]), "high": float(h[i]), "low": float(lo[i]), "close": float(c[i])}
        if h[i] < lo[i]:
            out.append((int(i), "high ({high}) must be >= low ({low})", values))
        elif not lo[i] <= o[i] <= h[i]:
            out.append((int(i), "open ({open}) must lie within [low, high] = [{low}, {high}]", values))
        else:
            out.append((int(i), "close ({close}) must lie within [low, high] = [{low}, {high}]", values))
    return out


class OHLCVPoint(BaseModel):
    """One candle as a model: for validating rows one at a time (training's CSV loader)."""

    model_config = _STRICT

    timestamp: _Timestamp
    open: Price
    high: Price
    low: Price
    close: Price
    volume: _Volume

    @model_validator(mode="after")
    def _check_range(self) -> OHLCVPoint:
        row = np.array([[self.open, self.high, self.low, self.close, self.volume]])
        for _, template, values in ohlc_violations(row):
            raise PydanticCustomError("ohlc_range", template, values)
        return self


@with_config(ConfigDict(extra="forbid", allow_inf_nan=False, str_max_length=256))
class Candle(TypedDict):
    """One candle of a request (the fields of `OHLCVPoint`; the cross-field rules run on the whole window)."""

    timestamp: _Timestamp
    open: Price
    high: Price
    low: Price
    close: Price
    volume: _Volume


class PredictionRequest(BaseModel):
    """One window of candles for one symbol, oldest first."""

    model_config = _STRICT

    symbol: str = Field(
        pattern=SYMBOL_PATTERN,
        max_length=SYMBOL_MAX_LENGTH,
        description="Instrument symbol as the exchange writes it, e.g. 'AAPL', 'BTC/USDT', '1000PEPE/USDT'.",
        examples=["BTC/USDT"],
    )
    # Candles are TypedDicts, not models: validated in Rust without building 60 Python objects per request.
    ohlcv_data: list[Candle] = Field(
        min_length=WINDOW_LENGTH,
        max_length=WINDOW_LENGTH,
        description=f"Exactly {WINDOW_LENGTH} candles in strictly increasing time order, with "
        "low <= open, close <= high on each.",
    )
    include_risk: bool = Field(default=True, description="Add the FMEA risk assessment to the response.")
    _window: npt.NDArray[np.float32] = PrivateAttr()

    @field_validator("ohlcv_data")
    @classmethod
    def _check_order(cls, points: list[Candle]) -> list[Candle]:
        for i in range(1, len(points)):
            if points[i]["timestamp"] <= points[i - 1]["timestamp"]:
                raise PydanticCustomError(
                    "time_order",
                    "ohlcv_data must be in strictly increasing time order: candle {i} ({t}) is not after "
                    "candle {j} ({s})",
                    {
                        "i": i,
                        "t": points[i]["timestamp"].isoformat(),
                        "j": i - 1,
                        "s": points[i - 1]["timestamp"].isoformat(),
                    },
                )
        return points

    @model_validator(mode="after")
    def _check_candles(self) -> PredictionRequest:
        candles = np.array(
            [(c["open"], c["high"], c["low"], c["close"], c["volume"]) for c in self.ohlcv_data], dtype=np.float64
        )  # (60, 5)
        problems = ohlc_violations(candles)
        if problems:
            raise ValidationError.from_exception_data(
                "PredictionRequest",
                [
                    InitErrorDetails(
                        type=PydanticCustomError("ohlc_range", template, values),
                        loc=("ohlcv_data", row),
                        input=self.ohlcv_data[row],
                    )
                    for row, template, values in problems
                ],
            )
        self._window = candles.astype(np.float32)
        return self

    @property
    def window(self) -> npt.NDArray[np.float32]:
        """The candles as the model's float32 input row, shape (60, 5) in `FEATURES` order."""
        return self._window


class BatchPredictionRequest(BaseModel):
    """Up to 100 windows scored in one model call; results come back in request order."""

    model_config = _STRICT

    requests: list[PredictionRequest] = Field(min_length=1, max_length=MAX_BATCH_REQUESTS)


class ClassProbabilities(BaseModel):
    model_config = ConfigDict(frozen=True)

    sell: float = Field(ge=0, le=1)
    hold: float = Field(ge=0, le=1)
    buy: float = Field(ge=0, le=1)


class SignalPrediction(BaseModel):
    model_config = ConfigDict(frozen=True)

    signal: Signal = Field(description="Arg-max class.")
    confidence: float = Field(ge=0, le=1, description="Probability of the predicted class.")
    probabilities: ClassProbabilities


class RiskAssessment(BaseModel):
    """Failure-mode-and-effects scoring of acting on this signal (each factor 1-10, RPN = S x O x D)."""

    model_config = ConfigDict(frozen=True)

    severity: int = Field(ge=1, le=10, description="How much a wrong signal would cost: window volatility.")
    occurrence: int = Field(ge=1, le=10, description="How likely the signal is wrong: model uncertainty.")
    detection: int = Field(ge=1, le=10, description="How hard a bad input is to notice: volume/gap anomalies.")
    risk_priority_number: int = Field(ge=1, le=1000, description="severity x occurrence x detection.")
    risk_level: RiskLevel
    volatility: float = Field(ge=0, description="Standard deviation of close-to-close log returns.")
    factors: list[str] = Field(description="Human-readable reasons behind the scores.")


class PredictionResponse(BaseModel):
    model_config = ConfigDict(frozen=True, protected_namespaces=())

    request_id: str
    symbol: str
    prediction: SignalPrediction
    risk: RiskAssessment | None
    model_version: str
    precision: Literal["int8", "fp32"]
    inference_time_ms: float = Field(ge=0, description="Model compute time for the batch this window ran in.")
    timestamp: datetime = Field(description="When the server produced the response (UTC).")


class BatchPredictionResponse(BaseModel):
    model_config = ConfigDict(frozen=True, protected_namespaces=())

    request_id: str
    predictions: list[PredictionResponse]
    batch_size: int
    inference_time_ms: float


class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(description="Path to the offending field, e.g. ['ohlcv_data', 3, 'high'].")
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """The one error shape of the service."""

    error: str = Field(description="Human-readable summary.")
    code: str = Field(description="Stable machine-readable code, e.g. VALIDATION_ERROR.")
    details: list[ErrorDetail] = Field(default_factory=list)
    request_id: str | None = None


def class_probabilities(row: Any) -> dict[str, float]:
    """Map a probability row in model order to ``{"sell": p0, "hold": p1, "buy": p2}``."""
    return {name: float(p) for name, p in zip(CLASSES, row, strict=True)}


class ReloadRequest(BaseModel):
    """Body of ``POST /admin/reload`` (optional): which model version to switch to."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    version: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
