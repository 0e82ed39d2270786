"""Request and response schemas, shared by the API and by training's data loading.

Pydantic v2 only; no HTTP and no torch here. The field rules on a candle (`Price`, `_Volume`, `_Timestamp`) and
the cross-field rules (`ohlc_violations`) are the single definition of a valid candle (`Candle`): the API applies
them to request bodies, training (through `validate_candle`) to CSV rows, and `runtime.decoding`'s fast path
mirrors them (a property test proves it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import numpy as np
import numpy.typing as npt
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
    with_config,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from typing_extensions import TypedDict

from runtime.constants import MAX_BATCH_REQUESTS, WINDOW_LENGTH

#: The seed's upper-case pairs (``BTC/USDT``) and the real forms exchanges write: ``AAPL``, ``BRK.B``, ``^GSPC``,
#: ``ES=F``, ``BTC-PERP``, ``1000PEPE/USDT``. Lower case is refused, as the seed's ``^[A-Z]+/[A-Z]+$`` refuses it.
SYMBOL_PATTERN = r"^\^?[A-Z0-9][A-Z0-9._=\-]{0,23}(/[A-Z0-9][A-Z0-9._\-]{0,23})?$"
SYMBOL_MAX_LENGTH = 48
#: The seed's ``Literal["binance", "coinbase", "kraken", "bybit", "okx"]``; a deployment names its own venues with
#: ``EDGE_EXCHANGES`` (passed to validation as ``context={"exchanges": ...}``).
DEFAULT_EXCHANGES: tuple[str, ...] = ("binance", "coinbase", "kraken", "bybit", "okx")
EXCHANGE_PATTERN = r"^[a-z0-9][a-z0-9_.\-]{0,31}$"

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
    API applies it to a whole window at once, `validate_candle` to one row (training's CSV rows).
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


@with_config(ConfigDict(extra="forbid", allow_inf_nan=False, str_max_length=256))
class Candle(TypedDict):
    """One candle of a request (the cross-field rules run on the whole window, or on one row in `validate_candle`)."""

    timestamp: _Timestamp
    open: Price
    high: Price
    low: Price
    close: Price
    volume: _Volume


def literal_list(values: tuple[str, ...]) -> str:
    """``'a', 'b' or 'c'``: how Pydantic's ``literal_error`` names the allowed values."""
    quoted = [repr(v) for v in values]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def exchange_error(exchanges: tuple[str, ...]) -> PydanticCustomError:
    """The seed's verdict on an exchange outside its ``Literal``: same type, same message."""
    return PydanticCustomError("literal_error", "Input should be {expected}", {"expected": literal_list(exchanges)})


def check_exchange(value: str, info: ValidationInfo) -> str:
    """An exchange against the list passed as ``context={"exchanges": ...}`` (default: the seed's five)."""
    context = info.context if isinstance(info.context, dict) else {}
    exchanges: tuple[str, ...] = tuple(context.get("exchanges", DEFAULT_EXCHANGES))
    if value not in exchanges:
        raise exchange_error(exchanges)
    return value


_CANDLE: TypeAdapter[Candle] = TypeAdapter(Candle)


def validate_candle(raw: object) -> Candle:
    """One candle on its own (training's CSV rows): the field rules, then the cross-field rules, as a request's
    window gets them. Raises Pydantic's `ValidationError`."""
    candle = _CANDLE.validate_python(raw)
    row = np.array([[candle["open"], candle["high"], candle["low"], candle["close"], candle["volume"]]])
    problems = ohlc_violations(row)
    if problems:
        _, template, values = problems[0]
        raise ValidationError.from_exception_data(
            "Candle", [InitErrorDetails(type=PydanticCustomError("ohlc_range", template, values), loc=(), input=raw)]
        )
    return candle


