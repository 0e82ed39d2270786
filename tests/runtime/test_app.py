from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from conftest import market_windows, window_to_payload

from runtime.constants import CLASSES, INT8_FILE
from runtime.schemas import ErrorResponse, PredictionResponse

JSON = {"content-type": "application/json"}


def _post(client: Any, body: Any, path: str = "/predict", headers: dict[str, str] | None = None) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
    return client.post(path, content=raw, headers={**JSON, **(headers or {})})


def _assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    ErrorResponse.model_validate(body)
    assert body["code"] == code, body
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def test_predict_returns_the_onnx_files_probabilities(make_client: Any, committed_model_dir: Path) -> None:
    client = make_client(precision="int8")
    window = market_windows(1, seed=3)
    response = _post(client, window_to_payload(window[0], "BTC/USDT"))
    assert response.status_code == 200, response.text
    body = PredictionResponse.model_validate(response.json())
    session = ort.InferenceSession(str(committed_model_dir / INT8_FILE), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"ohlcv_sequence": window})[0][0]
    got = np.array([getattr(body.prediction.probabilities, c) for c in CLASSES])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert body.prediction.signal == CLASSES[int(expected.argmax())]
    assert body.prediction.symbol == "BTC/USDT"
    assert body.prediction.exchange == "binance"
    assert body.prediction.precision == "int8"
    fmea = body.risk.fmea
    assert fmea.risk_priority_number == fmea.severity * fmea.occurrence * fmea.detection
    assert float(response.headers["x-process-time-ms"]) > 0
    assert body.prediction.request_id == response.headers["x-request-id"]


# The seed's own example candle (OHLCVPoint's json_schema_extra), repeated a minute apart: what a seed client sends.
SEED_CANDLE = {"open": 42150.50, "high": 42300.00, "low": 42100.00, "close": 42250.75, "volume": 1234.56}
SEED_BODY = {
    "symbol": "BTC/USDT",
    "exchange": "binance",
    "sequence": [
        {"timestamp": f"2024-01-15T{10 + (30 + i) // 60:02d}:{(30 + i) % 60:02d}:00Z", **SEED_CANDLE} for i in range(60)
    ],
}
SEED_PREDICTION_KEYS = {
    "signal",
    "confidence",
    "probabilities",
    "symbol",
    "exchange",
    "model_version",
    "inference_time_ms",
    "timestamp",
}
SEED_RISK_KEYS = {"risk_score", "risk_level", "factors", "recommendation"}


def _assert_seed_shape(answer: dict[str, Any], symbol: str, exchange: str) -> None:
    assert set(answer) >= {"prediction", "risk"}
    prediction, risk = answer["prediction"], answer["risk"]
    assert set(prediction) >= SEED_PREDICTION_KEYS and set(risk) >= SEED_RISK_KEYS
    assert set(prediction["probabilities"]) == {"sell", "hold", "buy"}
    assert abs(sum(prediction["probabilities"].values()) - 1) <= 0.01  # the seed's model_validator
    assert prediction["signal"] in ("sell", "hold", "buy")
    assert prediction["confidence"] == prediction["probabilities"][prediction["signal"]]
    assert (prediction["symbol"], prediction["exchange"]) == (symbol, exchange)
    assert isinstance(prediction["model_version"], str) and prediction["inference_time_ms"] >= 0
    assert prediction["timestamp"].startswith("20")
    assert 0 <= risk["risk_score"] <= 10 and risk["risk_level"] in ("low", "medium", "high", "critical")
    assert isinstance(risk["factors"], list) and isinstance(risk["recommendation"], str)


def test_a_body_from_the_seeds_examples_gets_the_seeds_response(make_client: Any) -> None:
    client = make_client()
    response = _post(client, SEED_BODY)
    assert response.status_code == 200, response.text
    answer = response.json()
    _assert_seed_shape(answer, "BTC/USDT", "binance")
    # A flat window: no volatility, no trend -> the seed scores "Weak trend signal" (+1.5) at least.
    assert answer["risk"]["trend_strength"] == 0.0 and "Weak trend signal" in answer["risk"]["factors"]
    batch = _post(
        client, {"requests": [SEED_BODY, {**SEED_BODY, "symbol": "ETH/USDT", "exchange": "kraken"}]}, "/predict/batch"
    )
    assert batch.status_code == 200, batch.text
    answers = batch.json()
    assert isinstance(answers, list) and len(answers) == 2  # the seed's list[PredictionResponse]
    _assert_seed_shape(answers[0], "BTC/USDT", "binance")
    _assert_seed_shape(answers[1], "ETH/USDT", "kraken")


