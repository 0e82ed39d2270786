"""The fast body decoder accepts only what the Pydantic schema accepts, with the same values; errors are Pydantic's.

The property runs on bodies that sit on the boundary between the two decoders: timestamp spellings, numbers as
strings or booleans, edge prices, symbols with a trailing newline, near-equal timestamps, duplicate keys.
"""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from conftest import market_windows, window_to_payload
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from runtime.decoding import Window, decode_batch, decode_prediction
from runtime.schemas import BatchPredictionRequest, PredictionRequest

BASE = window_to_payload(market_windows(1, seed=5)[0], "BTC/USDT")
FIELDS = ("open", "high", "low", "close", "volume")

TIMESTAMPS = [
    "2024-03-01T10:00:00Z", "2024-03-01T10:00:00+00:00", "2024-03-01T10:00:00+0000", "2024-03-01t10:00:00z",
    "2024-03-01 10:00:00Z", "2024-03-01T10:00:00.5Z", "2024-03-01T10:00:00.123456Z",
    "2024-03-01T10:00:00.1234567Z", "2024-03-01T10:00:00.9999999Z", "2024-03-01T10:00Z", "2024-03-01T10:00:00",
    "2024-03-01", "2024-03-01T10:00:00+14:00", "2024-03-01T10:00:00-12:00", "2024-03-01T10:00:00+24:00",
    "2024-03-01T10:00:00+23:59", "2024-03-01T24:00:00Z", "2024-03-01T23:59:60Z", "2024-02-30T10:00:00Z",
    "2024-03-01T10:00:00.Z", "2024-03-01T10:00:00,5Z", "20240301T100000Z", "2024-03-01T10:00:00+01",
    "  2024-03-01T10:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
]  # fmt: skip
NUMBERS = [
    "1", "1.5", "1E2", "1e-20", "1e20", "1.0000001e20", "9.99e-21", "0", "-0.0", "-1", "1e30", "1.0000001e30",
    "100000000000000000000", "1000000000000000000000000000000000000000", '"1.5"', '"abc"', "true", "false", "null",
    "[]", "{}", "1e400", "NaN", "Infinity",
]  # fmt: skip
SYMBOLS = ["AAPL", "BRK.B", "^GSPC", "1000PEPE/USDT", "AAPL\n", "aapl", "", "A" * 48, "A" * 49, "ÄPPL", "A/", "/A"]
INCLUDE_RISK = ["true", "false", '"true"', "1", "0", "null", '"yes"']


