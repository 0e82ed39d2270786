"""Property tests (hypothesis): valid windows always score; anything else is a 4xx JSON error, never a 5xx.

Bounded for CI: every property sets `max_examples` and the whole module runs in well under 30 s on 2 cores.
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

from runtime.constants import N_CLASSES, WINDOW_LENGTH
from runtime.preprocessing import requests_to_windows
from runtime.schemas import SYMBOL_PATTERN, ErrorResponse, PredictionRequest
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
    """60 valid candles. Hypothesis draws the window's character (price scale 1e-6..1e9, volatility, flat and
    zero-volume candles, spacing, how many UTC offsets are mixed); a drawn seed fills in the 60 rows, which keeps
    an example at ~1 ms instead of hundreds of draws each."""
    scale = 10 ** draw(st.floats(-6, 9))
    sigma = draw(st.sampled_from([0.0, 1e-6, 1e-3, 0.02, 0.1, 0.5]))  # log-return per candle; 0.5 = wild
    max_spread = draw(st.sampled_from([0.0, 1e-9, 0.01, 0.2, 2.0]))
    flat_share = draw(st.floats(0, 1))  # candles with open = high = low = close
    zero_volume_share = draw(st.sampled_from([0.0, 0.1, 0.5, 0.98, 1.0]))  # 1.0 = nothing traded at all
    volume_scale = 10 ** draw(st.floats(-3, 12))
    step = draw(st.sampled_from([1e-3, 1, 60, 3600, 86_400]))  # seconds between candles
    n_offsets = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))

    rng = np.random.default_rng(seed)
    close = scale * np.exp(np.cumsum(rng.normal(0, sigma, WINDOW_LENGTH)))
    spread = rng.uniform(0, max_spread, WINDOW_LENGTH) * (rng.random(WINDOW_LENGTH) >= flat_share)
    low = close / (1 + spread * rng.random(WINDOW_LENGTH))
    high = np.maximum(close * (1 + spread * rng.random(WINDOW_LENGTH)), close)
    open_ = np.clip(low + rng.random(WINDOW_LENGTH) * (high - low), low, high)
    volume = volume_scale * rng.pareto(1.5, WINDOW_LENGTH) * (rng.random(WINDOW_LENGTH) >= zero_volume_share)
    t0 = rng.integers(0, 4_000_000_000)  # 1970 .. 2096
    times = t0 + np.cumsum(step * rng.uniform(0.5, 1.5, WINDOW_LENGTH))  # strictly increasing
    tzs = [OFFSETS[k] for k in rng.choice(len(OFFSETS), n_offsets, replace=False)]
    return [
        {
            "timestamp": datetime.fromtimestamp(float(t), tz=tzs[i % n_offsets]).isoformat(),
            "open": float(o), "high": float(h), "low": float(lo), "close": float(c), "volume": float(v),
        }
        for i, (t, o, h, lo, c, v) in enumerate(zip(times, open_, high, low, close, volume, strict=True))
    ]


def _base_payload() -> dict[str, Any]:
    return window_to_payload(market_windows(1, seed=11)[0], "BTC/USDT")


BASE = _base_payload()

finite_bad_price = st.one_of(st.just(-0.0), st.floats(max_value=0.0, allow_nan=False, allow_infinity=False))
json_junk = st.one_of(
    st.none(), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)
)


def _not_a_symbol(s: str) -> bool:
    return re.fullmatch(SYMBOL_PATTERN, s) is None or len(s) > 48


@st.composite
def invalid_bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid request with exactly one rule broken; returns (rule, raw JSON body)."""
    body = copy.deepcopy(BASE)
    candles = body["ohlcv_data"]
    i = draw(st.integers(0, WINDOW_LENGTH - 1))
    c = candles[i]
    rule = draw(st.sampled_from([
        "non_finite", "non_positive_price", "negative_volume", "high_below_low", "open_outside", "close_outside",
        "naive_timestamp", "out_of_order", "wrong_length", "bad_symbol", "extra_field", "wrong_type",
    ]))
    if rule == "non_finite":
        # Python's json writes NaN/Infinity tokens; 1e400 is valid JSON that overflows a double.
        field = draw(st.sampled_from(FIELDS))
        token = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400"]))
        c[field] = "__TOKEN__"
        return rule, json.dumps(body).replace('"__TOKEN__"', token).encode()
    if rule == "non_positive_price":
        c[draw(st.sampled_from(PRICES))] = draw(finite_bad_price)
    elif rule == "negative_volume":
        c["volume"] = draw(st.floats(max_value=-1e-300, allow_nan=False, allow_infinity=False))
    elif rule == "high_below_low":
        c["high"] = c["low"] * draw(st.floats(0.01, 0.999999))
    elif rule in ("open_outside", "close_outside"):
        field = rule.split("_")[0]
        above = draw(st.booleans())
        c[field] = c["high"] * draw(st.floats(1.001, 100)) if above else c["low"] * draw(st.floats(0.01, 0.999))
    elif rule == "naive_timestamp":
        c["timestamp"] = datetime.fromisoformat(c["timestamp"]).replace(tzinfo=None).isoformat()
    elif rule == "out_of_order":
        j = draw(st.integers(0, WINDOW_LENGTH - 1).filter(lambda j: j != i))
        if draw(st.booleans()):
            candles[i]["timestamp"], candles[j]["timestamp"] = candles[j]["timestamp"], candles[i]["timestamp"]
        else:  # a duplicate time is out of order too
            candles[max(i, j)]["timestamp"] = candles[min(i, j)]["timestamp"]
    elif rule == "wrong_length":
        n = draw(st.one_of(st.integers(0, WINDOW_LENGTH - 1), st.integers(WINDOW_LENGTH + 1, 3 * WINDOW_LENGTH)))
        extra = [copy.deepcopy(candles[-1]) for _ in range(max(0, n - WINDOW_LENGTH))]
        start = datetime.fromisoformat(candles[-1]["timestamp"])
        for k, e in enumerate(extra, 1):
            e["timestamp"] = (start + timedelta(days=k)).isoformat()
        body["ohlcv_data"] = (candles + extra)[:n]
    elif rule == "bad_symbol":
        body["symbol"] = draw(st.one_of(st.text(max_size=80), st.text(alphabet="ABC/^.-=_ ", max_size=60),
                                        st.just("A" * 49)).filter(_not_a_symbol))
    elif rule == "extra_field":
        key = draw(st.text(min_size=1, max_size=12))
        target = draw(st.sampled_from(["top", "candle"]))
        known = set(body) | {"include_risk"} if target == "top" else set(FIELDS) | {"timestamp"}
        if key in known:
            key = "x_" + key
        (body if target == "top" else c)[key] = draw(st.one_of(st.integers(), st.text(max_size=5), st.none()))
    else:  # wrong_type: JSON types that lax mode does not coerce into the field's type
        where = draw(st.sampled_from(["symbol", "ohlcv_data", "include_risk", "candle", "timestamp", "candle_number"]))
        if where == "symbol":
            finite = st.floats(allow_nan=False, allow_infinity=False)
            body["symbol"] = draw(st.one_of(st.integers(), finite, st.booleans(), json_junk))
        elif where == "ohlcv_data":
            body["ohlcv_data"] = draw(
                st.one_of(st.integers(), st.text(max_size=5), st.dictionaries(st.text(max_size=3), st.integers()))
            )
        elif where == "include_risk":
            # Lax mode reads 0/1 and strings such as "y", "on", "f" as booleans: none of these letters start one.
            not_bool = st.one_of(st.integers(2, 10**6), st.text(alphabet="xzq", max_size=4), json_junk)
            body["include_risk"] = draw(not_bool)
        elif where == "candle":
            candles[i] = draw(st.one_of(st.integers(), st.text(max_size=5), st.lists(st.floats(0.1, 10), max_size=6)))
        elif where == "timestamp":
            c["timestamp"] = draw(st.one_of(json_junk, st.text(alphabet="abcxyz:-", max_size=20)))
        else:
            c[draw(st.sampled_from(FIELDS))] = draw(st.one_of(json_junk, st.text(alphabet="abcxyz", max_size=8)))
    return rule, json.dumps(body).encode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
