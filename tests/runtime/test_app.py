from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from conftest import market_windows, window_to_payload

from runtime.batching import BATCH_INVARIANCE_ATOL
from runtime.constants import CLASSES, INT8_FILE
from runtime.schemas import BatchPredictionResponse, ErrorResponse, PredictionResponse

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
    assert body.symbol == "BTC/USDT"
    assert body.precision == "int8"
    assert body.risk is not None and body.risk.risk_priority_number == (
        body.risk.severity * body.risk.occurrence * body.risk.detection
    )
    assert float(response.headers["x-process-time-ms"]) > 0
    assert body.request_id == response.headers["x-request-id"]


def test_fp32_precision_serves_the_fp32_file(make_client: Any) -> None:
    client = make_client(precision="fp32")
    assert client.get("/ready").json()["precision"] == "fp32"


def test_include_risk_false_omits_risk(make_client: Any, payload: Any) -> None:
    body = {**payload(), "include_risk": False}
    response = _post(make_client(), body)
    assert response.status_code == 200
    assert response.json()["risk"] is None


def test_request_id_is_echoed_when_safe(make_client: Any, payload: Any) -> None:
    client = make_client()
    assert _post(client, payload(), headers={"x-request-id": "abc-123"}).headers["x-request-id"] == "abc-123"
    unsafe = _post(client, payload(), headers={"x-request-id": "a b<script>"})
    assert unsafe.headers["x-request-id"] != "a b<script>"


def test_batch_is_in_request_order_and_matches_single(make_client: Any) -> None:
    client = make_client()
    windows = market_windows(7, seed=11)
    symbols = [f"SYM{i}" for i in range(7)]
    batch = {"requests": [window_to_payload(w, s) for w, s in zip(windows, symbols, strict=True)]}
    response = _post(client, batch, "/predict/batch")
    assert response.status_code == 200, response.text
    body = BatchPredictionResponse.model_validate(response.json())
    assert [p.symbol for p in body.predictions] == symbols
    assert body.batch_size == 7
    single = _post(client, window_to_payload(windows[4], "SYM4")).json()
    # Dynamic INT8 quantizes activations per batch, so batch neighbours move a row slightly (BATCH_INVARIANCE_ATOL).
    for c in CLASSES:
        batched = getattr(body.predictions[4].prediction.probabilities, c)
        assert abs(batched - single["prediction"]["probabilities"][c]) <= BATCH_INVARIANCE_ATOL


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
    pytest.param(_mutate("ohlcv_data.3.high", 1e-9), ["ohlcv_data", 3], id="high-below-low"),
    pytest.param(_mutate("ohlcv_data.3.open", -1.0), ["ohlcv_data", 3, "open"], id="negative-price"),
    pytest.param(_mutate("ohlcv_data.3.volume", -5), ["ohlcv_data", 3, "volume"], id="negative-volume"),
    pytest.param(_mutate("ohlcv_data.3.close", "abc"), ["ohlcv_data", 3, "close"], id="price-not-number"),
    pytest.param(_mutate("ohlcv_data.5.timestamp", "2024-01-06T00:00:00"), ["ohlcv_data", 5, "timestamp"],
                 id="naive-timestamp-mixed-with-aware"),
    pytest.param(_mutate("ohlcv_data.5.timestamp", "not a date"), ["ohlcv_data", 5, "timestamp"], id="bad-date"),
    pytest.param(_mutate("ohlcv_data.5.timestamp", "2024-01-01T00:00:00+00:00"), ["ohlcv_data"], id="out-of-order"),
    pytest.param(_mutate("ohlcv_data.59", _DELETE), ["ohlcv_data"], id="59-candles"),
    pytest.param(_mutate("ohlcv_data", []), ["ohlcv_data"], id="no-candles"),
    pytest.param(_mutate("ohlcv_data", None), ["ohlcv_data"], id="null-candles"),
    pytest.param(_mutate("ohlcv_data.2.extra", 1), ["ohlcv_data", 2, "extra"], id="unknown-candle-field"),
    pytest.param(_mutate("unexpected", True), ["unexpected"], id="unknown-top-field"),
    pytest.param(_mutate("ohlcv_data.2", _DELETE), ["ohlcv_data"], id="too-few"),
    pytest.param(_mutate("include_risk", "maybe"), ["include_risk"], id="bad-bool"),
    pytest.param(lambda b: {"symbol": b["symbol"], "ohlcv_data": b["ohlcv_data"] * 2}, ["ohlcv_data"], id="120-candles"),
    pytest.param(lambda b: [b], [], id="array-body"),
    pytest.param(lambda b: "text", [], id="string-body"),
]


@pytest.mark.parametrize(("mutate", "loc"), MALFORMED)
def test_malformed_window_is_422_naming_the_field(make_client: Any, payload: Any, mutate: Any, loc: list[Any]) -> None:
    client = make_client()
    body = _assert_error(_post(client, mutate(payload())), 422, "VALIDATION_ERROR")
    assert any(d["loc"][: len(loc)] == loc for d in body["details"]), body["details"]
    assert all(d["msg"] for d in body["details"])
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
    assert body["code"] in ("VALIDATION_ERROR", "BAD_REQUEST")
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
    _assert_error(_post(client, {"requests": []}, "/predict/batch"), 422, "VALIDATION_ERROR")
    too_many = {"requests": [payload()] * 101}
    body = _assert_error(_post(client, too_many, "/predict/batch"), 422, "VALIDATION_ERROR")
    assert body["details"][0]["loc"] == ["requests"]
    bad_item = {"requests": [payload(), _mutate("ohlcv_data.1.low", -1)(payload())]}
    body = _assert_error(_post(client, bad_item, "/predict/batch"), 422, "VALIDATION_ERROR")
    assert body["details"][0]["loc"][:4] == ["requests", 1, "ohlcv_data", 1]


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
    assert body["details"][0]["loc"] == ["header", "x-deadline-ms"]


def test_500_does_not_leak_exception_text(committed_model_dir: Path, payload: Any) -> None:
    from starlette.testclient import TestClient

    from runtime.app import create_app
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
    assert inline["prediction"] == queued["prediction"]
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
