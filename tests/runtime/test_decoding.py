"""The fast body decoder (msgspec) accepts only what the Pydantic schema accepts, with the same values.

A differential property on generated bodies that sit on the boundary between the two decoders (symbols in and
out of `SYMBOL_PATTERN`, exchanges in and out of the configured list, timestamp spellings and sub-microsecond
steps, numbers as strings, booleans, NaN/Infinity tokens, prices at and past their bounds, OHLC rules broken by
one ulp, extra, missing and duplicate keys, 59/61 candles, batches of 0/1/100/101 requests):

* whatever the fast path accepts on its own, `PredictionRequest` accepts with the same symbol, exchange, float32
  window (bit for bit), closes (float64, bit for bit) and last timestamp (exactly, unless a timestamp has more
  than 6 fractional digits: msgspec rounds the 7th, Pydantic truncates it, so the fast path's can be 1 µs later);
* whatever the fast path hands over, `decode_prediction` answers exactly what Pydantic answers: the same window
  or the same errors.

The property mixes edits at random; tables below also try every value of each dimension alone on an otherwise
valid body. "The fast path on its own" is `decode_prediction` with Pydantic's entry points replaced by a stub
that raises.
Hypothesis runs under its built-in ``ci`` profile on CI (derandomized, no database), so every property here
sets only `max_examples` and `deadline`.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from unittest import mock

import numpy as np
import pytest
from conftest import market_windows, window_to_payload
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from runtime.constants import MAX_BATCH_REQUESTS, WINDOW_LENGTH
from runtime.decoding import Window, decode_batch, decode_prediction
from runtime.schemas import (
    DEFAULT_EXCHANGES,
    PRICE_MAX,
    PRICE_MIN,
    VOLUME_MAX,
    BatchPredictionRequest,
    PredictionRequest,
)

BASE = window_to_payload(market_windows(1, seed=5)[0], "BTC/USDT")
START = datetime(2024, 1, 1, tzinfo=UTC)  # BASE's candle i opens at START + i days
PRICES = ("open", "high", "low", "close")
FIELDS = (*PRICES, "volume")
PROPERTY = settings(deadline=None)

#: The configured lists a deployment might pass (EDGE_EXCHANGES), in the order its error message names them.
EXCHANGE_LISTS = [DEFAULT_EXCHANGES, ("nyse", "cme"), ("binance",), ("kraken", "nyse", "lse.l")]
#: The seed's pairs and the forms exchanges write.
VALID_SYMBOLS = [
    "BTC/USDT", "1000PEPE/USDT", "BRK.B", "^GSPC", "ES=F", "BTC-PERP", "A", "A" * 24, "A" * 24 + "/" + "B" * 23,
]  # fmt: skip
SYMBOLS = [
    *VALID_SYMBOLS,
    # refused: lower case, whitespace, too long, stray separators, look-alikes
    "btc/usdt", "Btc/USDT", "BTC/usdt", "BTC/USDT\n", "BTC/USDT ", " BTC/USDT", "BTC /USDT", "", "A" * 25,
    "A" * 24 + "/" + "B" * 24, "A" * 49, "^", "^^GSPC", "A/B/C", "A/", "/A", "ÄPPL",
    "\uff22\uff34\uff23/USDT", "BTC/USDT\x00", "İ", "BTC\\USDT",
]  # fmt: skip
#: Raw JSON for a symbol: escapes that decode to a valid symbol, and values of the wrong type.
RAW_SYMBOLS = ['"\\u0042TC/USDT"', '"BTC\\/USDT"', '"BTC/USDT\\n"', "null", "1", "[]", '{"x":1}', "true"]
EXCHANGES = [
    "binance", "coinbase", "kraken", "bybit", "okx", "nyse", "cme", "lse.l", "Binance", "BINANCE", "binance ",
    " binance", "binance\n", "", "ftx", "x" * 300, "nyse\x00",
]  # fmt: skip
RAW_EXCHANGES = ['"\\u0062inance"', '"ny\\u0073e"', "null", "1", '["binance"]', "false"]
NUMBERS = [
    "1", "1.5", "1E2", "1e+2", "-0", "-0.0", "0", "-1", "1e-20", "9.999999999999999e-21", "1e20",
    "1.0000000000000002e20", "1e30", "1.0000000000000002e30", "100000000000000000000", "1" + "0" * 40, "1e-400",
    "-1e-400", "1e400", "4.9e-324", "2.2250738585072011e-308", "NaN", "Infinity", "-Infinity", '"NaN"',
    '"Infinity"', '"1.5"', '"1e2"', '" 1.5"', '"abc"', '""', "true", "false", "null", "[]", "{}", "[1.5]",
]  # fmt: skip
#: Timestamp spellings of an aware instant `t` (raw JSON text): same instant, other instant, or not one at all.
SPELLINGS: dict[str, Callable[[datetime], str]] = {
    "iso": lambda t: json.dumps(t.isoformat()),
    "z": lambda t: t.strftime('"%Y-%m-%dT%H:%M:%SZ"'),
    "lower-t-z": lambda t: t.strftime('"%Y-%m-%dt%H:%M:%Sz"'),
    "space": lambda t: t.strftime('"%Y-%m-%d %H:%M:%SZ"'),
    "compact-offset": lambda t: t.strftime('"%Y-%m-%dT%H:%M:%S+0000"'),
    "minus-zero": lambda t: t.strftime('"%Y-%m-%dT%H:%M:%S-00:00"'),
    "millis": lambda t: t.strftime('"%Y-%m-%dT%H:%M:%S.250Z"'),
    "micros": lambda t: t.strftime('"%Y-%m-%dT%H:%M:%S.000001Z"'),
    "7-digits": lambda t: t.strftime('"%Y-%m-%dT%H:%M:%S.9999995Z"'),
    "9-digits": lambda t: t.strftime('"%Y-%m-%dT%H:%M:%S.123456789Z"'),
    "plus-14": lambda t: json.dumps(t.astimezone(timezone(timedelta(hours=14))).isoformat()),
    "minus-12": lambda t: json.dumps(t.astimezone(timezone(timedelta(hours=-12))).isoformat()),
    "plus-0545": lambda t: json.dumps(t.astimezone(timezone(timedelta(hours=5, minutes=45))).isoformat()),
    "naive": lambda t: json.dumps(t.replace(tzinfo=None).isoformat()),
    "date-only": lambda t: t.strftime('"%Y-%m-%d"'),
    "no-seconds": lambda t: t.strftime('"%Y-%m-%dT%H:%MZ"'),
    "comma-fraction": lambda t: t.strftime('"%Y-%m-%dT%H:%M:%S,5Z"'),
    "hour-only-offset": lambda t: t.strftime('"%Y-%m-%dT%H:%M:%S+01"'),
    "offset-24": lambda t: t.strftime('"%Y-%m-%dT%H:%M:%S+24:00"'),
    "leap-second": lambda t: t.strftime('"%Y-%m-%dT23:59:60Z"'),
    "hour-24": lambda t: t.strftime('"%Y-%m-%dT24:00:00Z"'),
    "unix-int": lambda t: str(int(t.timestamp())),
    "unix-float": lambda t: f"{t.timestamp() + 0.5}",
    "unix-string": lambda t: f'"{int(t.timestamp())}"',
    "padded": lambda t: t.strftime('" %Y-%m-%dT%H:%M:%SZ"'),
    "null": lambda t: "null",
    "true": lambda t: "true",
}
#: A fractional second with more than microsecond digits: msgspec rounds it, Pydantic truncates it.
SUB_MICRO = re.compile(rb"\d\d:\d\d[.,]\d{7}")


def _dump(body: Any) -> str:
    return json.dumps(body, separators=(",", ":"))


BASE_TEXT = _dump(BASE)


class _Raw:
    """Placeholders for raw JSON text that `json.dumps` cannot write (tokens, duplicate keys, odd spellings)."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        key = f"__RAW{len(self.tokens)}__"
        self.tokens[key] = text
        return key

    def render(self, text: str) -> str:
        for key, value in self.tokens.items():
            text = text.replace(f'"{key}"', value)
        return text


