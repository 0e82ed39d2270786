"""Request bodies to validated windows: a fast path for well-formed bodies, Pydantic for everything else.

`runtime.schemas` is the contract: what it accepts is valid and its errors are the API's errors. Validating 60
timestamped candles through Pydantic costs about 85 µs per request, more than everything else on `/predict`
except the model. This module decodes the common case (canonical JSON: numbers as numbers, RFC 3339
timestamps) with msgspec, checks the same rules, and builds the model's float32 window in one pass.

The fast path only ever *accepts less*: any body it does not accept outright (malformed, broken rule, or merely
lenient input such as numbers sent as strings) goes through `PredictionRequest.model_validate_json`, which
either accepts it or raises the canonical `ValidationError`. So every error and every lenient acceptance is
Pydantic's own. `tests/runtime/test_decoding.py` checks, on generated bodies, that whatever the fast path
accepts Pydantic accepts with the same symbol, flag, window and last timestamp.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Container, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import msgspec
import numpy as np
import numpy.typing as npt
from msgspec import Meta

from runtime.constants import MAX_BATCH_REQUESTS, WINDOW_LENGTH
from runtime.errors import StaleWindow, detail
from runtime.schemas import (
    DEFAULT_EXCHANGES,
    PRICE_MAX,
    PRICE_MIN,
    SYMBOL_MAX_LENGTH,
    SYMBOL_PATTERN,
    VOLUME_MAX,
    BatchPredictionRequest,
    PredictionRequest,
    StreamMessage,
    ohlc_violations,
)
from runtime.types import Float32Array

#: `SYMBOL_PATTERN` as a full match: Python's ``$`` would also match before a trailing newline, Pydantic's not.
_SYMBOL = re.compile(SYMBOL_PATTERN.removeprefix("^").removesuffix("$"))
#: msgspec rounds sub-microsecond digits, Pydantic truncates them; candles closer than this go to Pydantic, so
#: the two can never disagree on whether timestamps strictly increase.
_MIN_STEP = timedelta(microseconds=2)

_Price = Annotated[float, Meta(ge=PRICE_MIN, le=PRICE_MAX)]
_Volume = Annotated[float, Meta(ge=0, le=VOLUME_MAX)]


class _Candle(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    timestamp: Annotated[datetime, Meta(tz=True)]
    open: _Price
    high: _Price
    low: _Price
    close: _Price
    volume: _Volume


class _Request(msgspec.Struct, forbid_unknown_fields=True):
    symbol: Annotated[str, Meta(max_length=SYMBOL_MAX_LENGTH)]
    exchange: str
    sequence: Annotated[list[_Candle], Meta(min_length=WINDOW_LENGTH, max_length=WINDOW_LENGTH)]


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    requests: Annotated[list[_Request], Meta(min_length=1, max_length=MAX_BATCH_REQUESTS)]


class _StreamMessage(msgspec.Struct, forbid_unknown_fields=True):
    symbol: Annotated[str, Meta(max_length=SYMBOL_MAX_LENGTH)]
    exchange: str
    candles: Annotated[list[_Candle], Meta(min_length=1, max_length=WINDOW_LENGTH)]


_decode_request = msgspec.json.Decoder(_Request).decode
_decode_stream = msgspec.json.Decoder(_StreamMessage).decode
_TIMESTAMP = operator.attrgetter("timestamp")
_decode_batch = msgspec.json.Decoder(_Batch).decode


@dataclass(frozen=True, slots=True)
class Window:
    """One validated request as the model and the response need it."""

    symbol: str
    exchange: str
    window: Float32Array  # (60, 5) in `FEATURES` order
    closes: list[float]  # the close prices as sent (float64): the seed's risk formulas read these
    last_timestamp: datetime  # open time of the newest candle (for the staleness check)

    @classmethod
    def from_request(cls, req: PredictionRequest) -> Window:
        return cls(req.symbol, req.exchange, req.window, req.closes, req.sequence[-1]["timestamp"])


def _accept(req: _Request, exchanges: Container[str]) -> Window | None:
    """The schema's rules on a decoded request; None when any fails (Pydantic then reports it)."""
    if req.exchange not in exchanges or _SYMBOL.fullmatch(req.symbol) is None:
        return None
    candles = req.sequence
    times = list(map(_TIMESTAMP, candles))
    # Strictly increasing, with the margin above; map() keeps the 59 steps out of the interpreter loop.
    if min(map(operator.sub, times[1:], times)) < _MIN_STEP:
        return None
    rows = np.array([(c.open, c.high, c.low, c.close, c.volume) for c in candles], dtype=np.float64)  # (60, 5)
    if ohlc_violations(rows):
        return None
    return Window(req.symbol, req.exchange, rows.astype(np.float32), rows[:, 3].tolist(), times[-1])