#: Objects that look like requests: the real keys, holding anything.
request_like = st.dictionaries(
    st.sampled_from(["symbol", "ohlcv_data", "include_risk", "requests"]) | st.text(max_size=8), json_values, max_size=5
)


# -- helpers ------------------------------------------------------------------------------------------------------
def _assert_error_shape(response: Any) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.json()
    assert set(body) == {"error", "code", "details", "request_id"}, body
    ErrorResponse.model_validate(body)
    assert all(set(d) == {"loc", "msg", "type"} for d in body["details"]), body
    assert body["request_id"] == response.headers["x-request-id"]
    return body


@pytest.fixture(scope="module", params=["int8", "fp32"])
def model(request: pytest.FixtureRequest, committed_model_dir: Path) -> Model:
    return Model.load(committed_model_dir, precision=request.param, provider="cpu", intra_op_threads=1)


@pytest.fixture
def client(make_client: Callable[..., Any]) -> Any:
    return make_client()


# -- (a) valid windows --------------------------------------------------------------------------------------------
@settings(FUZZ, max_examples=100)
@given(rows=candle_rows(), include_risk=st.booleans())
def test_any_valid_window_gives_finite_probabilities_summing_to_one(
    model: Model, rows: list[dict[str, Any]], include_risk: bool
) -> None:
    raw = json.dumps({"symbol": "1000PEPE/USDT", "ohlcv_data": rows, "include_risk": include_risk})
    req = PredictionRequest.model_validate_json(raw)  # the API's own parsing path
    probs = model.run(requests_to_windows([req]))
    assert probs.shape == (1, N_CLASSES)
    assert np.isfinite(probs).all(), (probs, rows[-1])
    assert ((probs >= 0) & (probs <= 1 + 1e-6)).all(), probs
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