def _sub_micro_times(draw: st.DrawFn) -> list[str]:
    """60 timestamps a few hundred nanoseconds apart, with 7 or 9 fractional digits (where the decoders round
    differently) or 6 (where they agree), in one offset."""
    step_ns = draw(st.sampled_from([0, 100, 400, 500, 900, 1000, 1400, 1500, 1999, 2000, 2500, 3000, 10**9]))
    jitter = draw(st.sampled_from([0, 300, 600]))
    digits = draw(st.sampled_from([6, 7, 9]))
    base_ns = draw(st.integers(0, 10**9 - 1))
    out = []
    for k in range(WINDOW_LENGTH):
        sec, frac = divmod(base_ns + k * step_ns + (jitter if k % 2 else 0), 10**9)
        t = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=sec)
        out.append(t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{frac:09d}"[:digits] + "Z")
    return out


def _edit(draw: st.DrawFn, body: dict[str, Any], raw: _Raw) -> None:
    """One edit drawn from the places where the two decoders could differ."""
    sequence = body.get("sequence")
    candles = sequence if isinstance(sequence, list) and all(isinstance(c, dict) for c in sequence) else []
    n = len(candles)
    i = draw(st.integers(0, max(n - 1, 0)))
    edit = draw(
        st.sampled_from(
            ["symbol", "exchange", "timestamp", "order", "sub_micro", "number", "scale", "ohlc", "extra", "missing",
             "length", "duplicate"]
        )
    )  # fmt: skip
    if edit == "symbol":
        body["symbol"] = draw(st.sampled_from(SYMBOLS) | st.sampled_from(RAW_SYMBOLS).map(raw))
    elif edit == "exchange":
        body["exchange"] = draw(st.sampled_from(EXCHANGES) | st.sampled_from(RAW_EXCHANGES).map(raw))
    elif not candles:
        body["sequence"] = draw(st.sampled_from([None, {}, "x", 60, [None]]))
    elif edit == "timestamp":
        # One candle or all of them respelled; the instants stay a day apart unless the spelling moves them.
        spelling = SPELLINGS[draw(st.sampled_from(sorted(SPELLINGS)))]
        targets = range(n) if draw(st.booleans()) else [i]
        for j in targets:
            candles[j]["timestamp"] = raw(spelling(START + timedelta(days=j)))
    elif edit == "order" and n > 1:
        j = i - 1 if i > 0 else 1
        how = draw(st.sampled_from(["equal", "swap", "same-instant-other-offset", "one-microsecond"]))
        earlier = START + timedelta(days=min(i, j))
        if how == "equal":
            candles[max(i, j)]["timestamp"] = candles[min(i, j)]["timestamp"]
        elif how == "swap":
            candles[i]["timestamp"], candles[j]["timestamp"] = candles[j]["timestamp"], candles[i]["timestamp"]
        elif how == "same-instant-other-offset":
            candles[max(i, j)]["timestamp"] = earlier.astimezone(timezone(timedelta(hours=-3))).isoformat()
        else:
            candles[max(i, j)]["timestamp"] = (earlier + timedelta(microseconds=1)).isoformat()
    elif edit == "sub_micro":
        for c, t in zip(candles, _sub_micro_times(draw), strict=False):
            c["timestamp"] = t
    elif edit == "number":
        field = draw(st.sampled_from(FIELDS))
        value = candles[i].get(field)
        value = value if isinstance(value, float) else 1.5  # an earlier edit may have respelled it already
        spelled = draw(
            st.sampled_from(NUMBERS)
            | st.sampled_from([f'"{value!r}"', format(value, ".25g"), format(value, ".40e"), f"{value!r}".upper()])
        )
        candles[i][field] = raw(spelled)
    elif edit == "scale":
        # Every price (or volume) scaled towards, onto and past its bounds: [1e-20, 1e20] and [0, 1e30].
        k = 10.0 ** draw(st.integers(-26, 26))
        scaled = PRICES if draw(st.booleans()) else ("volume",)
        for c in candles:
            for f in scaled:
                if isinstance(c.get(f), float):
                    c[f] = c[f] * k
        if draw(st.booleans()):
            candles[i].update(open=PRICE_MIN, high=PRICE_MIN, low=PRICE_MIN, close=PRICE_MIN)
        if draw(st.booleans()):
            candles[i].update(open=PRICE_MAX, high=PRICE_MAX, low=PRICE_MAX, close=PRICE_MAX)
    elif edit == "ohlc" and all(isinstance(candles[i].get(f), float) for f in PRICES):
        c = candles[i]
        rule = draw(st.sampled_from(["flat", "open=high", "close=low", "open>high", "close<low", "high<low"]))
        if rule == "flat":
            c.update(open=c["close"], high=c["close"], low=c["close"])
        elif rule == "open=high":
            c["open"] = c["high"]
        elif rule == "close=low":
            c["close"] = c["low"]
        elif rule == "open>high":  # by one float64 ulp: the same float32, a different float64
            c["open"] = float(np.nextafter(c["high"], np.inf))
        elif rule == "close<low":
            c["close"] = float(np.nextafter(c["low"], 0.0))
        else:
            c["high"], c["low"] = c["low"], c["high"]
    elif edit == "extra":
        key = draw(st.sampled_from(["ohlcv_data", "include_risk", "Symbol", "extra", "", "timestamp ", "vwap"]))
        (candles[i] if draw(st.booleans()) else body)[key] = draw(st.sampled_from([1, None, True, "x"]))
    elif edit == "missing":
        if draw(st.booleans()):
            body.pop(draw(st.sampled_from(["symbol", "exchange", "sequence"])), None)
        else:
            candles[i].pop(draw(st.sampled_from([*FIELDS, "timestamp"])), None)
    elif edit == "length":
        size = draw(st.sampled_from([WINDOW_LENGTH - 1, WINDOW_LENGTH + 1, 0, 1]))
        later = [dict(candles[-1], timestamp=(START + timedelta(days=WINDOW_LENGTH)).isoformat())]
        body["sequence"] = (candles + later)[:size]
    elif edit == "duplicate":  # both parsers keep a key's last value
        where = draw(st.sampled_from(["symbol", "exchange", "close"]))
        low, close = candles[i].get("low"), candles[i].get("close")
        if where == "close" and isinstance(low, float) and isinstance(close, float):
            candles[i]["close"] = raw(f'{low!r},"close":{close!r}')
        elif where != "close":
            first = draw(st.sampled_from(["ETH/USDT", "btc", "nyse", "ftx"]))
            body[where] = raw(f'"{first}","{where}":{json.dumps(body.get(where))}')


def _layout(draw: st.DrawFn, text: str) -> str:
    """Framing around a document: most bodies are left alone, some are not JSON at all."""
    return draw(
        st.sampled_from(
            [text] * 6 + [f" \n{text}\n", f"\ufeff{text}", f"{text},", f"{text}{{}}", text[:-1]]
        )
    )  # fmt: skip


@st.composite
def request_texts(draw: st.DrawFn, exchanges: tuple[str, ...], max_edits: int = 3) -> str:
    """A request valid under `exchanges` with 0..max_edits edits, as raw JSON text."""
    body = copy.deepcopy(BASE)
    body["exchange"] = draw(st.sampled_from(exchanges))
    raw = _Raw()
    for _ in range(draw(st.integers(0, max_edits))):
        _edit(draw, body, raw)
    spacing = draw(st.sampled_from([{"separators": (",", ":")}, {"separators": (", ", ": ")}, {"indent": 1}]))
    return raw.render(json.dumps(body, **spacing))


@st.composite
def request_bodies(draw: st.DrawFn) -> tuple[bytes, tuple[str, ...]]:
    exchanges = draw(st.sampled_from(EXCHANGE_LISTS))
    return _layout(draw, draw(request_texts(exchanges))).encode(), exchanges


@st.composite
def batch_bodies(draw: st.DrawFn) -> tuple[bytes, tuple[str, ...]]:
    """0, 1, a few, 100 or 101 requests; most copies of BASE, up to three edited; sometimes a broken envelope."""
    exchanges = draw(st.sampled_from(EXCHANGE_LISTS))
    size = draw(st.sampled_from([0, 1, 2, 3, MAX_BATCH_REQUESTS, MAX_BATCH_REQUESTS + 1]))
    texts = [_dump(dict(BASE, exchange=exchanges[-1]))] * size
    for _ in range(draw(st.integers(0, min(size, 3)))):
        texts[draw(st.integers(0, size - 1))] = draw(request_texts(exchanges, max_edits=2))
    envelope = draw(
        st.sampled_from(
            ['{"requests":[%s]}'] * 6
            + ['{"requests":[%s],"extra":1}', '{"Requests":[%s]}', '{"requests":[%s],"requests":[]}',
               '{"requests":{"0":[%s]}}', "[%s]", '{"requests":[%s,null]}', '{"requests":null}']
        )
    )  # fmt: skip
    return _layout(draw, envelope.replace("%s", ",".join(texts))).encode(), exchanges


# -- the two decoders -------------------------------------------------------------------------------------------
class _HandedOver(Exception):
    """The fast path gave the body to Pydantic."""


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise _HandedOver


@contextmanager
def _without_pydantic() -> Iterator[None]:
    with (
        mock.patch.object(PredictionRequest, "model_validate_json", _refuse),
        mock.patch.object(BatchPredictionRequest, "model_validate_json", _refuse),
    ):
        yield


Outcome = Window | list[Window] | list[dict[str, Any]]


def _errors(e: ValidationError) -> list[dict[str, Any]]:
    return e.errors(include_url=False, include_input=False)


def _schema(body: bytes, exchanges: tuple[str, ...], batch: bool) -> Outcome:
    """What the Pydantic schema alone makes of a body: its window(s), or its error list."""
    context = {"exchanges": exchanges}
    try:
        if batch:
            batch_request = BatchPredictionRequest.model_validate_json(body, context=context)
            return [Window.from_request(r) for r in batch_request.requests]
        return Window.from_request(PredictionRequest.model_validate_json(body, context=context))
    except ValidationError as e:
        return _errors(e)


def _decoder(body: bytes, exchanges: tuple[str, ...], batch: bool) -> Outcome:
    try:
        return decode_batch(body, exchanges) if batch else decode_prediction(body, exchanges)
    except ValidationError as e:
        return _errors(e)


def _fast_path(body: bytes, exchanges: tuple[str, ...], batch: bool) -> Window | list[Window] | None:
    """What the fast path makes of a body on its own; None when it hands the body over."""
    with _without_pydantic():
        try:
            return decode_batch(body, exchanges) if batch else decode_prediction(body, exchanges)
        except _HandedOver:
            return None


def _assert_same(got: Window, expected: Window, *, sub_micro: bool = False) -> None:
    assert got.symbol == expected.symbol and type(got.symbol) is str
    assert got.exchange == expected.exchange and type(got.exchange) is str
    assert got.window.dtype == np.float32 and got.window.shape == (WINDOW_LENGTH, 5)
    assert got.window.tobytes() == expected.window.tobytes(), "float32 windows differ (bit for bit)"
    assert all(type(c) is float for c in got.closes)
    assert np.array(got.closes).tobytes() == np.array(expected.closes).tobytes(), "closes differ (float64)"
    assert got.last_timestamp.utcoffset() == expected.last_timestamp.utcoffset()
    if sub_micro:
        # msgspec rounds a 7th fractional digit, Pydantic truncates it: the same instant to within 1 µs, never
        # earlier. Only the staleness check reads this value (its limit is in seconds).
        assert timedelta(0) <= got.last_timestamp - expected.last_timestamp <= timedelta(microseconds=1)
    else:
        assert got.last_timestamp == expected.last_timestamp


def _check_agreement(body: bytes, exchanges: tuple[str, ...], batch: bool) -> str:
    """The module's two properties for one body; returns which way it went (for Hypothesis' statistics)."""
    expected = _schema(body, exchanges, batch)
    fast = _fast_path(body, exchanges, batch)
    got = _decoder(body, exchanges, batch)
    sub_micro = SUB_MICRO.search(body) is not None
    if fast is not None:
        # What the fast path accepts, the schema accepts with the same values; the decoder answers the fast path.
        fast_windows = fast if isinstance(fast, list) else [fast]
        got_windows = got if isinstance(got, list) else [got]
        assert len(got_windows) == len(fast_windows)
        for g, f in zip(got_windows, fast_windows, strict=True):
            assert isinstance(g, Window)
            _assert_same(g, f)
        assert isinstance(expected, Window | list), expected
        expected_windows = expected if isinstance(expected, list) else [expected]
        assert all(isinstance(w, Window) for w in expected_windows), f"fast path accepts, schema refuses: {expected}"
        assert len(fast_windows) == len(expected_windows)
        for f, e in zip(fast_windows, expected_windows, strict=True):
            _assert_same(f, e, sub_micro=sub_micro)
    elif isinstance(expected, Window):
        # Handed over and accepted: the schema's own window.
        assert isinstance(got, Window), got
        _assert_same(got, expected)
    elif expected and isinstance(expected[0], Window):
        assert isinstance(got, list) and len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            _assert_same(g, e)
    else:
        assert got == expected, "a refused body must get exactly the schema's errors"
    accepted = isinstance(expected, Window) or bool(expected and isinstance(expected[0], Window))
    return f"fast path {'accepts' if fast is not None else 'hands over'}, schema {'accepts' if accepted else 'refuses'}"


# -- properties -------------------------------------------------------------------------------------------------
@settings(PROPERTY, max_examples=200)
@given(case=request_bodies())
def test_fast_path_agrees_with_the_schema(case: tuple[bytes, tuple[str, ...]]) -> None:
    event(_check_agreement(*case, batch=False))


@settings(PROPERTY, max_examples=60)
@given(case=batch_bodies())
def test_batch_fast_path_agrees_with_the_schema(case: tuple[bytes, tuple[str, ...]]) -> None:
    event(_check_agreement(*case, batch=True))


@st.composite
def canonical_bodies(draw: st.DrawFn) -> tuple[bytes, tuple[str, ...]]:
    """Valid, canonical bodies (numbers as numbers, RFC 3339 times at least 2 µs apart) over the whole range of
    prices, volumes, offsets and spacings the schema allows."""
    exchanges = draw(st.sampled_from(EXCHANGE_LISTS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = 10.0 ** draw(st.integers(-19, 19))
    close = np.clip(scale * np.exp(np.cumsum(rng.normal(0, draw(st.sampled_from([0, 1e-6, 0.02, 0.5])), 60))),
                    PRICE_MIN, PRICE_MAX)  # fmt: skip
    spread = rng.uniform(0, draw(st.sampled_from([0.0, 1e-12, 0.01, 0.3])), 60)
    low = np.maximum(close / (1 + spread), PRICE_MIN)
    high = np.minimum(close * (1 + spread), PRICE_MAX)
    open_ = np.clip(low + rng.random(60) * (high - low), low, high)
    volume = np.minimum(10.0 ** draw(st.integers(-3, 29)) * rng.pareto(1.5, 60), 1e30)
    volume[rng.random(60) < draw(st.sampled_from([0.0, 0.5, 1.0]))] = 0.0
    step_us = draw(st.sampled_from([2, 3, 1000, 60_000_000, 86_400_000_000]))
    offsets = [timezone(timedelta(minutes=15 * q)) for q in rng.integers(-48, 57, 3).tolist()]
    t = datetime(1970, 1, 2, tzinfo=UTC) + timedelta(seconds=int(rng.integers(0, 4_000_000_000)))
    rows = []
    utc = draw(st.sampled_from(["Z", "+00:00"]))
    for k in range(WINDOW_LENGTH):
        t += timedelta(microseconds=step_us)
        rows.append({
            "timestamp": t.astimezone(offsets[k % 3]).isoformat().replace("+00:00", utc),
            "open": float(open_[k]), "high": float(high[k]), "low": float(low[k]), "close": float(close[k]),
            "volume": float(volume[k]),
        })  # fmt: skip
    symbol = draw(st.sampled_from(VALID_SYMBOLS))
    body = {"symbol": symbol, "exchange": draw(st.sampled_from(exchanges)), "sequence": rows}
    if draw(st.booleans()):
        body = dict(reversed(body.items()))  # key order is the client's business
    return json.dumps(body).encode(), exchanges


@settings(PROPERTY, max_examples=100)
@given(case=canonical_bodies())
def test_valid_canonical_bodies_take_the_fast_path(case: tuple[bytes, tuple[str, ...]]) -> None:
    """The speed-up is real only if well-formed bodies skip Pydantic: every one does, with the schema's values."""
    body, exchanges = case
    expected = _schema(body, exchanges, batch=False)
    assert isinstance(expected, Window), expected  # the generator makes only valid bodies
    fast = _fast_path(body, exchanges, batch=False)
    assert fast is not None, "a canonical valid body went through Pydantic"
    _assert_same(fast, expected)


# -- every spelling on its own ------------------------------------------------------------------------------------
# The property above mixes edits at random; these tables try each value of each dimension alone, on a body that is
# otherwise valid, so a rare value (a trailing newline, one 7th digit) is never left to chance.
def _with(raw_value: str, *path: str | int) -> bytes:
    body = copy.deepcopy(BASE)
    target: Any = body
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = "__VALUE__"
    return _dump(body).replace('"__VALUE__"', raw_value).encode()


@pytest.mark.parametrize("raw_symbol", [json.dumps(s) for s in SYMBOLS] + RAW_SYMBOLS)
def test_each_symbol_spelling_agrees(raw_symbol: str) -> None:
    _check_agreement(_with(raw_symbol, "symbol"), DEFAULT_EXCHANGES, batch=False)


@pytest.mark.parametrize("raw_exchange", [json.dumps(e) for e in EXCHANGES] + RAW_EXCHANGES)
@pytest.mark.parametrize("exchanges", EXCHANGE_LISTS, ids=lambda e: "|".join(e))
def test_each_exchange_agrees_under_each_configured_list(raw_exchange: str, exchanges: tuple[str, ...]) -> None:
    _check_agreement(_with(raw_exchange, "exchange"), exchanges, batch=False)


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_each_timestamp_spelling_agrees(spelling: str) -> None:
    spell = SPELLINGS[spelling]
    for i in (0, 30, WINDOW_LENGTH - 1):  # the last candle's timestamp is the one a Window keeps
        _check_agreement(_with(spell(START + timedelta(days=i)), "sequence", i, "timestamp"), DEFAULT_EXCHANGES, False)
    body = copy.deepcopy(BASE)
    for i, candle in enumerate(body["sequence"]):
        candle["timestamp"] = f"__T{i}__"
    text = _dump(body)
    for i in range(WINDOW_LENGTH):
        text = text.replace(f'"__T{i}__"', spell(START + timedelta(days=i)))
    _check_agreement(text.encode(), DEFAULT_EXCHANGES, batch=False)


@pytest.mark.parametrize("number", NUMBERS)
def test_each_number_spelling_agrees(number: str) -> None:
    for field in FIELDS:
        _check_agreement(_with(number, "sequence", 7, field), DEFAULT_EXCHANGES, batch=False)


def _ulp_up(x: float) -> float:
    return float(np.nextafter(x, np.inf))


def _ulp_down(x: float) -> float:
    return float(np.nextafter(x, 0.0))


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda c: c.update(open=c["close"], high=c["close"], low=c["close"]), id="flat"),
        pytest.param(lambda c: c.update(open=c["high"], close=c["low"]), id="on-the-bounds"),
        pytest.param(lambda c: c.update(open=_ulp_up(c["high"])), id="open-1-ulp-above-high"),
        pytest.param(lambda c: c.update(close=_ulp_down(c["low"])), id="close-1-ulp-below-low"),
        pytest.param(lambda c: c.update(low=_ulp_up(c["high"]), open=c["high"], close=c["high"]), id="low-1-ulp-above"),
        pytest.param(lambda c: c.update(high=c["low"], low=c["high"]), id="high-low-swapped"),
        pytest.param(lambda c: c.update(open=PRICE_MIN, high=PRICE_MIN, low=PRICE_MIN, close=PRICE_MIN), id="min"),
        pytest.param(lambda c: c.update(open=PRICE_MAX, high=PRICE_MAX, low=PRICE_MAX, close=PRICE_MAX), id="max"),
        pytest.param(lambda c: c.update(low=_ulp_down(PRICE_MIN)), id="low-1-ulp-below-min"),
        pytest.param(lambda c: c.update(high=_ulp_up(PRICE_MAX)), id="high-1-ulp-above-max"),
        pytest.param(lambda c: c.update(volume=0.0), id="no-volume"),
        pytest.param(lambda c: c.update(volume=-0.0), id="volume-minus-zero"),
        pytest.param(lambda c: c.update(volume=VOLUME_MAX), id="volume-max"),
        pytest.param(lambda c: c.update(volume=_ulp_up(VOLUME_MAX)), id="volume-1-ulp-above-max"),
    ],
)
def test_each_candle_boundary_agrees(edit: Callable[[dict[str, Any]], Any]) -> None:
    for i in (0, WINDOW_LENGTH - 1):
        body = copy.deepcopy(BASE)
        edit(body["sequence"][i])
        _check_agreement(_dump(body).encode(), DEFAULT_EXCHANGES, batch=False)