def _dump(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"))


@st.composite
def boundary_bodies(draw: st.DrawFn) -> bytes:
    """A valid body with one or two edits drawn from the spellings where the two decoders could differ."""
    body = copy.deepcopy(BASE)
    candles = body["ohlcv_data"]
    tokens: dict[str, str] = {}  # placeholder -> raw JSON text, for spellings json.dumps cannot write

    def raw(text: str) -> str:
        key = f"__RAW{len(tokens)}__"
        tokens[key] = text
        return key

    for _ in range(draw(st.integers(1, 2))):
        i = draw(st.integers(0, len(candles) - 1))
        edit = draw(
            st.sampled_from(
                ["timestamp", "number", "symbol", "include_risk", "near_equal", "extra", "missing", "length", "dup"]
            )
        )
        if edit == "timestamp":
            candles[i]["timestamp"] = draw(st.sampled_from(TIMESTAMPS))
        elif edit == "number":
            candles[i][draw(st.sampled_from(FIELDS))] = raw(draw(st.sampled_from(NUMBERS)))
        elif edit == "symbol":
            body["symbol"] = draw(st.sampled_from(SYMBOLS))
        elif edit == "include_risk":
            body["include_risk"] = raw(draw(st.sampled_from(INCLUDE_RISK)))
        elif edit == "near_equal" and i > 0:
            # Sub-microsecond steps: msgspec rounds the 7th digit, Pydantic truncates it.
            base = "2030-01-01T00:00:00.000000"
            step = draw(st.sampled_from(["4", "5", "6", "9"]))
            candles[i - 1]["timestamp"] = base + "1Z"
            candles[i]["timestamp"] = base + step + "Z"
            for j, c in enumerate(candles):
                if j < i - 1:
                    c["timestamp"] = f"2029-12-31T23:{j:02d}:00Z"
                elif j > i:
                    c["timestamp"] = f"2030-01-01T00:{j:02d}:00Z"
        elif edit == "extra":
            (candles[i] if draw(st.booleans()) else body)["extra"] = 1
        elif edit == "missing":
            candles[i].pop(draw(st.sampled_from([*FIELDS, "timestamp"])), None)
        elif edit == "length":
            if draw(st.booleans()):
                candles.pop()
            else:
                candles.append(dict(candles[-1], timestamp="2099-01-01T00:00:00Z"))
        elif edit == "dup":
            body["symbol"] = raw('"BTC/USDT","symbol":"ETH/USDT"')
    text = _dump(body)
    for key, value in tokens.items():
        text = text.replace(f'"{key}"', value)
    return text.encode()


def _reference(body: bytes) -> Window | list[Any]:
    """What the Pydantic schema alone makes of a body: its window, or its error list."""
    try:
        return Window.from_request(PredictionRequest.model_validate_json(body))
    except ValidationError as e:
        return e.errors(include_url=False, include_input=False)


def _assert_same(got: Window, expected: Window) -> None:
    assert got.symbol == expected.symbol
    assert got.include_risk is expected.include_risk
    assert got.window.dtype == np.float32 and got.window.shape == (60, 5)
    np.testing.assert_array_equal(got.window, expected.window)
    # msgspec rounds a 7th fractional digit, Pydantic truncates it: the same instant within 1 µs.
    assert abs(got.last_timestamp - expected.last_timestamp) <= timedelta(microseconds=1)


@settings(max_examples=400, deadline=None)
@given(body=boundary_bodies())
def test_fast_decoder_agrees_with_the_schema(body: bytes) -> None:
    expected = _reference(body)
    try:
        got: Window | list[Any] = decode_prediction(body)
    except ValidationError as e:
        got = e.errors(include_url=False, include_input=False)
    if isinstance(expected, Window):
        assert isinstance(got, Window), f"schema accepts, decoder refuses: {got}"
        _assert_same(got, expected)
    else:
        assert got == expected, "the decoder must refuse exactly as the schema does"


def test_canonical_body_never_reaches_pydantic(monkeypatch: pytest.MonkeyPatch) -> None:
    """The speed-up is real only if well-formed bodies skip the slow path: keep it that way."""
    body = _dump(BASE).encode()
    expected = Window.from_request(PredictionRequest.model_validate_json(body))

    def slow_path(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a canonical body went through Pydantic")

    monkeypatch.setattr(PredictionRequest, "model_validate_json", slow_path)
    monkeypatch.setattr(BatchPredictionRequest, "model_validate_json", slow_path)
    _assert_same(decode_prediction(body), expected)
    [first, second] = decode_batch(_dump({"requests": [BASE, BASE]}).encode())
    _assert_same(first, expected)
    _assert_same(second, expected)


@pytest.mark.parametrize(
    ("edit", "loc"),
    [
        pytest.param(lambda b: b.update(symbol="AAPL\n"), ("symbol",), id="symbol-trailing-newline"),
        pytest.param(lambda b: b["ohlcv_data"][3].update(high=1.0), ("ohlcv_data", 3), id="ohlc-rule"),
        pytest.param(lambda b: b["ohlcv_data"][7].update(volume=-1.0), ("ohlcv_data", 7, "volume"), id="volume"),
    ],
)
def test_errors_are_the_schema_errors(edit: Any, loc: tuple[Any, ...]) -> None:
    body = copy.deepcopy(BASE)
    edit(body)
    raw = _dump(body).encode()
    with pytest.raises(ValidationError) as fast:
        decode_prediction(raw)
    with pytest.raises(ValidationError) as schema:
        PredictionRequest.model_validate_json(raw)
    assert fast.value.errors(include_url=False, include_input=False) == schema.value.errors(
        include_url=False, include_input=False
    )
    assert any(tuple(err["loc"][: len(loc)]) == loc for err in fast.value.errors())


def test_lenient_spellings_are_accepted_as_the_schema_accepts_them() -> None:
    """Numbers as strings are Pydantic's (lax) business: the fast path hands them over rather than refusing."""
    body = copy.deepcopy(BASE)
    body["ohlcv_data"][0]["volume"] = str(body["ohlcv_data"][0]["volume"])
    raw = _dump(body).encode()
    _assert_same(decode_prediction(raw), Window.from_request(PredictionRequest.model_validate_json(raw)))


@settings(max_examples=60, deadline=None)
@given(bodies=st.lists(boundary_bodies(), min_size=1, max_size=3))
def test_batch_decoder_agrees_with_the_schema(bodies: list[bytes]) -> None:
    raw = b'{"requests":[' + b",".join(bodies) + b"]}"
    try:
        expected: list[Window] | list[Any] = [
            Window.from_request(r) for r in BatchPredictionRequest.model_validate_json(raw).requests
        ]
    except ValidationError as e:
        expected = e.errors(include_url=False, include_input=False)
    try:
        got: list[Window] | list[Any] = decode_batch(raw)
    except ValidationError as e:
        got = e.errors(include_url=False, include_input=False)
    if expected and isinstance(expected[0], Window):
        assert len(got) == len(expected) and all(isinstance(w, Window) for w in got)
        for g, e in zip(got, expected, strict=True):
            _assert_same(g, e)
    else:
        assert got == expected