@pytest.mark.parametrize("symbol", ["BTC/USDT", "1000PEPE/USDT", "BRK.B", "^GSPC", "ES=F", "BTC-PERP", "AAPL"])
def test_real_symbol_forms_are_accepted(make_client: Any, symbol: str) -> None:
    response = _post(make_client(), {**SEED_BODY, "symbol": symbol})
    assert response.status_code == 200, response.text
    assert response.json()["prediction"]["symbol"] == symbol


@pytest.mark.parametrize("exchange", ["binance", "coinbase", "kraken", "bybit", "okx"])
def test_the_seeds_five_exchanges_are_accepted_by_default(make_client: Any, exchange: str) -> None:
    response = _post(make_client(), {**SEED_BODY, "exchange": exchange})
    assert response.status_code == 200, response.text


def test_exchanges_are_a_setting(make_client: Any) -> None:
    client = make_client(exchanges="nyse,cme")
    assert _post(client, {**SEED_BODY, "exchange": "cme"}).status_code == 200
    body = _assert_error(_post(client, SEED_BODY), 422, "VALIDATION_FAILED")
    assert body["details"] == [
        {"field": "body.exchange", "message": "Input should be 'nyse' or 'cme'", "type": "literal_error"}
    ]


def test_the_422_body_is_the_seeds(make_client: Any) -> None:
    bad = copy.deepcopy(SEED_BODY)
    bad["sequence"][3]["high"] = 1.0  # below low
    bad["sequence"][7]["volume"] = -1
    bad["symbol"] = "btc/usdt"
    client = make_client()
    body = _assert_error(_post(client, bad), 422, "VALIDATION_FAILED")
    assert body["error"] == "Validation Error"
    fields = {d["field"]: d for d in body["details"]}
    assert set(fields) == {"body.symbol", "body.sequence.7.volume"}  # the window's OHLC rules run once fields pass
    assert fields["body.symbol"]["type"] == "string_pattern_mismatch"
    assert fields["body.sequence.7.volume"]["type"] == "greater_than_equal"
    assert all(set(d) == {"field", "message", "type"} for d in body["details"])
    bad["symbol"], bad["sequence"][7]["volume"] = "BTC/USDT", 1.0
    body = _assert_error(_post(client, bad), 422, "VALIDATION_FAILED")
    assert body["details"] == [
        {"field": "body.sequence.3", "message": "high (1.0) must be >= low (42100.0)", "type": "ohlc_range"}
    ]


def test_fp32_precision_serves_the_fp32_file(make_client: Any) -> None:
    client = make_client(precision="fp32")
    assert client.get("/ready").json()["precision"] == "fp32"


def test_request_id_is_echoed_when_safe(make_client: Any, payload: Any) -> None:
    client = make_client()
    assert _post(client, payload(), headers={"x-request-id": "abc-123"}).headers["x-request-id"] == "abc-123"
    unsafe = _post(client, payload(), headers={"x-request-id": "a b<script>"})
    assert unsafe.headers["x-request-id"] != "a b<script>"


def test_batch_is_in_request_order_and_matches_single(make_client: Any) -> None:
    client = make_client()
    windows = market_windows(7, seed=11)
    symbols = [f"SYM{i}/USD" for i in range(7)]
    batch = {"requests": [window_to_payload(w, s) for w, s in zip(windows, symbols, strict=True)]}
    response = _post(client, batch, "/predict/batch")
    assert response.status_code == 200, response.text
    answers = [PredictionResponse.model_validate(a) for a in response.json()]
    assert [a.prediction.symbol for a in answers] == symbols
    for i in range(7):  # batch-invariant by default: each window's answer is exactly its answer alone
        single = _post(client, window_to_payload(windows[i], f"SYM{i}/USD")).json()
        assert answers[i].prediction.probabilities.model_dump() == single["prediction"]["probabilities"]
        assert answers[i].audit.model_dump(exclude_none=True) == single["audit"]