@pytest.mark.parametrize("step_ns", [100, 400, 500, 999, 1000, 1499, 1500, 1999, 2000, 2001, 2500])
@pytest.mark.parametrize("digits", [7, 9])
def test_each_sub_microsecond_step_agrees(step_ns: int, digits: int) -> None:
    for offset_ns in (0, 400, 500, 600, 999):
        body = copy.deepcopy(BASE)
        for k, candle in enumerate(body["sequence"]):
            sec, frac = divmod(offset_ns + k * step_ns, 10**9)
            t = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=sec)
            candle["timestamp"] = t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{frac:09d}"[:digits] + "Z"
        _check_agreement(_dump(body).encode(), DEFAULT_EXCHANGES, batch=False)


# -- examples ---------------------------------------------------------------------------------------------------
def test_canonical_body_never_reaches_pydantic() -> None:
    body = BASE_TEXT.encode()
    expected = Window.from_request(PredictionRequest.model_validate_json(body))
    with _without_pydantic():
        window = decode_prediction(body)
        first, second = decode_batch(_dump({"requests": [BASE, BASE]}).encode())
    for got in (window, first, second):
        _assert_same(got, expected)
    assert window.symbol == "BTC/USDT" and window.exchange == "binance"


@pytest.mark.parametrize(
    ("edit", "exchanges", "loc", "type_"),
    [
        pytest.param(lambda b: b.update(symbol="BTC/USDT\n"), DEFAULT_EXCHANGES, ("symbol",), "string_pattern_mismatch",
                     id="symbol-trailing-newline"),
        pytest.param(lambda b: b.update(symbol="btc/usdt"), DEFAULT_EXCHANGES, ("symbol",), "string_pattern_mismatch",
                     id="symbol-lower-case"),
        pytest.param(lambda b: b.update(exchange="nyse"), DEFAULT_EXCHANGES, ("exchange",), "literal_error",
                     id="exchange-not-listed"),
        pytest.param(lambda b: b.update(exchange="binance"), ("nyse", "cme"), ("exchange",), "literal_error",
                     id="exchange-not-in-custom-list"),
        pytest.param(lambda b: b["sequence"][3].update(high=1.0), DEFAULT_EXCHANGES, ("sequence", 3), "ohlc_range",
                     id="ohlc-rule"),
        pytest.param(lambda b: b["sequence"][7].update(volume=-1.0), DEFAULT_EXCHANGES, ("sequence", 7, "volume"),
                     "greater_than_equal", id="volume"),
        pytest.param(lambda b: b["sequence"][9].update(timestamp="2024-01-10T00:00:00"), DEFAULT_EXCHANGES,
                     ("sequence", 9, "timestamp"), "timezone_aware", id="naive-timestamp"),
        pytest.param(lambda b: b["sequence"][9].update(timestamp=b["sequence"][8]["timestamp"]), DEFAULT_EXCHANGES,
                     ("sequence",), "time_order", id="equal-timestamps"),
        pytest.param(lambda b: b.update(include_risk=True), DEFAULT_EXCHANGES, ("include_risk",), "extra_forbidden",
                     id="old-include-risk-field"),
        pytest.param(lambda b: b.update(ohlcv_data=b.pop("sequence")), DEFAULT_EXCHANGES, ("sequence",), "missing",
                     id="old-ohlcv-data-field"),
        pytest.param(lambda b: b["sequence"].pop(), DEFAULT_EXCHANGES, ("sequence",), "too_short", id="59-candles"),
    ],
)  # fmt: skip
def test_errors_are_the_schema_errors(
    edit: Callable[[dict[str, Any]], Any], exchanges: tuple[str, ...], loc: tuple[Any, ...], type_: str
) -> None:
    body = copy.deepcopy(BASE)
    edit(body)
    raw = _dump(body).encode()
    with pytest.raises(ValidationError) as fast:
        decode_prediction(raw, exchanges)
    with pytest.raises(ValidationError) as schema:
        PredictionRequest.model_validate_json(raw, context={"exchanges": exchanges})
    assert _errors(fast.value) == _errors(schema.value)
    assert any(tuple(err["loc"]) == loc and err["type"] == type_ for err in _errors(fast.value)), _errors(fast.value)