class PredictionRequest(BaseModel):
    """One window of candles for one symbol on one exchange, oldest first: the seed's ``PredictionRequest``."""

    model_config = _STRICT

    symbol: str = Field(
        pattern=SYMBOL_PATTERN,
        max_length=SYMBOL_MAX_LENGTH,
        description="Instrument symbol in upper case as the exchange writes it, e.g. 'BTC/USDT', "
        "'1000PEPE/USDT', 'BRK.B', '^GSPC'.",
        examples=["BTC/USDT"],
    )
    exchange: str = Field(
        description="Exchange the candles come from; one of the service's configured exchanges "
        "(default: binance, coinbase, kraken, bybit, okx).",
        json_schema_extra={"enum": list(DEFAULT_EXCHANGES)},
        examples=["binance"],
    )
    # Candles are TypedDicts, not models: validated in Rust without building 60 Python objects per request.
    sequence: list[Candle] = Field(
        min_length=WINDOW_LENGTH,
        max_length=WINDOW_LENGTH,
        description=f"Exactly {WINDOW_LENGTH} candles in strictly increasing time order, with "
        "low <= open, close <= high on each.",
    )
    _window: npt.NDArray[np.float32] = PrivateAttr()

    @field_validator("exchange")
    @classmethod
    def _check_exchange(cls, value: str, info: ValidationInfo) -> str:
        return check_exchange(value, info)

    @field_validator("sequence")
    @classmethod
    def _check_order(cls, points: list[Candle]) -> list[Candle]:
        for i in range(1, len(points)):
            if points[i]["timestamp"] <= points[i - 1]["timestamp"]:
                raise PydanticCustomError(
                    "time_order",
                    "Sequence must be chronologically ordered. Point {i} ({t}) <= Point {j} ({s})",
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
            [(c["open"], c["high"], c["low"], c["close"], c["volume"]) for c in self.sequence], dtype=np.float64
        )  # (60, 5)
        problems = ohlc_violations(candles)
        if problems:
            raise ValidationError.from_exception_data(
                "PredictionRequest",
                [
                    InitErrorDetails(
                        type=PydanticCustomError("ohlc_range", template, values),
                        loc=("sequence", row),
                        input=self.sequence[row],
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

    @property
    def closes(self) -> list[float]:
        """The close prices as sent (float64): the seed's risk formulas read these."""
        return [c["close"] for c in self.sequence]


class StreamMessage(BaseModel):
    """One message of the ``/stream`` WebSocket: 1-60 new candles of one symbol on one exchange, oldest first.

    The field rules are a request's; the cross-field rules (low <= open, close <= high, timestamps strictly after
    the stored window's last one) need the connection's state and run in `runtime.streams`.
    """

    model_config = _STRICT

    symbol: str = Field(pattern=SYMBOL_PATTERN, max_length=SYMBOL_MAX_LENGTH, examples=["BTC/USDT"])
    exchange: str = Field(examples=["binance"])
    candles: list[Candle] = Field(min_length=1, max_length=WINDOW_LENGTH)

    @field_validator("exchange")
    @classmethod
    def _check_exchange(cls, value: str, info: ValidationInfo) -> str:
        return check_exchange(value, info)


class BatchPredictionRequest(BaseModel):
    """Up to 100 windows; results come back as a list, in request order (the seed's ``BatchPredictionRequest``)."""

    model_config = _STRICT

    requests: list[PredictionRequest] = Field(min_length=1, max_length=MAX_BATCH_REQUESTS)


class ClassProbabilities(BaseModel):
    model_config = ConfigDict(frozen=True)

    sell: float = Field(ge=0, le=1)
    hold: float = Field(ge=0, le=1)
    buy: float = Field(ge=0, le=1)


class SignalPrediction(BaseModel):
    """The seed's ``SignalPrediction``; `request_id`, `precision` and `provider` are the service's additions."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    signal: Signal = Field(description="Arg-max class.")
    confidence: float = Field(ge=0, le=1, description="Probability of the predicted class.")
    probabilities: ClassProbabilities
    symbol: str
    exchange: str
    model_version: str
    inference_time_ms: float = Field(ge=0, description="Model compute time for the run this window was in.")
    timestamp: datetime = Field(description="When the server produced the prediction (UTC).")
    request_id: str = Field(description="The X-Request-Id of the HTTP request (suffixed -i in a batch).")
    precision: Literal["int8", "fp32"] = Field(description="Precision of the model that ran.")
    provider: str = Field(description="onnxruntime execution provider that ran the model: 'cpu' or 'cuda'.")


class FmeaBreakdown(BaseModel):
    """Failure-mode-and-effects view of the same window (each factor 1-10, RPN = S x O x D): the service's
    addition, for explaining a signal; the seed's `risk_score` and `risk_level` do not depend on it."""

    model_config = ConfigDict(frozen=True)

    severity: int = Field(ge=1, le=10, description="How much a wrong signal would cost: window volatility.")
    occurrence: int = Field(ge=1, le=10, description="How likely the signal is wrong: model uncertainty.")
    detection: int = Field(ge=1, le=10, description="How hard a bad input is to notice: volume/gap anomalies.")
    risk_priority_number: int = Field(ge=1, le=1000, description="severity x occurrence x detection.")
    risk_level: RiskLevel
    log_volatility: float = Field(ge=0, description="Standard deviation of close-to-close log returns.")
    factors: list[str] = Field(description="Human-readable reasons behind the scores.")


class RiskAssessment(BaseModel):
    """The seed's ``RiskAssessment.from_signal``: confidence < 0.7 adds 2, volatility > 0.05 adds 3, trend
    strength < 0.3 adds 1.5; level low < 2 <= medium < 4 <= high < 7 <= critical."""

    model_config = ConfigDict(frozen=True)

    risk_score: float = Field(ge=0, le=10)
    risk_level: RiskLevel
    factors: list[str]
    recommendation: str
    volatility: float = Field(ge=0, description="The seed's calculate_volatility: std of close-to-close returns.")
    trend_strength: float = Field(
        ge=0, le=1, description="The seed's calculate_trend_strength: |net move| / path length of the closes."
    )
    fmea: FmeaBreakdown


class BatchRun(BaseModel):
    model_config = ConfigDict(frozen=True)

    run: int = Field(ge=0, description="Number of the model run in this server process.")
    size: int = Field(ge=1, description="Windows computed in that run.")


class Audit(BaseModel):
    """What computed the answer, so `python -m runtime replay` can recompute it bit for bit (the service's
    addition)."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    model_sha256: str = Field(description="sha256 of the ONNX file that computed the probabilities.")
    window_sha256: str = Field(
        description="sha256 of the exact float32 [60, 5] window fed to the model (little-endian bytes)."
    )
    batch: BatchRun | None = Field(
        default=None,
        description="Only with EDGE_BATCH_INVARIANT=false, where the answer depends on its batch: the run it was in.",
    )


class PredictionResponse(BaseModel):
    """The seed's ``PredictionResponse``; ``/predict/batch`` answers a list of these."""

    model_config = ConfigDict(frozen=True)

    prediction: SignalPrediction
    risk: RiskAssessment
    audit: Audit


class ErrorDetail(BaseModel):
    """One problem, as the seed's validation handler reports it."""

    field: str = Field(description="Dotted path to the offending value, e.g. 'body.sequence.3.high'.")
    message: str
    type: str = Field(description="Stable rule name, e.g. 'greater_than_equal', 'literal_error', 'ohlc_range'.")


class ErrorResponse(BaseModel):
    """The one error shape of the service (a 422 is the seed's: ``code`` is ``VALIDATION_FAILED``)."""

    error: str = Field(description="Human-readable summary.")
    code: str = Field(description="Stable machine-readable code, e.g. VALIDATION_FAILED.")
    details: list[ErrorDetail] = Field(default_factory=list)
    request_id: str | None = None


class ReloadRequest(BaseModel):
    """Body of ``POST /admin/reload`` (optional): which model version to switch to."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    version: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