def test_health_ready_and_openapi(make_client: Any) -> None:
    client = make_client()
    assert client.get("/health").json()["status"] == "alive"
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) >= {"/predict", "/predict/batch", "/health", "/ready"}
    assert "PredictionRequest" in spec["components"]["schemas"]
    assert "ErrorResponse" in spec["components"]["schemas"]


def _mutate(path: str, value: Any) -> Any:
    def apply(body: dict[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(body)
        target: Any = body
        keys = path.split(".")
        for k in keys[:-1]:
            target = target[int(k)] if k.isdigit() else target[k]
        last = keys[-1]
        if value is _DELETE:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value
        return body

    return apply


_DELETE = object()


MALFORMED = [
    pytest.param(_mutate("symbol", "BTC USDT"), ["symbol"], id="symbol-with-space"),
    pytest.param(_mutate("symbol", "X" * 100), ["symbol"], id="symbol-too-long"),
    pytest.param(_mutate("symbol", 42), ["symbol"], id="symbol-not-string"),
    pytest.param(_mutate("sequence.3.high", 1e-9), ["sequence", 3], id="high-below-low"),
    pytest.param(_mutate("sequence.3.open", -1.0), ["sequence", 3, "open"], id="negative-price"),
    pytest.param(_mutate("sequence.3.volume", -5), ["sequence", 3, "volume"], id="negative-volume"),
    pytest.param(_mutate("sequence.3.close", "abc"), ["sequence", 3, "close"], id="price-not-number"),
    pytest.param(
        _mutate("sequence.5.timestamp", "2024-01-06T00:00:00"),
        ["sequence", 5, "timestamp"],
        id="naive-timestamp-mixed-with-aware",
    ),
    pytest.param(_mutate("sequence.5.timestamp", "not a date"), ["sequence", 5, "timestamp"], id="bad-date"),
    pytest.param(_mutate("sequence.5.timestamp", "2024-01-01T00:00:00+00:00"), ["sequence"], id="out-of-order"),
    pytest.param(_mutate("sequence.59", _DELETE), ["sequence"], id="59-candles"),
    pytest.param(_mutate("sequence", []), ["sequence"], id="no-candles"),
    pytest.param(_mutate("sequence", None), ["sequence"], id="null-candles"),
    pytest.param(_mutate("sequence.2.extra", 1), ["sequence", 2, "extra"], id="unknown-candle-field"),
    pytest.param(_mutate("unexpected", True), ["unexpected"], id="unknown-top-field"),
    pytest.param(_mutate("sequence.2", _DELETE), ["sequence"], id="too-few"),
    pytest.param(_mutate("include_risk", False), ["include_risk"], id="old-field-refused"),
    pytest.param(lambda b: {**b, "sequence": b["sequence"] * 2}, ["sequence"], id="120-candles"),
    pytest.param(_mutate("symbol", "btc/usdt"), ["symbol"], id="lower-case-symbol"),
    pytest.param(_mutate("exchange", "nyse"), ["exchange"], id="unknown-exchange"),
    pytest.param(_mutate("exchange", "Binance"), ["exchange"], id="exchange-wrong-case"),
    pytest.param(_mutate("exchange", _DELETE), ["exchange"], id="no-exchange"),
    pytest.param(_mutate("exchange", None), ["exchange"], id="null-exchange"),
    pytest.param(
        lambda b: {"symbol": b["symbol"], "exchange": "binance", "ohlcv_data": b["sequence"]},
        ["sequence"],
        id="old-ohlcv-data-spelling",
    ),
    pytest.param(lambda b: [b], [], id="array-body"),
    pytest.param(lambda b: "text", [], id="string-body"),
]


@pytest.mark.parametrize(("mutate", "loc"), MALFORMED)
def test_malformed_window_is_422_naming_the_field(make_client: Any, payload: Any, mutate: Any, loc: list[Any]) -> None:
    client = make_client()
    body = _assert_error(_post(client, mutate(payload())), 422, "VALIDATION_FAILED")
    field = ".".join(["body", *map(str, loc)])
    assert any(d["field"].startswith(field) for d in body["details"]), body["details"]
    assert all(d["message"] and d["type"] for d in body["details"])
    assert client.get("/ready").status_code == 200


NON_FINITE = [
    pytest.param(b'"close": Infinity', id="Infinity"),
    pytest.param(b'"close": -Infinity', id="-Infinity"),
    pytest.param(b'"close": NaN', id="NaN"),
    pytest.param(b'"close": 1e400', id="1e400-overflows-to-inf"),
]


@pytest.mark.parametrize("replacement", NON_FINITE)
def test_non_finite_numbers_are_rejected(make_client: Any, payload: Any, replacement: bytes) -> None:
    client = make_client()
    raw = json.dumps(payload()).encode()
    first_close = raw.index(b'"close": ')
    end = raw.index(b",", first_close)
    raw = raw[:first_close] + replacement + raw[end:]
    response = _post(client, raw)
    assert response.status_code in (400, 422), response.text
    body = response.json()
    assert body["code"] in ("VALIDATION_FAILED", "BAD_REQUEST")
    assert client.get("/ready").status_code == 200


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        pytest.param(b"{not json", 400, "BAD_REQUEST", id="broken-json"),
        pytest.param(b"", 400, "BAD_REQUEST", id="empty-body"),
        pytest.param(b"\xff\xfe\x00", 400, "BAD_REQUEST", id="binary-garbage"),
        pytest.param(b'{"symbol": "A", ' * 1000, 400, "BAD_REQUEST", id="truncated-repeated"),
    ],
)
def test_unparseable_body_is_400(make_client: Any, raw: bytes, status: int, code: str) -> None:
    client = make_client()
    _assert_error(_post(client, raw), status, code)
    assert client.get("/ready").status_code == 200


