"""The seed peer answers like the seed's sketch: its schemas, its response shape, its 422 body, its batch list."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

FEATURES = ("open", "high", "low", "close", "volume")


@pytest.fixture(scope="module")
def seed_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.model import SignalPredictor

    torch.manual_seed(0)
    arch: dict[str, Any] = {"hidden_size": 16, "num_layers": 2, "dropout": 0.1}
    model = SignalPredictor(**arch)
    d = tmp_path_factory.mktemp("seed_model")
    torch.save(model.state_dict(), d / "signal_predictor.pt")
    (d / "manifest.json").write_text(json.dumps({"version": "test-1", "architecture": model.architecture()}))
    return d


@pytest.fixture
def client(seed_model_dir: Path) -> Iterator[TestClient]:
    from bench.seed_server import create_app

    with TestClient(create_app(seed_model_dir, threads=1, device="cpu")) as c:
        yield c


def window_body(symbol: str = "SPX/USD", exchange: str = "binance", drift: float = 0.0) -> dict[str, Any]:
    candles = []
    price = 100.0
    for i in range(60):
        close = price * (1 + 0.001 * ((i * 7) % 5 - 2) + drift)
        candles.append(
            {
                "timestamp": f"2024-01-{1 + i // 24:02d}T{i % 24:02d}:00:00Z",
                "open": price,
                "high": max(price, close) * 1.002,
                "low": min(price, close) * 0.998,
                "close": close,
                "volume": 1e6 + 1e4 * i,
            }
        )
        price = close
    return {"symbol": symbol, "exchange": exchange, "sequence": candles}


def model_probabilities(model_dir: Path, body: dict[str, Any]) -> list[float]:
    from bench.seed_server import load_model

    model, _ = load_model(model_dir)
    x = torch.tensor([[[c[k] for k in FEATURES] for c in body["sequence"]]])  # raw OHLCV, as to_tensor feeds it
    with torch.no_grad():
        return list(model(x)[0].tolist())


def test_the_bench_body_is_valid_for_the_seed_and_the_service() -> None:
    from bench import payload
    from bench.seed_server import PredictionRequest

    body = payload.request_body(payload.sp500_candles())
    request = PredictionRequest.model_validate(body)
    assert request.to_tensor().shape == (1, 60, 5)


def test_seed_predict_answers_the_seed_shape_with_model_probabilities(client: TestClient, seed_model_dir: Path) -> None:
    body = window_body()
    health = client.get("/health").json()
    assert health == {"status": "healthy", "model_loaded": True, "device": "cpu", "version": "test-1"}
    resp = client.post("/predict", json=body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert set(out) == {"prediction", "risk"}
    pred, risk = out["prediction"], out["risk"]
    assert set(pred) == {
        "signal",
        "confidence",
        "probabilities",
        "symbol",
        "exchange",
        "model_version",
        "inference_time_ms",
        "timestamp",
    }
    assert (pred["symbol"], pred["exchange"], pred["model_version"]) == ("SPX/USD", "binance", "test-1")
    assert set(risk) == {"risk_score", "risk_level", "factors", "recommendation"}

    expected = model_probabilities(seed_model_dir, body)
    got = [pred["probabilities"][k] for k in ("sell", "hold", "buy")]
    assert got == pytest.approx(expected, abs=1e-6)
    assert pred["signal"] == ("sell", "hold", "buy")[max(range(3), key=expected.__getitem__)]
    assert pred["confidence"] == pytest.approx(max(expected), abs=1e-6)
    # An untrained model is never 70 % sure and this zig-zag window has a weak trend: the seed's 2 + 1.5.
    assert risk["factors"] == ["Low model confidence", "Weak trend signal"]
    assert (risk["risk_score"], risk["risk_level"]) == (3.5, "medium")
    assert risk["recommendation"] == "Consider reduced position size"


def test_seed_batch_answers_a_list_in_request_order(client: TestClient) -> None:
    bodies = [window_body(), window_body("BTC/USDT", "kraken", drift=0.01)]
    resp = client.post("/predict/batch", json={"requests": bodies})
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert isinstance(out, list) and len(out) == 2
    assert [(r["prediction"]["symbol"], r["prediction"]["exchange"]) for r in out] == [
        ("SPX/USD", "binance"),
        ("BTC/USDT", "kraken"),
    ]
    assert "Weak trend signal" not in out[1]["risk"]["factors"]  # a steady 1 % a candle climb is a strong trend
    alone = client.post("/predict", json=bodies[0]).json()
    assert out[0]["prediction"]["probabilities"] == pytest.approx(alone["prediction"]["probabilities"], abs=1e-6)


@pytest.mark.parametrize(
    ("mutate", "field", "type_", "message"),
    [
        pytest.param(
            lambda b: b.update(sequence=b["sequence"][:59]), "body.sequence", "too_short", "at least 60", id="short"
        ),
        pytest.param(
            lambda b: b.update(symbol="btc/usdt"),
            "body.symbol",
            "string_pattern_mismatch",
            "^[A-Z]+/[A-Z]+$",
            id="lower-case-symbol",
        ),
        pytest.param(
            lambda b: b.update(symbol="^GSPC"),
            "body.symbol",
            "string_pattern_mismatch",
            "^[A-Z]+/[A-Z]+$",
            id="index-symbol",
        ),
        pytest.param(
            lambda b: b.update(exchange="nyse"),
            "body.exchange",
            "literal_error",
            "'binance', 'coinbase'",
            id="exchange",
        ),
        pytest.param(
            lambda b: b["sequence"][3].update(high=1.0),
            "body.sequence.3",
            "value_error",
            "must be >= low",
            id="high-below-low",
        ),
        pytest.param(
            lambda b: b["sequence"].reverse(),
            "body.sequence",
            "value_error",
            "chronologically ordered",
            id="order",
        ),
    ],
)
def test_seed_rejects_with_its_validation_body(
    client: TestClient, mutate: Any, field: str, type_: str, message: str
) -> None:
    body = window_body()
    mutate(body)
    resp = client.post("/predict", json=body)
    assert resp.status_code == 422
    out = resp.json()
    assert (out["error"], out["code"]) == ("Validation Error", "VALIDATION_FAILED")
    assert set(out) == {"error", "code", "details"}
    detail = out["details"][0]
    assert set(detail) == {"field", "message", "type"}
    assert (detail["field"], detail["type"]) == (field, type_)
    assert message in detail["message"]


def test_seed_batch_rejects_an_empty_list(client: TestClient) -> None:
    resp = client.post("/predict/batch", json={"requests": []})
    assert resp.status_code == 422
    assert resp.json()["details"][0]["field"] == "body.requests"


def test_a_missing_checkpoint_fails_start_up(tmp_path: Path, seed_model_dir: Path) -> None:
    from bench.seed_server import create_app

    (tmp_path / "manifest.json").write_text((seed_model_dir / "manifest.json").read_text())
    with pytest.raises(FileNotFoundError), TestClient(create_app(tmp_path, threads=1, device="cpu")):
        pass