def decode_prediction(body: bytes, exchanges: tuple[str, ...] = DEFAULT_EXCHANGES) -> Window:
    """A `/predict` body → its window. Raises Pydantic's `ValidationError` for any invalid body.

    `exchanges` is the accepted list (``EDGE_EXCHANGES``), in the order the error message names them.
    """
    try:
        window = _accept(_decode_request(body), exchanges)
    except (msgspec.ValidationError, msgspec.DecodeError):
        window = None
    if window is None:
        req = PredictionRequest.model_validate_json(body, context={"exchanges": exchanges})
        return Window.from_request(req)
    return window


def decode_batch(body: bytes, exchanges: tuple[str, ...] = DEFAULT_EXCHANGES) -> list[Window]:
    """A `/predict/batch` body → its windows, in order. Raises Pydantic's `ValidationError` when invalid."""
    try:
        windows: Sequence[Window | None] = [_accept(r, exchanges) for r in _decode_batch(body).requests]
    except (msgspec.ValidationError, msgspec.DecodeError):
        windows = [None]
    if any(w is None for w in windows):
        batch = BatchPredictionRequest.model_validate_json(body, context={"exchanges": exchanges})
        return [Window.from_request(r) for r in batch.requests]
    return [w for w in windows if w is not None]


@dataclass(frozen=True, slots=True)
class StreamCandles:
    """One `/stream` message with its field rules checked; the cross-field rules are `runtime.streams`'."""

    symbol: str
    exchange: str
    timestamps: list[datetime]  # tz-aware, as sent
    rows: npt.NDArray[np.float64]  # (k, 5) in `FEATURES` order, 1 <= k <= 60


def decode_stream_message(frame: str | bytes, exchanges: tuple[str, ...] = DEFAULT_EXCHANGES) -> StreamCandles:
    """A `/stream` message → its candles. Raises Pydantic's `ValidationError` for any field-level problem.

    The same split as `decode_prediction`: msgspec for well-formed messages, `StreamMessage` (Pydantic) for
    everything else, so every error and every lenient acceptance is Pydantic's own.
    """
    try:
        msg = _decode_stream(frame)
    except (msgspec.ValidationError, msgspec.DecodeError):
        msg = None
    if msg is None or msg.exchange not in exchanges or _SYMBOL.fullmatch(msg.symbol) is None:
        checked = StreamMessage.model_validate_json(frame, context={"exchanges": exchanges})
        candles = checked.candles
        rows = np.array([(c["open"], c["high"], c["low"], c["close"], c["volume"]) for c in candles], dtype=np.float64)
        return StreamCandles(checked.symbol, checked.exchange, [c["timestamp"] for c in candles], rows)
    fast = msg.candles
    rows = np.array([(c.open, c.high, c.low, c.close, c.volume) for c in fast], dtype=np.float64)  # (k, 5)
    return StreamCandles(msg.symbol, msg.exchange, list(map(_TIMESTAMP, fast)), rows)


def check_fresh(reqs: list[Window], max_age_s: float) -> None:
    """`StaleWindow` (the seed's 422 shape) when a window's last candle is older than `max_age_s` (0: no limit)."""
    if max_age_s <= 0:
        return
    now = datetime.now(UTC)
    for i, req in enumerate(reqs):
        age = (now - req.last_timestamp).total_seconds()
        if age > max_age_s:
            loc: list[str | int] = ["sequence", WINDOW_LENGTH - 1, "timestamp"]
            raise StaleWindow(
                f"window is stale: last candle is {age:.0f} s old, the limit is {max_age_s:g} s",
                details=[
                    detail(
                        ["body", *loc] if len(reqs) == 1 else ["body", "requests", i, *loc],
                        f"last candle older than {max_age_s:g} s",
                        "stale_window",
                    )
                ],
            )