def test_batch_limits(make_client: Any, payload: Any) -> None:
    client = make_client()
    _assert_error(_post(client, {"requests": []}, "/predict/batch"), 422, "VALIDATION_FAILED")
    too_many = {"requests": [payload()] * 101}
    body = _assert_error(_post(client, too_many, "/predict/batch"), 422, "VALIDATION_FAILED")
    assert body["details"][0]["field"] == "body.requests"
    bad_item = {"requests": [payload(), _mutate("sequence.1.low", -1)(payload())]}
    body = _assert_error(_post(client, bad_item, "/predict/batch"), 422, "VALIDATION_FAILED")
    assert body["details"][0]["field"].startswith("body.requests.1.sequence.1")


def test_wrong_content_type_is_415(make_client: Any, payload: Any) -> None:
    client = make_client()
    response = client.post("/predict", content=json.dumps(payload()), headers={"content-type": "text/plain"})
    _assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_body_over_limit_is_413_before_parsing(make_client: Any) -> None:
    client = make_client(max_body_bytes=4096)
    _assert_error(_post(client, b"{" + b" " * 10_000 + b"}"), 413, "PAYLOAD_TOO_LARGE")

    def chunks() -> Any:  # no Content-Length: the limit applies while streaming
        for _ in range(10):
            yield b" " * 1000

    response = client.post("/predict", content=chunks(), headers=JSON)
    _assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert client.get("/ready").status_code == 200


def test_unknown_route_and_method_are_json(make_client: Any) -> None:
    client = make_client()
    _assert_error(client.get("/nope"), 404, "NOT_FOUND")
    _assert_error(client.get("/predict"), 405, "METHOD_NOT_ALLOWED")