def test_exchange_error_names_the_configured_list() -> None:
    raw = _dump(dict(BASE, exchange="binance")).encode()
    with pytest.raises(ValidationError, match=r"Input should be 'nyse' or 'cme'") as e:
        decode_prediction(raw, ("nyse", "cme"))
    [err] = _errors(e.value)
    assert err["type"] == "literal_error" and err["loc"] == ("exchange",)
    assert decode_prediction(_dump(dict(BASE, exchange="cme")).encode(), ("nyse", "cme")).exchange == "cme"


def test_lenient_spellings_are_accepted_as_the_schema_accepts_them() -> None:
    """Numbers as strings are Pydantic's (lax) business: the fast path hands them over rather than refusing."""
    body = copy.deepcopy(BASE)
    body["sequence"][0]["volume"] = str(body["sequence"][0]["volume"])
    body["sequence"][1]["timestamp"] = int((START + timedelta(days=1)).timestamp())  # a Unix time is UTC
    raw = _dump(body).encode()
    assert _fast_path(raw, DEFAULT_EXCHANGES, batch=False) is None
    _assert_same(decode_prediction(raw), Window.from_request(PredictionRequest.model_validate_json(raw)))


def test_sub_microsecond_digits_round_in_the_fast_path_and_truncate_in_the_schema() -> None:
    """The one value the two paths may differ on, and by how much: the last timestamp, by at most 1 µs."""
    body = copy.deepcopy(BASE)
    body["sequence"][-1]["timestamp"] = (START + timedelta(days=59)).strftime("%Y-%m-%dT%H:%M:%S.9999995Z")
    raw = _dump(body).encode()
    fast = _fast_path(raw, DEFAULT_EXCHANGES, batch=False)
    expected = _schema(raw, DEFAULT_EXCHANGES, batch=False)
    assert isinstance(fast, Window) and isinstance(expected, Window)
    assert expected.last_timestamp.microsecond == 999_999
    _assert_same(fast, expected, sub_micro=True)


@pytest.mark.parametrize("size", [0, 1, MAX_BATCH_REQUESTS, MAX_BATCH_REQUESTS + 1])
def test_batch_sizes(size: int) -> None:
    raw = ('{"requests":[' + ",".join([BASE_TEXT] * size) + "]}").encode()
    if 1 <= size <= MAX_BATCH_REQUESTS:
        windows = decode_batch(raw)
        assert len(windows) == size and all(w.symbol == "BTC/USDT" for w in windows)
        assert _fast_path(raw, DEFAULT_EXCHANGES, batch=True) is not None
    else:
        with pytest.raises(ValidationError, match="too_short" if size == 0 else "too_long") as e:
            decode_batch(raw)
        assert [err["loc"] for err in _errors(e.value)] == [("requests",)]