# -- (b) one rule broken at a time --------------------------------------------------------------------------------
@settings(FUZZ, max_examples=150)
@given(case=invalid_bodies(), batch=st.booleans())
def test_any_single_broken_rule_is_a_422_with_the_error_shape(
    client: Any, case: tuple[str, bytes], batch: bool
) -> None:
    rule, raw = case
    if batch:  # the same defect inside /predict/batch, next to a valid window
        raw = b'{"requests":[' + json.dumps(BASE).encode() + b"," + raw + b"]}"
    response = client.post("/predict/batch" if batch else "/predict", content=raw, headers=JSON)
    allowed = (400, 422) if rule == "non_finite" else (422,)  # NaN/Infinity tokens are not JSON at all
    assert response.status_code in allowed, (rule, response.status_code, response.text[:500])
    body = _assert_error_shape(response)
    assert body["code"] == {400: "BAD_REQUEST", 422: "VALIDATION_ERROR"}[response.status_code]
    if response.status_code == 422:
        assert body["details"], body
        assert not batch or all(d["loc"][:2] == ["requests", 1] for d in body["details"]), body
    assert client.get("/ready").status_code == 200


# -- (c) anything at all ------------------------------------------------------------------------------------------
@settings(FUZZ, max_examples=80)
@given(raw=st.binary(max_size=512), path=st.sampled_from(["/predict", "/predict/batch"]))
def test_arbitrary_bytes_are_a_4xx_json_error(client: Any, raw: bytes, path: str) -> None:
    response = client.post(path, content=raw, headers=JSON)
    assert 400 <= response.status_code < 500, (raw, response.status_code, response.text[:300])
    _assert_error_shape(response)


@settings(FUZZ, max_examples=120)
@given(value=json_values | request_like, path=st.sampled_from(["/predict", "/predict/batch"]))
def test_arbitrary_json_is_a_4xx_json_error(client: Any, value: Any, path: str) -> None:
    raw = json.dumps(value).encode()  # NaN/Infinity floats come out as the non-JSON tokens: a 400
    response = client.post(path, content=raw, headers=JSON)
    assert 400 <= response.status_code < 500, (raw[:300], response.status_code, response.text[:300])
    _assert_error_shape(response)
    assert client.get("/ready").status_code == 200


# -- found by fuzzing ---------------------------------------------------------------------------------------------
def _every_candle(field_values: dict[str, float]) -> bytes:
    body = copy.deepcopy(BASE)
    for c in body["ohlcv_data"]:
        c.update(field_values)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({f: 1e300 for f in PRICES}, id="price-1e300-overflows-float32"),
        pytest.param({f: 1e-300 for f in PRICES}, id="price-1e-300-underflows-to-0"),
        pytest.param({"volume": 1e300}, id="volume-1e300-overflows-float32"),
    ],
)
def test_values_beyond_float32_are_rejected_with_422(client: Any, values: dict[str, float]) -> None:
    assert all(math.isfinite(v) and v > 0 for v in values.values())  # valid per the schema as written today
    response = client.post("/predict", content=_every_candle(values), headers=JSON)
    assert response.status_code == 422, response.text[:300]
    assert _assert_error_shape(response)["code"] == "VALIDATION_ERROR"


# -- found in the security review ---------------------------------------------------------------------------------
class _FailingSession:
    """Stands in for an onnxruntime session whose run fails with the kind of text onnxruntime puts in errors."""

    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : /srv/secret/models/graph.onnx node Gemm_7")


def test_onnxruntime_failure_text_is_not_in_the_500(committed_model_dir: Path) -> None:
    from starlette.testclient import TestClient

    from runtime.app import create_app
    from runtime.settings import Settings

    def loader(settings: Settings, version: str | None = None) -> Model:
        real = Model.load(committed_model_dir, intra_op_threads=1)
        return Model(_FailingSession(), real.info, real.manifest)

    with TestClient(create_app(Settings(model_dir=committed_model_dir), model_loader=loader),
                    raise_server_exceptions=False) as client:
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