@pytest.mark.parametrize("path", ["/predict/", "/health/", "/v2/health/live/"])
def test_a_trailing_slash_is_a_404_not_a_redirect_built_from_host(make_client: Any, path: str) -> None:
    client = make_client(drift_sample_rate=0)
    response = client.request(
        "POST" if path.startswith("/predict") else "GET",
        path,
        headers={**JSON, "host": "evil.example"},
        follow_redirects=False,
    )
    assert "location" not in response.headers
    _assert_error(response, 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        pytest.param(b"", {"content-type": "application/x-www-form-urlencoded"}, 415, id="empty-form-post"),
        pytest.param(b"", {"content-type": "text/plain"}, 415, id="empty-text-plain"),
        pytest.param(b'{"version": null}', {"content-type": "text/plain"}, 415, id="json-as-text-plain"),
        pytest.param(b'{"version": null}', {}, 415, id="body-without-type"),
        pytest.param(b"", {}, 200, id="no-body-no-type"),
        pytest.param(b"", JSON, 200, id="no-body-json"),
        pytest.param(b"{}", JSON, 200, id="json-body"),
    ],
)
def test_admin_reload_takes_only_json(make_client: Any, content: bytes, headers: dict[str, str], status: int) -> None:
    """Without keys a cross-origin form or text/plain POST needs no preflight: it must not reload the model."""
    client = make_client(drift_sample_rate=0)
    response = client.post("/admin/reload", content=content, headers=headers)
    if status == 200:
        assert response.status_code == 200 and response.json()["status"] == "reloaded", response.text
    else:
        _assert_error(response, status, "UNSUPPORTED_MEDIA_TYPE")
    assert client.get("/ready").status_code == 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({}, 401, id="missing"),
        pytest.param({"x-api-key": "wrong-key-123"}, 401, id="wrong"),
        pytest.param({"x-api-key": "secret-key-1"}, 200, id="first"),
        pytest.param({"x-api-key": "secret-key-2"}, 200, id="second"),
    ],
)
def test_api_keys(make_client: Any, payload: Any, headers: dict[str, str], status: int) -> None:
    client = make_client(api_keys="secret-key-1,secret-key-2")
    response = _post(client, payload(), headers=headers)
    assert response.status_code == status
    if status == 401:
        _assert_error(response, 401, "UNAUTHORIZED")
    # probes stay open
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200


