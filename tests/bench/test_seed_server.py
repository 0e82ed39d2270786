"""The seed peer answers one /predict like the seed did, with the model's own probabilities."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fastapi")


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


def window_body(symbol: str = "^GSPC") -> dict[str, Any]:
    candles = []
    price = 100.0
    for i in range(60):
        close = price * (1 + 0.001 * ((i * 7) % 5 - 2))
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
    return {"symbol": symbol, "ohlcv_data": candles, "include_risk": True}


def test_seed_predict_answers_with_model_probabilities(seed_model_dir: Path) -> None:
    from fastapi.testclient import TestClient

    from bench.seed_server import CLASSES, create_app, load_model

    body = window_body()
    with TestClient(create_app(seed_model_dir, threads=1)) as client:
        assert client.get("/health").json() == {"status": "healthy"}
        resp = client.post("/predict", json=body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["symbol"] == "^GSPC"
    assert out["model_version"] == "test-1"
    assert out["prediction"]["signal"] in CLASSES
    assert set(out["risk"]) >= {"severity", "occurrence", "detection", "risk_priority_number", "risk_level"}

    model, _ = load_model(seed_model_dir)
    x = torch.tensor([[[c[k] for k in ("open", "high", "low", "close", "volume")] for c in body["ohlcv_data"]]])
    with torch.no_grad():
        expected = model(x)[0].tolist()
    got = [out["prediction"]["probabilities"][k] for k in CLASSES]
    assert got == pytest.approx(expected, abs=1e-6)
    assert out["prediction"]["confidence"] == pytest.approx(max(expected), abs=1e-6)


def test_seed_rejects_a_short_window(seed_model_dir: Path) -> None:
    from fastapi.testclient import TestClient

    from bench.seed_server import create_app

    body = window_body()
    body["ohlcv_data"] = body["ohlcv_data"][:59]
    with TestClient(create_app(seed_model_dir, threads=1)) as client:
        resp = client.post("/predict", json=body)
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "ohlcv_data"]
