"""The seed's serving design, kept as the benchmark's reference peer.

FastAPI + PyTorch eager FP32, one forward per request, no batching: a request body is validated by Pydantic
models of the seed's shape, turned into a tensor candle by candle, run through ``SignalPredictor`` under
``torch.no_grad()``, and answered with the prediction, a simple FMEA-style risk dict and the model version.

It is meant to be an honest peer, not a straw man: the model is in eval mode, loaded once at start-up, torch
uses as many intra-op threads as the process has CPUs, the route is ``async def`` (no thread-pool hop per
request, the faster choice at low concurrency), and uvicorn runs with the same uvloop/httptools stack as the
service. Its schemas are deliberately the seed's, looser than ``runtime.schemas`` (naive timestamps pass).

Run: ``python -m bench.seed_server --port 8001 --model-dir models`` (one uvicorn worker).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field, model_validator

from training.model import SignalPredictor

CLASSES = ("sell", "hold", "buy")


# -- the seed's schemas --------------------------------------------------------------------------------------
class OHLCVPoint(BaseModel):
    timestamp: datetime
    open: float = Field(..., gt=0)
    high: float = Field(..., gt=0)
    low: float = Field(..., gt=0)
    close: float = Field(..., gt=0)
    volume: float = Field(..., ge=0)

    @model_validator(mode="after")
    def high_is_highest(self) -> OHLCVPoint:
        if self.high < self.low:
            raise ValueError("high must be >= low")
        return self


class PredictionRequest(BaseModel):
    symbol: str = Field(..., pattern=r"^[A-Z0-9^./=\-]{1,20}$")
    ohlcv_data: list[OHLCVPoint] = Field(..., min_length=60, max_length=60)
    include_risk: bool = True


class SignalPrediction(BaseModel):
    signal: Literal["sell", "hold", "buy"]
    confidence: float
    probabilities: dict[str, float]


class PredictionResponse(BaseModel):
    model_config = {"protected_namespaces": ()}

    symbol: str
    prediction: SignalPrediction
    risk: dict[str, Any] | None = None
    model_version: str
    inference_time_ms: float
    timestamp: datetime


# -- the seed's risk scoring: severity x occurrence x detection ----------------------------------------------
def assess_risk(closes: list[float], volumes: list[float], confidence: float) -> dict[str, Any]:
    returns = np.diff(np.log(np.asarray(closes)))
    volatility = float(returns.std())
    severity = min(10, max(1, math.ceil(volatility * 300)))
    occurrence = min(10, max(1, math.ceil((1 - confidence) * 10)))
    vol = np.asarray(volumes)
    spike = float(vol[-1] / vol.mean()) if vol.mean() > 0 else 1.0
    detection = min(10, max(1, math.ceil(abs(spike - 1) * 5)))
    rpn = severity * occurrence * detection
    level = "low" if rpn < 100 else "medium" if rpn < 300 else "high" if rpn < 600 else "critical"
    return {
        "severity": severity,
        "occurrence": occurrence,
        "detection": detection,
        "risk_priority_number": rpn,
        "risk_level": level,
        "volatility": volatility,
    }


# -- the app -------------------------------------------------------------------------------------------------
def load_model(model_dir: Path) -> tuple[SignalPredictor, str]:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    model = SignalPredictor(**manifest["architecture"])
    model.load_state_dict(torch.load(model_dir / "signal_predictor.pt", map_location="cpu", weights_only=True))
    model.eval()
    return model, str(manifest.get("version", "unknown"))


def create_app(model_dir: Path | str = "models", threads: int | None = None) -> FastAPI:
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        model, version = load_model(Path(model_dir))
        with torch.no_grad():  # first forward allocates; do it before accepting traffic, like the service
            model(torch.ones(1, 60, 5))
        app.state.model, app.state.version = model, version
        yield

    app = FastAPI(title="NeuralTrade seed API", lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "healthy"}

    @app.post("/predict", response_model=PredictionResponse)
    async def predict(request: PredictionRequest) -> PredictionResponse:
        model: SignalPredictor = app.state.model
        start = time.perf_counter()
        try:
            x = torch.tensor(
                [[p.open, p.high, p.low, p.close, p.volume] for p in request.ohlcv_data], dtype=torch.float32
            ).unsqueeze(0)  # (1, 60, 5)
            with torch.no_grad():
                probs = model(x)[0].tolist()  # (3,)
        except Exception as e:
            raise HTTPException(status_code=500, detail=f"Prediction failed: {e}") from e
        elapsed_ms = (time.perf_counter() - start) * 1000
        idx = int(np.argmax(probs))
        risk = None
        if request.include_risk:
            risk = assess_risk(
                [p.close for p in request.ohlcv_data], [p.volume for p in request.ohlcv_data], probs[idx]
            )
        return PredictionResponse(
            symbol=request.symbol,
            prediction=SignalPrediction(
                signal=CLASSES[idx],
                confidence=probs[idx],
                probabilities=dict(zip(CLASSES, probs, strict=True)),
            ),
            risk=risk,
            model_version=app.state.version,
            inference_time_ms=elapsed_ms,
            timestamp=datetime.now(UTC),
        )

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.seed_server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--model-dir", default="models")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all CPUs)")
    args = parser.parse_args(argv)

    import uvicorn

    uvicorn.run(
        create_app(args.model_dir, args.threads),
        host=args.host,
        port=args.port,
        workers=1,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