def test_api_keys_file(make_client: Any, payload: Any, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# comment\nfile-key-abc\n\n")
    client = make_client(api_keys_file=keys)
    assert _post(client, payload(), headers={"x-api-key": "file-key-abc"}).status_code == 200
    assert _post(client, payload(), headers={"x-api-key": "# comment"}).status_code == 401


@pytest.mark.parametrize("value", ["0", "-5", "abc", "1e9"])
def test_bad_deadline_header_is_400(make_client: Any, payload: Any, value: str) -> None:
    body = _assert_error(_post(make_client(), payload(), headers={"x-deadline-ms": value}), 400, "BAD_REQUEST")
    assert body["details"][0]["field"] == "header.x-deadline-ms"


def test_500_does_not_leak_exception_text(committed_model_dir: Path, payload: Any) -> None:
    from starlette.testclient import TestClient

    from runtime.http.app import create_app
    from runtime.session import Model
    from runtime.settings import Settings

    class Exploding(Model):
        def run(self, windows: Any) -> Any:
            raise ZeroDivisionError("secret internal detail")

    def loader(settings: Settings, version: str | None) -> Model:
        real = Model.load(settings.model_dir, intra_op_threads=1)
        return Exploding(real._session, real.info, real.manifest)

    settings = Settings(model_dir=committed_model_dir)
    with TestClient(create_app(settings, model_loader=loader), raise_server_exceptions=False) as client:
        response = _post(client, payload())
        body = _assert_error(response, 500, "INFERENCE_FAILED")
        assert "secret" not in response.text
        assert "ZeroDivisionError" in body["error"]  # the kind of failure, not its text
        assert client.get("/ready").status_code == 200


def test_lone_request_runs_inline_with_the_same_answer(make_client: Any, payload: Any) -> None:
    client = make_client()
    queued = _post(client, payload(seed=2)).json()
    client.app.state.service.backlog = lambda: 1  # what the uvicorn server reports when this request is alone
    inline = _post(client, payload(seed=2)).json()
    for key in ("signal", "confidence", "probabilities"):
        assert inline["prediction"][key] == queued["prediction"][key]
    assert inline["risk"] == queued["risk"]


def test_admission_limit_sheds_with_retry_after(make_client: Any, payload: Any) -> None:
    client = make_client(max_pending_requests=1)
    service = client.app.state.service
    service.admitted = 1  # one request already admitted and not yet answered
    response = _post(client, payload())
    body = _assert_error(response, 503, "OVERLOADED")
    assert response.headers["retry-after"] == "1" and "already admitted" in body["error"]
    service.admitted = 0
    assert _post(client, payload()).status_code == 200
    assert service.admitted == 0  # released after the response


def test_cors_is_off_by_default(make_client: Any, payload: Any) -> None:
    client = make_client()
    response = _post(client, payload(), headers={"origin": "https://desk.example.com"})
    assert response.status_code == 200 and "access-control-allow-origin" not in response.headers


def test_cors_answers_allowed_origins_only(make_client: Any, payload: Any) -> None:
    client = make_client(cors_origins="https://desk.example.com, http://localhost:3000")
    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "x-api-key,content-type"}
    ok = client.options("/predict", headers={"origin": "https://desk.example.com", **preflight})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://desk.example.com"
    assert "POST" in ok.headers["access-control-allow-methods"]
    assert "x-api-key" in ok.headers["access-control-allow-headers"].lower()
    refused = client.options("/predict", headers={"origin": "https://evil.example.net", **preflight})
    body = _assert_error_no_rid(refused, 400, "CORS_REJECTED")
    assert body["details"][0]["field"] == "header.origin"
    assert "access-control-allow-origin" not in refused.headers
    # Actual requests: the allowed origin is echoed (also on the direct /predict path), any other gets nothing.
    allowed = _post(client, payload(), headers={"origin": "http://localhost:3000"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "x-request-id" in allowed.headers["access-control-expose-headers"].lower()
    other = _post(client, payload(), headers={"origin": "https://evil.example.net"})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
    batch = _post(client, {"requests": [payload()]}, "/predict/batch", headers={"origin": "https://desk.example.com"})
    assert batch.headers["access-control-allow-origin"] == "https://desk.example.com"


def _assert_error_no_rid(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    ErrorResponse.model_validate(body)
    assert body["code"] == code
    return body


@pytest.mark.parametrize("origin", ["desk.example.com", "https://desk.example.com/path", "ftp://x"])
def test_bad_cors_origin_setting_is_refused(origin: str) -> None:
    from pydantic import ValidationError

    from runtime.settings import Settings

    with pytest.raises(ValidationError, match="CORS origin"):
        Settings(cors_origins=origin)


def test_rate_limit_is_per_key_with_retry_after(make_client: Any, payload: Any) -> None:
    client = make_client(api_keys="key-one-123,key-two-456", rate_limit=0.01, rate_limit_burst=3)
    one, two = {"x-api-key": "key-one-123"}, {"x-api-key": "key-two-456"}
    assert [_post(client, payload(), headers=one).status_code for _ in range(3)] == [200, 200, 200]
    limited = _post(client, payload(), headers=one)
    body = _assert_error(limited, 429, "RATE_LIMITED")
    assert int(limited.headers["retry-after"]) >= 1 and "requests/s" in body["error"]
    # The batch route and the v2 route share the key's bucket; other keys are unaffected.
    assert _post(client, {"requests": [payload()]}, "/predict/batch", headers=one).status_code == 429
    assert [_post(client, payload(), headers=two).status_code for _ in range(3)] == [200, 200, 200]
    # A wrong key is 401, not 429: authentication comes first and costs no token.
    assert _post(client, payload(), headers={"x-api-key": "wrong-key-789"}).status_code == 401
    assert client.get("/ready").status_code == 200  # probes are never limited
    metrics = client.get("/metrics").text
    assert 'edge_rejected_total{reason="rate_limited"} 2.0' in metrics
    assert 'edge_requests_total{route="/predict",status="429"} 1.0' in metrics


def test_rate_limit_refills_over_time(make_client: Any, payload: Any) -> None:
    client = make_client(rate_limit=1000, rate_limit_burst=1)
    limiter = client.app.state.service.rate_limiter
    now = [100.0]
    limiter._clock = lambda: now[0]
    assert _post(client, payload()).status_code == 200
    assert _post(client, payload()).status_code == 429
    now[0] += 0.001  # one token at 1000/s
    assert _post(client, payload()).status_code == 200
