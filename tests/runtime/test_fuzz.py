"""Over a real app: valid windows always score; every field of the seed's contract, broken in every way we could
think of, is a 4xx JSON error naming that field; anything else is a 4xx JSON error, never a 5xx; /ready stays 200.

Bounded for CI (2 cores): every property sets `max_examples` (at most 200) and the module runs in well under a
minute. Hypothesis uses its built-in ``ci`` profile on CI (derandomized, no example database); the settings here
only add to it.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import market_windows, window_to_payload
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.constants import MAX_BATCH_REQUESTS, N_CLASSES, WINDOW_LENGTH
from runtime.decoding import decode_prediction
from runtime.schemas import (
    DEFAULT_EXCHANGES,
    PRICE_MAX,
    PRICE_MIN,
    SYMBOL_MAX_LENGTH,
    SYMBOL_PATTERN,
    VOLUME_MAX,
    ErrorResponse,
)
from runtime.session import Model

JSON = {"content-type": "application/json"}
PRICES = ("open", "high", "low", "close")
FIELDS = (*PRICES, "volume")
# The client fixture lives for the whole property (one app, many examples): that is the point, not an accident.
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- strategies ---------------------------------------------------------------------------------------------------
#: Real-world UTC offsets run from -12:00 to +14:00, in 15-minute steps.
OFFSETS = [timezone(timedelta(minutes=15 * q)) for q in range(-12 * 4, 14 * 4 + 1)]


@st.composite
def candle_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    """60 valid candles. Hypothesis draws the window's character (price scale 1e-19..1e19, volatility, flat and
    zero-volume candles, spacing, how many UTC offsets are mixed); a drawn seed fills in the 60 rows, which keeps
    an example at ~1 ms instead of hundreds of draws each."""
    scale = 10 ** draw(st.floats(-19, 19))
    sigma = draw(st.sampled_from([0.0, 1e-6, 1e-3, 0.02, 0.1, 0.5]))  # log-return per candle; 0.5 = wild
    max_spread = draw(st.sampled_from([0.0, 1e-9, 0.01, 0.2, 2.0]))
    flat_share = draw(st.floats(0, 1))  # candles with open = high = low = close
    zero_volume_share = draw(st.sampled_from([0.0, 0.1, 0.5, 0.98, 1.0]))  # 1.0 = nothing traded at all
    volume_scale = 10 ** draw(st.floats(-3, 27))
    step = draw(st.sampled_from([1e-3, 1, 60, 3600, 86_400]))  # seconds between candles
    n_offsets = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))

    rng = np.random.default_rng(seed)
    # Clipping to the schema's bounds keeps low <= open, close <= high (it is monotone).
    close = np.clip(scale * np.exp(np.cumsum(rng.normal(0, sigma, WINDOW_LENGTH))), PRICE_MIN, PRICE_MAX)
    spread = rng.uniform(0, max_spread, WINDOW_LENGTH) * (rng.random(WINDOW_LENGTH) >= flat_share)
    low = np.clip(close / (1 + spread * rng.random(WINDOW_LENGTH)), PRICE_MIN, PRICE_MAX)
    high = np.clip(np.maximum(close * (1 + spread * rng.random(WINDOW_LENGTH)), close), PRICE_MIN, PRICE_MAX)
    open_ = np.clip(low + rng.random(WINDOW_LENGTH) * (high - low), low, high)
    volume = volume_scale * rng.pareto(1.5, WINDOW_LENGTH) * (rng.random(WINDOW_LENGTH) >= zero_volume_share)
    volume = np.minimum(volume, VOLUME_MAX)
    t0 = rng.integers(0, 4_000_000_000)  # 1970 .. 2096
    times = t0 + np.cumsum(step * rng.uniform(0.5, 1.5, WINDOW_LENGTH))  # strictly increasing
    tzs = [OFFSETS[k] for k in rng.choice(len(OFFSETS), n_offsets, replace=False)]
    return [
        {
            "timestamp": datetime.fromtimestamp(float(t), tz=tzs[i % n_offsets]).isoformat(),
            "open": float(o), "high": float(h), "low": float(lo), "close": float(c), "volume": float(v),
        }
        for i, (t, o, h, lo, c, v) in enumerate(zip(times, open_, high, low, close, volume, strict=True))
    ]  # fmt: skip


BASE = window_to_payload(market_windows(1, seed=11)[0], "BTC/USDT")

finite_bad_price = st.one_of(
    st.just(-0.0),
    st.floats(max_value=PRICE_MIN, exclude_max=True, allow_nan=False, allow_infinity=False),
    st.floats(min_value=PRICE_MAX, exclude_min=True, allow_nan=False, allow_infinity=False),
)
json_junk = st.one_of(
    st.none(), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)
)
symbols = st.sampled_from(["BTC/USDT", "1000PEPE/USDT", "BRK.B", "^GSPC", "ES=F", "BTC-PERP"])


def _not_a_symbol(s: str) -> bool:
    return re.fullmatch(SYMBOL_PATTERN, s) is None or len(s) > SYMBOL_MAX_LENGTH or s.endswith("\n")


@st.composite
def invalid_bodies(draw: st.DrawFn) -> tuple[str, tuple[str | int, ...], bytes]:
    """A valid request with exactly one rule broken: (rule, path of the field it breaks, raw JSON body)."""
    body = copy.deepcopy(BASE)
    candles = body["sequence"]
    i = draw(st.integers(0, WINDOW_LENGTH - 1))
    c = candles[i]
    rule = draw(st.sampled_from([
        "non_finite", "price_out_of_range", "negative_volume", "volume_too_large", "high_below_low", "open_outside",
        "close_outside", "naive_timestamp", "out_of_order", "wrong_length", "bad_symbol", "bad_exchange",
        "extra_field", "missing_field", "null_field", "wrong_type",
    ]))  # fmt: skip
    path: tuple[str | int, ...]
    if rule == "non_finite":
        # Python's json writes NaN/Infinity tokens; 1e400 is valid JSON that overflows a double.
        field = draw(st.sampled_from(FIELDS))
        token = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", '"NaN"', '"-inf"']))
        c[field] = "__TOKEN__"
        return rule, ("sequence", i, field), json.dumps(body).replace('"__TOKEN__"', token).encode()
    if rule == "price_out_of_range":
        field = draw(st.sampled_from(PRICES))
        c[field], path = draw(finite_bad_price), ("sequence", i, field)
    elif rule == "negative_volume":
        c["volume"] = draw(st.floats(max_value=-1e-300, allow_nan=False, allow_infinity=False))
        path = ("sequence", i, "volume")
    elif rule == "volume_too_large":
        c["volume"] = draw(st.floats(min_value=VOLUME_MAX, exclude_min=True, allow_infinity=False))
        path = ("sequence", i, "volume")
    elif rule == "high_below_low":
        c["high"] = c["low"] * draw(st.floats(0.01, 0.999999))
        path = ("sequence", i)
    elif rule in ("open_outside", "close_outside"):
        field = rule.split("_")[0]
        above = draw(st.booleans())
        c[field] = c["high"] * draw(st.floats(1.001, 100)) if above else c["low"] * draw(st.floats(0.01, 0.999))
        path = ("sequence", i)
    elif rule == "naive_timestamp":
        c["timestamp"] = datetime.fromisoformat(c["timestamp"]).replace(tzinfo=None).isoformat()
        path = ("sequence", i, "timestamp")
    elif rule == "out_of_order":
        j = draw(st.integers(0, WINDOW_LENGTH - 1).filter(lambda j: j != i))
        if draw(st.booleans()):
            candles[i]["timestamp"], candles[j]["timestamp"] = candles[j]["timestamp"], candles[i]["timestamp"]
        else:  # a duplicate time is out of order too
            candles[max(i, j)]["timestamp"] = candles[min(i, j)]["timestamp"]
        path = ("sequence",)
    elif rule == "wrong_length":
        n = draw(st.one_of(st.integers(0, WINDOW_LENGTH - 1), st.integers(WINDOW_LENGTH + 1, 3 * WINDOW_LENGTH)))
        extra = [copy.deepcopy(candles[-1]) for _ in range(max(0, n - WINDOW_LENGTH))]
        start = datetime.fromisoformat(candles[-1]["timestamp"])
        for k, e in enumerate(extra, 1):
            e["timestamp"] = (start + timedelta(days=k)).isoformat()
        body["sequence"], path = (candles + extra)[:n], ("sequence",)
    elif rule == "bad_symbol":
        body["symbol"] = draw(
            st.one_of(
                st.text(max_size=80), st.text(alphabet="ABCabc019/^.-=_ \n", max_size=60), st.just("A" * 49),
                symbols.map(str.lower), symbols.map(lambda s: s + "\n"),
            ).filter(_not_a_symbol)
        )  # fmt: skip
        path = ("symbol",)
    elif rule == "bad_exchange":
        body["exchange"] = draw(
            st.one_of(
                st.text(max_size=40),
                st.sampled_from(DEFAULT_EXCHANGES).map(str.upper),
                st.sampled_from(["nyse", "cme", "ftx", "binance ", "binance\n", "", "x" * 300]),
            ).filter(lambda s: s not in DEFAULT_EXCHANGES)
        )
        path = ("exchange",)
    elif rule == "extra_field":
        key = draw(st.text(min_size=1, max_size=12) | st.sampled_from(["ohlcv_data", "include_risk", "Symbol"]))
        top = draw(st.booleans())
        if key in (set(body) if top else set(c)):
            key = "x_" + key
        (body if top else c)[key] = draw(st.one_of(st.integers(), st.text(max_size=5), st.none()))
        path = (key,) if top else ("sequence", i, key)
    elif rule in ("missing_field", "null_field"):
        top = draw(st.booleans())
        key = draw(st.sampled_from(["symbol", "exchange", "sequence"] if top else ["timestamp", *FIELDS]))
        target = body if top else c
        if rule == "missing_field":
            del target[key]
        else:
            target[key] = None
        path = (key,) if top else ("sequence", i, key)
    else:  # wrong_type: JSON types that lax mode does not coerce into the field's type
        where = draw(st.sampled_from(["symbol", "exchange", "sequence", "candle", "timestamp", "candle_number"]))
        if where in ("symbol", "exchange"):
            finite = st.floats(allow_nan=False, allow_infinity=False)
            body[where], path = draw(st.one_of(st.integers(), finite, st.booleans(), json_junk)), (where,)
        elif where == "sequence":
            body["sequence"] = draw(
                st.one_of(st.integers(), st.text(max_size=5), st.dictionaries(st.text(max_size=3), st.integers()))
            )
            path = ("sequence",)
        elif where == "candle":
            candles[i] = draw(st.one_of(st.integers(), st.text(max_size=5), st.lists(st.floats(0.1, 10), max_size=6)))
            path = ("sequence", i)
        elif where == "timestamp":
            c["timestamp"] = draw(st.one_of(json_junk, st.text(alphabet="abcxyz:-", max_size=20), st.booleans()))
            path = ("sequence", i, "timestamp")
        else:
            field = draw(st.sampled_from(FIELDS))
            c[field] = draw(st.one_of(json_junk, st.text(alphabet="abcxyz", max_size=8)))
            path = ("sequence", i, field)
    return rule, path, json.dumps(body).encode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
#: Objects that look like requests: the real keys (and the old ones), holding anything.
request_like = st.dictionaries(
    st.sampled_from(["symbol", "exchange", "sequence", "requests", "ohlcv_data", "include_risk"]) | st.text(max_size=8),
    json_values,
    max_size=5,
)


# -- helpers ------------------------------------------------------------------------------------------------------
def _assert_error_shape(response: Any) -> dict[str, Any]:
    """The one error body: {error, code, details: [{field, message, type}], request_id}, as JSON."""
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.json()
    assert set(body) == {"error", "code", "details", "request_id"}, body
    ErrorResponse.model_validate(body)
    for d in body["details"]:
        assert set(d) == {"field", "message", "type"}, body
        assert all(isinstance(d[k], str) and d[k] for k in ("message", "type")), body
        assert isinstance(d["field"], str) and d["field"].split(".")[0] in ("body", "header"), body
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def _dotted(*parts: str | int) -> str:
    return ".".join(str(p) for p in parts)


def _assert_names_field(body: dict[str, Any], field: str, type_: str | None = None) -> None:
    """Some detail is about `field` (exactly, as the seed's handler writes it) with the expected rule name."""
    hits = [d for d in body["details"] if d["field"] == field]
    assert hits, f"no detail names {field!r}: {body['details']}"
    if type_ is not None:
        assert any(d["type"] == type_ for d in hits), f"{field!r} is not a {type_}: {body['details']}"


@pytest.fixture(scope="module", params=["int8", "fp32"])
def model(request: pytest.FixtureRequest, committed_model_dir: Path) -> Model:
    return Model.load(committed_model_dir, precision=request.param, provider="cpu", intra_op_threads=1)


@pytest.fixture
def client(make_client: Callable[..., Any]) -> Any:
    return make_client()


# -- (a) valid windows --------------------------------------------------------------------------------------------
@settings(FUZZ, max_examples=100)
@given(rows=candle_rows(), exchange=st.sampled_from(DEFAULT_EXCHANGES))
def test_any_valid_window_gives_finite_probabilities_summing_to_one(
    model: Model, rows: list[dict[str, Any]], exchange: str
) -> None:
    raw = json.dumps({"symbol": "1000PEPE/USDT", "exchange": exchange, "sequence": rows}).encode()
    window = decode_prediction(raw)  # the API's own parsing path
    probs = model.run(window.window[None])
    assert probs.shape == (1, N_CLASSES)
    assert np.isfinite(probs).all(), (probs, rows[-1])
    assert ((probs >= 0) & (probs <= 1 + 1e-6)).all(), probs
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@settings(FUZZ, max_examples=60)
@given(rows=candle_rows(), symbol=symbols, exchange=st.sampled_from(DEFAULT_EXCHANGES), batch=st.booleans())
def test_any_valid_window_is_a_200_over_http(
    client: Any, rows: list[dict[str, Any]], symbol: str, exchange: str, batch: bool
) -> None:
    """Risk and response encoding too: extreme but valid windows (prices 1e-20..1e20, zero volume) never 5xx."""
    request = {"symbol": symbol, "exchange": exchange, "sequence": rows}
    response = client.post(
        "/predict/batch" if batch else "/predict",
        content=json.dumps({"requests": [request, BASE]} if batch else request).encode(),
        headers=JSON,
    )
    assert response.status_code == 200, response.text[:500]
    [answer, *_] = response.json() if batch else [response.json()]
    prediction = answer["prediction"]
    assert (prediction["symbol"], prediction["exchange"]) == (symbol, exchange)
    assert math.isclose(sum(prediction["probabilities"].values()), 1.0, abs_tol=1e-5)
    assert 0 <= answer["risk"]["risk_score"] <= 10


# -- (b) one rule broken at a time --------------------------------------------------------------------------------
@settings(FUZZ, max_examples=150)
@given(case=invalid_bodies(), batch=st.booleans())
def test_any_single_broken_rule_is_a_422_naming_the_field(
    client: Any, case: tuple[str, tuple[str | int, ...], bytes], batch: bool
) -> None:
    rule, path, raw = case
    prefix: tuple[str | int, ...] = ("body", "requests", 1) if batch else ("body",)
    if batch:  # the same defect inside /predict/batch, next to a valid window
        raw = b'{"requests":[' + json.dumps(BASE).encode() + b"," + raw + b"]}"
    response = client.post("/predict/batch" if batch else "/predict", content=raw, headers=JSON)
    assert response.status_code == 422, (rule, response.status_code, response.text[:500])
    body = _assert_error_shape(response)
    assert body["code"] == "VALIDATION_FAILED" and body["error"] == "Validation Error", body
    _assert_names_field(body, _dotted(*prefix, *path))
    assert all(d["field"].startswith(_dotted(*prefix)) for d in body["details"]), body  # nothing else is blamed
    assert client.get("/ready").status_code == 200


# -- (c) the seed's contract, field by field ----------------------------------------------------------------------
def _set(path: tuple[str | int, ...], value: Any) -> Callable[[dict[str, Any]], Any]:
    def edit(body: dict[str, Any]) -> None:
        target: Any = body
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return edit


def _drop(path: tuple[str | int, ...]) -> Callable[[dict[str, Any]], Any]:
    def edit(body: dict[str, Any]) -> None:
        target: Any = body
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return edit


def _resize(n: int) -> Callable[[dict[str, Any]], Any]:
    def edit(body: dict[str, Any]) -> None:
        seq = body["sequence"]
        last = datetime.fromisoformat(seq[-1]["timestamp"])
        later = [dict(seq[-1], timestamp=(last + timedelta(days=k)).isoformat()) for k in range(1, n + 1)]
        body["sequence"] = (seq + later)[:n]

    return edit


def _candle(**values: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda body: body["sequence"][3].update(values)


def _swap(i: int, j: int) -> Callable[[dict[str, Any]], Any]:
    def edit(body: dict[str, Any]) -> None:
        seq = body["sequence"]
        seq[i]["timestamp"], seq[j]["timestamp"] = seq[j]["timestamp"], seq[i]["timestamp"]

    return edit


C3 = ("sequence", 3)
#: How each kind of field breaks: (id, value, expected rule name). `NaN` and `inf` floats go out as the JSON
#: tokens Python writes (Pydantic reads them, then refuses them as non-finite).
PRICE_BREAKS = [
    ("null", None, "float_type"), ("string", "abc", "float_parsing"), ("empty-string", "", "float_parsing"),
    ("list", [1.0], "float_type"), ("object", {"v": 1.0}, "float_type"), ("zero", 0, "greater_than_equal"),
    ("negative", -5.0, "greater_than_equal"), ("below-1e-20", 1e-21, "greater_than_equal"),
    ("above-1e20", 1e21, "less_than_equal"), ("NaN-token", math.nan, "finite_number"),
    ("Infinity-token", math.inf, "finite_number"), ("NaN-string", "NaN", "finite_number"),
    ("inf-string", "-inf", "finite_number"),
]  # fmt: skip
VOLUME_BREAKS = [
    ("null", None, "float_type"), ("string", "lots", "float_parsing"), ("list", [], "float_type"),
    ("negative", -1.0, "greater_than_equal"), ("above-1e30", 1e31, "less_than_equal"),
    ("NaN-token", math.nan, "finite_number"), ("Infinity-token", math.inf, "finite_number"),
]  # fmt: skip
TIMESTAMP_BREAKS = [
    ("null", None, "datetime_type"), ("bool", True, "datetime_type"), ("list", [], "datetime_type"),
    ("empty", "", "datetime_from_date_parsing"), ("words", "yesterday", "datetime_from_date_parsing"),
    ("naive", "2024-01-04T00:00:00", "timezone_aware"), ("month-13", "2024-13-04T00:00:00Z", None),
    ("day-32", "2024-01-32T00:00:00Z", None), ("hour-25", "2024-01-04T25:00:00Z", None),
    ("offset-25h", "2024-01-04T00:00:00+25:00", None), ("too-long", "2024-01-04T00:00:00Z" + "0" * 300, None),
]  # fmt: skip
STRING_BREAKS = [
    ("null", None, "string_type"), ("number", 42, "string_type"), ("bool", False, "string_type"),
    ("list", ["x"], "string_type"), ("object", {"x": 1}, "string_type"),
]  # fmt: skip

#: (id, edit of a valid request, path of the field it breaks, expected rule name or None for "any").
CONTRACT: list[Any] = [
    *[pytest.param(_set(("symbol",), v), ("symbol",), t, id=f"symbol-{k}") for k, v, t in STRING_BREAKS],
    pytest.param(_drop(("symbol",)), ("symbol",), "missing", id="symbol-missing"),
    pytest.param(_set(("symbol",), ""), ("symbol",), "string_pattern_mismatch", id="symbol-empty"),
    pytest.param(_set(("symbol",), "A" * 49), ("symbol",), "string_too_long", id="symbol-too-long"),
    pytest.param(_set(("symbol",), "A" * 300), ("symbol",), "string_too_long", id="symbol-far-too-long"),
    pytest.param(_set(("symbol",), "btc/usdt"), ("symbol",), "string_pattern_mismatch", id="symbol-lower-case"),
    pytest.param(_set(("symbol",), "BTC/USDT\n"), ("symbol",), "string_pattern_mismatch", id="symbol-newline"),
    pytest.param(_set(("symbol",), "BTC USDT"), ("symbol",), "string_pattern_mismatch", id="symbol-space"),
    pytest.param(_set(("symbol",), "BTC/USDT/X"), ("symbol",), "string_pattern_mismatch", id="symbol-two-slashes"),
    *[pytest.param(_set(("exchange",), v), ("exchange",), t, id=f"exchange-{k}") for k, v, t in STRING_BREAKS],
    pytest.param(_drop(("exchange",)), ("exchange",), "missing", id="exchange-missing"),
    pytest.param(_set(("exchange",), ""), ("exchange",), "literal_error", id="exchange-empty"),
    pytest.param(_set(("exchange",), "ftx"), ("exchange",), "literal_error", id="exchange-unknown"),
    pytest.param(_set(("exchange",), "nyse"), ("exchange",), "literal_error", id="exchange-not-configured"),
    pytest.param(_set(("exchange",), "Binance"), ("exchange",), "literal_error", id="exchange-capitalised"),
    pytest.param(_set(("exchange",), "binance "), ("exchange",), "literal_error", id="exchange-padded"),
    pytest.param(_set(("exchange",), "x" * 300), ("exchange",), "string_too_long", id="exchange-too-long"),
    pytest.param(_drop(("sequence",)), ("sequence",), "missing", id="sequence-missing"),
    pytest.param(_set(("sequence",), None), ("sequence",), "list_type", id="sequence-null"),
    pytest.param(_set(("sequence",), "candles"), ("sequence",), "list_type", id="sequence-string"),
    pytest.param(_set(("sequence",), {"0": {}}), ("sequence",), "list_type", id="sequence-object"),
    pytest.param(_set(("sequence",), 60), ("sequence",), "list_type", id="sequence-number"),
    pytest.param(_resize(0), ("sequence",), "too_short", id="sequence-empty"),
    pytest.param(_resize(59), ("sequence",), "too_short", id="sequence-59"),
    pytest.param(_resize(61), ("sequence",), "too_long", id="sequence-61"),
    pytest.param(_resize(600), ("sequence",), "too_long", id="sequence-600"),
    pytest.param(_swap(10, 11), ("sequence",), "time_order", id="sequence-wrong-order"),
    pytest.param(_swap(0, 59), ("sequence",), "time_order", id="sequence-reversed-ends"),
    pytest.param(lambda b: b["sequence"].reverse(), ("sequence",), "time_order", id="sequence-newest-first"),
    pytest.param(_candle(timestamp="2024-01-03T00:00:00+00:00"), ("sequence",), "time_order",
                 id="sequence-equal-timestamps"),
    pytest.param(_candle(timestamp="2024-01-03T01:00:00+01:00"), ("sequence",), "time_order",
                 id="sequence-same-instant-other-offset"),
    pytest.param(_set(C3, None), C3, None, id="candle-null"),
    pytest.param(_set(C3, 7), C3, None, id="candle-number"),
    pytest.param(_set(C3, [1, 2, 2, 1, 5, 9]), C3, None, id="candle-array"),
    pytest.param(_set(C3, {}), (*C3, "timestamp"), "missing", id="candle-empty"),
    pytest.param(_candle(vwap=1.0), (*C3, "vwap"), "extra_forbidden", id="candle-extra-field"),
    pytest.param(_candle(Close=1.0), (*C3, "Close"), "extra_forbidden", id="candle-capitalised-field"),
    pytest.param(lambda b: b["sequence"][3].update(high=b["sequence"][3]["low"] / 2), C3, "ohlc_range",
                 id="candle-high-below-low"),
    pytest.param(lambda b: b["sequence"][3].update(open=b["sequence"][3]["high"] * 1.01), C3, "ohlc_range",
                 id="candle-open-above-high"),
    pytest.param(lambda b: b["sequence"][3].update(close=b["sequence"][3]["low"] * 0.99), C3, "ohlc_range",
                 id="candle-close-below-low"),
    pytest.param(_drop((*C3, "timestamp")), (*C3, "timestamp"), "missing", id="timestamp-missing"),
    *[pytest.param(_candle(timestamp=v), (*C3, "timestamp"), t, id=f"timestamp-{k}") for k, v, t in TIMESTAMP_BREAKS],
    *[pytest.param(_drop((*C3, f)), (*C3, f), "missing", id=f"{f}-missing") for f in FIELDS],
    *[pytest.param(_candle(**{f: v}), (*C3, f), t, id=f"{f}-{k}") for f in PRICES for k, v, t in PRICE_BREAKS],
    *[pytest.param(_candle(volume=v), (*C3, "volume"), t, id=f"volume-{k}") for k, v, t in VOLUME_BREAKS],
    pytest.param(lambda b: b.update(ohlcv_data=b.pop("sequence")), ("ohlcv_data",), "extra_forbidden",
                 id="old-ohlcv_data-field"),
    pytest.param(lambda b: b.update(include_risk=True), ("include_risk",), "extra_forbidden",
                 id="old-include_risk-field"),
    pytest.param(lambda b: b.update(Symbol="BTC/USDT"), ("Symbol",), "extra_forbidden", id="extra-field"),
]  # fmt: skip


@pytest.mark.parametrize("batch", [False, True], ids=["predict", "batch"])
@pytest.mark.parametrize(("edit", "path", "type_"), CONTRACT)
def test_every_broken_field_is_a_422_naming_it(
    make_client: Callable[..., Any],
    edit: Callable[[dict[str, Any]], Any],
    path: tuple[str | int, ...],
    type_: str | None,
    batch: bool,
) -> None:
    client = make_client()
    request = copy.deepcopy(BASE)
    edit(request)
    # In a batch the broken request comes first, a valid one after it: the error must point at index 0 only.
    body, prefix = ({"requests": [request, BASE]}, ("body", "requests", 0)) if batch else (request, ("body",))
    response = client.post("/predict/batch" if batch else "/predict", content=json.dumps(body).encode(), headers=JSON)
    assert response.status_code == 422, response.text[:500]
    error = _assert_error_shape(response)
    assert error["code"] == "VALIDATION_FAILED" and error["error"] == "Validation Error", error
    _assert_names_field(error, _dotted(*prefix, *path), type_)
    assert all(d["field"].startswith(_dotted(*prefix)) for d in error["details"]), error
    assert client.get("/ready").status_code == 200


def _batch_of(n: int) -> bytes:
    return json.dumps({"requests": [BASE] * n}).encode()


#: The batch envelope and the body as a whole: (raw body, expected field, expected rule name).
ENVELOPE = [
    pytest.param("/predict/batch", b"{}", "body.requests", "missing", id="requests-missing"),
    pytest.param("/predict/batch", b'{"requests":null}', "body.requests", "list_type", id="requests-null"),
    pytest.param("/predict/batch", b'{"requests":"x"}', "body.requests", "list_type", id="requests-string"),
    pytest.param("/predict/batch", b'{"requests":{}}', "body.requests", "list_type", id="requests-object"),
    pytest.param("/predict/batch", _batch_of(0), "body.requests", "too_short", id="requests-empty"),
    pytest.param("/predict/batch", _batch_of(MAX_BATCH_REQUESTS + 1), "body.requests", "too_long",
                 id="requests-101"),
    pytest.param("/predict/batch", b'{"requests":[null]}', "body.requests.0", "model_type", id="requests-0-null"),
    pytest.param("/predict/batch", b'{"requests":[42]}', "body.requests.0", "model_type", id="requests-0-number"),
    pytest.param("/predict/batch", json.dumps({"requests": [BASE], "symbol": "BTC/USDT"}).encode(), "body.symbol",
                 "extra_forbidden", id="requests-and-a-symbol"),
    pytest.param("/predict/batch", json.dumps(BASE).encode(), "body.requests", "missing", id="single-to-batch"),
    pytest.param("/predict", _batch_of(1), "body.requests", "extra_forbidden", id="batch-to-single"),
    *[pytest.param(path, raw, "body", "model_type", id=f"{path[1:]}-body-{name}")
      for path in ("/predict", "/predict/batch")
      for name, raw in [("array", json.dumps([BASE]).encode()), ("null", b"null"), ("string", b'"x"'),
                        ("number", b"1")]],
    *[pytest.param(path, raw, "body", "json_invalid", id=f"{path[1:]}-not-json-{name}")
      for path in ("/predict", "/predict/batch")
      for name, raw in [("truncated", json.dumps(BASE).encode()[:-1]), ("single-quotes", b"{'symbol': 'BTC/USDT'}"),
                        ("trailing-comma", json.dumps(BASE).encode()[:-1] + b",}"), ("bare-word", b"predict"),
                        ("bad-utf8", b'{"symbol":"\xff"}')]],
]  # fmt: skip


@pytest.mark.parametrize(("path", "raw", "field", "type_"), ENVELOPE)
def test_every_broken_envelope_is_a_4xx_naming_the_body(
    make_client: Callable[..., Any], path: str, raw: bytes, field: str, type_: str
) -> None:
    client = make_client(max_body_bytes=2 << 20)  # 101 real windows are about 1 MiB: past the default limit (413)
    response = client.post(path, content=raw, headers=JSON)
    status, code = (400, "BAD_REQUEST") if type_ == "json_invalid" else (422, "VALIDATION_FAILED")
    assert response.status_code == status, response.text[:500]
    error = _assert_error_shape(response)
    assert error["code"] == code, error
    _assert_names_field(error, field, type_)
    assert client.get("/ready").status_code == 200


# -- (d) EDGE_EXCHANGES -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("configure", ["setting", "environment"])
def test_configured_exchanges_replace_the_seeds_list(
    make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, configure: str
) -> None:
    if configure == "setting":
        client = make_client(exchanges=("nyse", "cme"))
    else:
        monkeypatch.setenv("EDGE_EXCHANGES", "nyse, cme")
        client = make_client()
    ok = client.post("/predict", content=json.dumps(dict(BASE, exchange="nyse")).encode(), headers=JSON)
    assert ok.status_code == 200, ok.text[:500]
    assert ok.json()["prediction"]["exchange"] == "nyse"

    refused = client.post("/predict", content=json.dumps(BASE).encode(), headers=JSON)  # exchange: binance
    assert refused.status_code == 422, refused.text[:500]
    error = _assert_error_shape(refused)
    assert error["code"] == "VALIDATION_FAILED"
    [detail] = error["details"]
    assert detail["field"] == "body.exchange" and detail["type"] == "literal_error", detail
    assert "'nyse'" in detail["message"] or "'cme'" in detail["message"], detail
    assert "binance" not in detail["message"], detail

    batch = {"requests": [dict(BASE, exchange="cme"), BASE]}
    refused = client.post("/predict/batch", content=json.dumps(batch).encode(), headers=JSON)
    assert refused.status_code == 422, refused.text[:500]
    _assert_names_field(_assert_error_shape(refused), "body.requests.1.exchange", "literal_error")
    assert client.get("/ready").status_code == 200


def test_the_default_exchanges_are_the_seeds(client: Any) -> None:
    for exchange in DEFAULT_EXCHANGES:
        response = client.post("/predict", content=json.dumps(dict(BASE, exchange=exchange)).encode(), headers=JSON)
        assert response.status_code == 200, (exchange, response.text[:300])
    response = client.post("/predict", content=json.dumps(dict(BASE, exchange="nyse")).encode(), headers=JSON)
    assert response.status_code == 422
    [detail] = _assert_error_shape(response)["details"]
    assert detail["message"] == "Input should be 'binance', 'coinbase', 'kraken', 'bybit' or 'okx'", detail


# -- (e) anything at all ------------------------------------------------------------------------------------------
@settings(FUZZ, max_examples=80)
@given(raw=st.binary(max_size=512), path=st.sampled_from(["/predict", "/predict/batch"]))
def test_arbitrary_bytes_are_a_4xx_json_error(client: Any, raw: bytes, path: str) -> None:
    response = client.post(path, content=raw, headers=JSON)
    assert 400 <= response.status_code < 500, (raw, response.status_code, response.text[:300])
    _assert_error_shape(response)


@settings(FUZZ, max_examples=120)
@given(value=json_values | request_like, path=st.sampled_from(["/predict", "/predict/batch"]))
def test_arbitrary_json_is_a_4xx_json_error(client: Any, value: Any, path: str) -> None:
    raw = json.dumps(value).encode()  # NaN/Infinity floats come out as the non-JSON tokens
    response = client.post(path, content=raw, headers=JSON)
    assert 400 <= response.status_code < 500, (raw[:300], response.status_code, response.text[:300])
    _assert_error_shape(response)
    assert client.get("/ready").status_code == 200


# -- found by fuzzing ---------------------------------------------------------------------------------------------
def _every_candle(field_values: dict[str, float]) -> bytes:
    body = copy.deepcopy(BASE)
    for c in body["sequence"]:
        c.update(field_values)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("values", "field", "type_"),
    [
        pytest.param({f: 1e300 for f in PRICES}, "open", "less_than_equal", id="price-1e300-overflows-float32"),
        pytest.param({f: 1e-300 for f in PRICES}, "open", "greater_than_equal", id="price-1e-300-underflows-to-0"),
        pytest.param({"volume": 1e300}, "volume", "less_than_equal", id="volume-1e300-overflows-float32"),
    ],
)
def test_values_beyond_float32_are_rejected_with_422(
    client: Any, values: dict[str, float], field: str, type_: str
) -> None:
    assert all(math.isfinite(v) and v > 0 for v in values.values())  # finite and positive, as the seed asks
    response = client.post("/predict", content=_every_candle(values), headers=JSON)
    assert response.status_code == 422, response.text[:300]
    body = _assert_error_shape(response)
    assert body["code"] == "VALIDATION_FAILED"
    _assert_names_field(body, f"body.sequence.0.{field}", type_)


# -- found in the security review ---------------------------------------------------------------------------------
class _FailingSession:
    """Stands in for an onnxruntime session whose run fails with the kind of text onnxruntime puts in errors."""

    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : /srv/secret/models/graph.onnx node Gemm_7")


def test_onnxruntime_failure_text_is_not_in_the_500(committed_model_dir: Path) -> None:
    from starlette.testclient import TestClient

    from runtime.http.app import create_app
    from runtime.settings import Settings

    def loader(settings: Settings, version: str | None = None) -> Model:
        real = Model.load(committed_model_dir, intra_op_threads=1)
        return Model(_FailingSession(), real.info, real.manifest)

    with TestClient(create_app(Settings(model_dir=committed_model_dir), model_loader=loader),
                    raise_server_exceptions=False) as client:  # fmt: skip
        response = client.post("/predict", content=json.dumps(BASE).encode(), headers=JSON)
        assert response.status_code == 500
        assert _assert_error_shape(response)["code"] == "INFERENCE_FAILED"
        assert "secret" not in response.text and "ONNXRuntimeError" not in response.text, response.text


def test_admin_reload_body_is_limited_like_predict(make_client: Callable[..., Any]) -> None:
    key = "reload-key-0123456789"
    client = make_client(api_keys=[key], max_body_bytes=4096)
    raw = json.dumps({"version": "v" + "1" * 8192}).encode()
    response = client.post("/admin/reload", content=raw, headers={**JSON, "x-api-key": key})
    assert response.status_code == 413, response.text[:300]
    assert _assert_error_shape(response)["code"] == "PAYLOAD_TOO_LARGE"
