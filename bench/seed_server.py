"""The seed's serving design, kept as the benchmark's reference peer.

The seed's sections "2. Validación con Pydantic" and "3. Despliegue con FastAPI" (../shared/seed/), as written:
FastAPI + PyTorch eager FP32, one forward per request, no batching across requests. Its schemas, validators,
error messages, risk formulas and handlers are the seed's; only what the sketch cannot run verbatim is adapted:

- ``settings`` (MODEL_PATH, CORS_ORIGINS) is a small dataclass filled from the command line;
- the network is ``training.model.SignalPredictor`` built from the manifest's architecture and loaded from the
  committed ``signal_predictor.pt``; a missing checkpoint fails start-up instead of serving random weights;
- ``model.predict(x)`` is ``model(x)``: the forward pass already ends in the softmax the seed's ``predict`` applies;
- ``ModelState.version`` is the manifest's version rather than the hard-coded "v1.2.0";
- ``class Config`` is written ``model_config = ConfigDict(...)`` (same effect, no Pydantic deprecation warning);
- routes live in ``create_app`` so the benchmark and the tests can point the app at a model directory.

It is meant to be an honest peer, not a straw man: the model is in eval mode, loaded once at start-up and run once
before traffic, torch uses as many intra-op threads as the process has CPUs, the routes are ``async def`` (no
thread-pool hop per request, the faster choice at low concurrency), and uvicorn runs with the same
uvloop/httptools stack as the service. The seed's API-key middleware (its "FastAPI Avanzado" section) is left
out, as it was before: a per-request ``BaseHTTPMiddleware`` would only slow the peer down. The seed feeds raw
OHLCV (``to_tensor``); the model normalises inside its graph, so that is what it expects.

Run: ``python -m bench.seed_server --port 8001 --model-dir models`` (one uvicorn worker).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Literal

import torch
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from training.model import SignalPredictor

logger = logging.getLogger(__name__)


# ═══ the seed's schemas (section 2) ═════════════════════════════════════════════════════════════════════════════
class SignalType(str, Enum):  # noqa: UP042 - the seed's (str, Enum)
    """Tipos de señal de trading."""

    SELL = "sell"
    HOLD = "hold"
    BUY = "buy"


class OHLCVPoint(BaseModel):
    """
    Un punto de datos OHLCV.
    Todos los campos son validados estrictamente.
    """

    timestamp: datetime
    open: float = Field(..., gt=0, description="Precio de apertura")
    high: float = Field(..., gt=0, description="Precio máximo")
    low: float = Field(..., gt=0, description="Precio mínimo")
    close: float = Field(..., gt=0, description="Precio de cierre")
    volume: float = Field(..., ge=0, description="Volumen")

    @model_validator(mode="after")
    def validate_ohlc_logic(self) -> OHLCVPoint:
        """Valida que high >= low y que open/close estén en rango."""
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        if not (self.low <= self.open <= self.high):
            raise ValueError(f"open ({self.open}) must be between low and high")
        if not (self.low <= self.close <= self.high):
            raise ValueError(f"close ({self.close}) must be between low and high")
        return self

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "timestamp": "2024-01-15T10:30:00Z",
                "open": 42150.50,
                "high": 42300.00,
                "low": 42100.00,
                "close": 42250.75,
                "volume": 1234.56,
            }
        }
    )


class PredictionRequest(BaseModel):
    """
    Request para predicción de señal.
    Requiere exactamente 60 puntos OHLCV.
    """

    symbol: str = Field(..., pattern=r"^[A-Z]+/[A-Z]+$", examples=["BTC/USDT"])
    exchange: Literal["binance", "coinbase", "kraken", "bybit", "okx"]
    sequence: list[OHLCVPoint] = Field(..., min_length=60, max_length=60)

    @field_validator("sequence")
    @classmethod
    def validate_sequence_order(cls, v: list[OHLCVPoint]) -> list[OHLCVPoint]:
        """Valida que la secuencia esté ordenada cronológicamente."""
        for i in range(1, len(v)):
            if v[i].timestamp <= v[i - 1].timestamp:
                raise ValueError(
                    f"Sequence must be chronologically ordered. "
                    f"Point {i} ({v[i].timestamp}) <= Point {i - 1} ({v[i - 1].timestamp})"
                )
        return v

    def to_tensor(self) -> torch.Tensor:
        """Convierte a tensor para el modelo."""
        import torch

        data = [[p.open, p.high, p.low, p.close, p.volume] for p in self.sequence]
        return torch.tensor(data, dtype=torch.float32).unsqueeze(0)  # (1, 60, 5) raw OHLCV


class BatchPredictionRequest(BaseModel):
    """Request para predicción en batch."""

    requests: list[PredictionRequest] = Field(..., min_length=1, max_length=100)


class SignalPrediction(BaseModel):
    """
    Resultado de predicción de señal.
    Incluye probabilidades y metadata.
    """

    signal: SignalType
    confidence: float = Field(..., ge=0.0, le=1.0)
    probabilities: dict[SignalType, float]

    # Metadata
    symbol: str
    exchange: str
    model_version: str
    inference_time_ms: float = Field(..., ge=0)
    timestamp: datetime = Field(default_factory=datetime.utcnow)

    @model_validator(mode="after")
    def validate_probabilities_sum(self) -> SignalPrediction:
        """Valida que las probabilidades sumen ~1.0."""
        total = sum(self.probabilities.values())
        if not (0.99 <= total <= 1.01):
            raise ValueError(f"Probabilities must sum to 1.0, got {total}")
        return self

    model_config = ConfigDict(
        protected_namespaces=(),  # the seed's field `model_version`; silences Pydantic's namespace warning
        json_schema_extra={
            "example": {
                "signal": "buy",
                "confidence": 0.85,
                "probabilities": {"sell": 0.05, "hold": 0.10, "buy": 0.85},
                "symbol": "BTC/USDT",
                "exchange": "binance",
                "model_version": "v1.2.0",
                "inference_time_ms": 12.5,
                "timestamp": "2024-01-15T10:30:00Z",
            }
        },
    )


class RiskAssessment(BaseModel):
    """Evaluación de riesgo FMEA para la señal."""

    risk_score: float = Field(..., ge=0.0, le=10.0)
    risk_level: Literal["low", "medium", "high", "critical"]
    factors: list[str]
    recommendation: str

    @classmethod
    def from_signal(
        cls,
        signal: SignalPrediction,
        volatility: float,
        trend_strength: float,
    ) -> RiskAssessment:
        """Calcula riesgo basado en señal y condiciones del mercado."""
        factors = []
        risk_score = 0.0

        # Factor: Confianza baja
        if signal.confidence < 0.7:
            factors.append("Low model confidence")
            risk_score += 2.0

        # Factor: Alta volatilidad
        if volatility > 0.05:
            factors.append("High market volatility")
            risk_score += 3.0

        # Factor: Tendencia débil
        if trend_strength < 0.3:
            factors.append("Weak trend signal")
            risk_score += 1.5

        # Determinar nivel
        level: Literal["low", "medium", "high", "critical"]
        if risk_score < 2:
            level = "low"
            recommendation = "Proceed with standard position size"
        elif risk_score < 4:
            level = "medium"
            recommendation = "Consider reduced position size"
        elif risk_score < 7:
            level = "high"
            recommendation = "High risk - use caution"
        else:
            level = "critical"
            recommendation = "Do not trade - conditions unfavorable"

        return cls(
            risk_score=min(risk_score, 10.0),
            risk_level=level,
            factors=factors,
            recommendation=recommendation,
        )


class PredictionResponse(BaseModel):
    """Response completa con señal y análisis de riesgo."""

    prediction: SignalPrediction
    risk: RiskAssessment

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "prediction": {
                    "signal": "buy",
                    "confidence": 0.85,
                    "probabilities": {"sell": 0.05, "hold": 0.10, "buy": 0.85},
                    "symbol": "BTC/USDT",
                    "exchange": "binance",
                    "model_version": "v1.2.0",
                    "inference_time_ms": 12.5,
                },
                "risk": {
                    "risk_score": 2.5,
                    "risk_level": "medium",
                    "factors": ["High market volatility"],
                    "recommendation": "Consider reduced position size",
                },
            }
        }
    )


class ErrorResponse(BaseModel):
    """Schema de error estándar."""

    error: str
    detail: str | None = None
    code: str
    timestamp: datetime = Field(default_factory=datetime.utcnow)


# ═══ the seed's app (section 3) ═════════════════════════════════════════════════════════════════════════════════
@dataclass
class Settings:
    """The seed's ``app.config.settings``: where the weights are, which browser origins CORS allows."""

    MODEL_DIR: Path = Path("models")
    CORS_ORIGINS: list[str] = field(default_factory=list)

    @property
    def MODEL_PATH(self) -> Path:  # the seed's name
        return self.MODEL_DIR / "signal_predictor.pt"


class ModelState:
    """Estado global del modelo - cargado una vez, usado por todos los workers."""

    model: SignalPredictor | None = None
    device: torch.device | None = None
    version: str = "v1.2.0"

    @classmethod
    def load(cls, settings: Settings, device: str | None = None) -> None:
        """Carga el modelo en memoria."""
        logger.info("Loading SignalPredictor model...")

        # Seleccionar device (the seed's order; ``device`` overrides it)
        if device is not None:
            cls.device = torch.device(device)
        elif torch.cuda.is_available():
            cls.device = torch.device("cuda")
            logger.info("Using CUDA: %s", torch.cuda.get_device_name(0))
        elif torch.backends.mps.is_available():
            cls.device = torch.device("mps")
            logger.info("Using Apple MPS")
        else:
            cls.device = torch.device("cpu")
            logger.info("Using CPU")

        # Cargar modelo: the committed checkpoint's architecture, from its manifest
        manifest = json.loads((settings.MODEL_DIR / "manifest.json").read_text())
        cls.model = SignalPredictor(**manifest["architecture"]).to(cls.device)
        cls.version = str(manifest.get("version", "unknown"))

        # Cargar weights: a benchmark peer with random weights would measure nothing, so a missing file is fatal
        model_path = settings.MODEL_PATH
        state_dict = torch.load(model_path, map_location=cls.device, weights_only=True)
        cls.model.load_state_dict(state_dict)
        logger.info("Loaded weights from %s", model_path)

        cls.model.eval()
        logger.info("Model loaded successfully")

    @classmethod
    def unload(cls) -> None:
        """Libera el modelo de memoria."""
        cls.model = None
        if cls.device and cls.device.type == "cuda":
            torch.cuda.empty_cache()
        logger.info("Model unloaded")


def load_model(model_dir: Path | str) -> tuple[SignalPredictor, str]:
    """The peer's model as the tests check it: eval mode, CPU, the manifest's version."""
    ModelState.load(Settings(MODEL_DIR=Path(model_dir)), device="cpu")
    assert ModelState.model is not None
    model, version = ModelState.model, ModelState.version
    ModelState.unload()
    return model, version


def get_model() -> SignalPredictor:
    """Dependency que provee el modelo cargado."""
    if ModelState.model is None:
        raise HTTPException(
            status_code=503,
            detail="Model not loaded. Service starting up.",
        )
    return ModelState.model


def get_device() -> torch.device:
    """Dependency que provee el device actual."""
    if ModelState.device is None:
        raise HTTPException(status_code=503, detail="Device not initialized")
    return ModelState.device


def calculate_volatility(sequence: list[OHLCVPoint]) -> float:
    """Calcula volatilidad como desviación estándar de returns."""
    closes = [p.close for p in sequence]
    returns = [(closes[i] - closes[i - 1]) / closes[i - 1] for i in range(1, len(closes))]
    if not returns:
        return 0.0
    mean = sum(returns) / len(returns)
    variance = sum((r - mean) ** 2 for r in returns) / len(returns)
    return float(variance**0.5)


def calculate_trend_strength(sequence: list[OHLCVPoint]) -> float:
    """Calcula fuerza de tendencia (0-1)."""
    closes = [p.close for p in sequence]
    if len(closes) < 2:
        return 0.0

    total_move = abs(closes[-1] - closes[0])
    total_path = sum(abs(closes[i] - closes[i - 1]) for i in range(1, len(closes)))

    return total_move / total_path if total_path > 0 else 0.0


async def log_predictions(results: list[PredictionResponse]) -> None:
    """Log predictions to database (background task)."""
    logger.info("Logged %d predictions", len(results))


async def validation_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    """Custom handler para errores de validación Pydantic."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()

    # Formatear errores de forma más amigable
    formatted = []
    for error in errors:
        formatted.append(
            {
                "field": ".".join(str(x) for x in error["loc"]),
                "message": error["msg"],
                "type": error["type"],
            }
        )

    return JSONResponse(
        status_code=422,
        content={
            "error": "Validation Error",
            "code": "VALIDATION_FAILED",
            "details": formatted,
        },
    )


def create_app(
    model_dir: Path | str = "models",
    threads: int | None = None,
    *,
    device: str | None = None,
    cors_origins: list[str] | None = None,
) -> FastAPI:
    settings = Settings(MODEL_DIR=Path(model_dir), CORS_ORIGINS=list(cors_origins or []))
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncGenerator[None, None]:
        """
        Gestiona el ciclo de vida de la aplicación.
        - Startup: Carga el modelo
        - Shutdown: Libera recursos
        """
        ModelState.load(settings, device)
        assert ModelState.model is not None
        with torch.no_grad():  # first forward allocates; do it before accepting traffic, like the service
            ModelState.model(torch.ones(1, 60, 5, device=ModelState.device))
        yield
        ModelState.unload()

    app = FastAPI(
        title="NeuralTrade ML Engine",
        description="AI-powered trading signal prediction service",
        version="1.2.0",
        lifespan=lifespan,
        responses={
            400: {"model": ErrorResponse},
            500: {"model": ErrorResponse},
        },
    )

    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.CORS_ORIGINS,
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
    )
    app.add_exception_handler(RequestValidationError, validation_exception_handler)

    @app.get("/health")
    async def health_check() -> dict[str, object]:
        """Health check endpoint."""
        return {
            "status": "healthy",
            "model_loaded": ModelState.model is not None,
            "device": str(ModelState.device),
            "version": ModelState.version,
        }

    @app.post(
        "/predict",
        response_model=PredictionResponse,
        summary="Predict trading signal",
        description="Analyzes OHLCV sequence and predicts buy/sell/hold signal",
    )
    async def predict_signal(
        request: PredictionRequest,
        model: SignalPredictor = Depends(get_model),  # noqa: B008 - FastAPI's idiom, as the seed writes it
        device: torch.device = Depends(get_device),  # noqa: B008
    ) -> PredictionResponse:
        """
        Predice señal de trading basada en secuencia OHLCV.

        - **symbol**: Par de trading (ej. BTC/USDT)
        - **exchange**: Exchange de origen
        - **sequence**: 60 puntos OHLCV ordenados cronológicamente
        """
        start_time = time.perf_counter()

        try:
            # Convertir a tensor (ya validado por Pydantic)
            input_tensor = request.to_tensor().to(device)  # (1, 60, 5)

            # Inferencia
            with torch.no_grad():
                probabilities = model(input_tensor)  # (1, 3) the seed's model.predict: forward ends in softmax

            # Procesar resultado
            probs = probabilities.squeeze().cpu().numpy()  # (3,) [sell, hold, buy]
            signal_idx = probs.argmax()
            signal_map = {0: SignalType.SELL, 1: SignalType.HOLD, 2: SignalType.BUY}

            inference_time = (time.perf_counter() - start_time) * 1000

            # Construir respuesta
            signal_prediction = SignalPrediction(
                signal=signal_map[signal_idx],
                confidence=float(probs[signal_idx]),
                probabilities={
                    SignalType.SELL: float(probs[0]),
                    SignalType.HOLD: float(probs[1]),
                    SignalType.BUY: float(probs[2]),
                },
                symbol=request.symbol,
                exchange=request.exchange,
                model_version=ModelState.version,
                inference_time_ms=inference_time,
            )

            # Calcular riesgo
            volatility = calculate_volatility(request.sequence)
            trend_strength = calculate_trend_strength(request.sequence)

            risk_assessment = RiskAssessment.from_signal(
                signal_prediction,
                volatility=volatility,
                trend_strength=trend_strength,
            )

            return PredictionResponse(
                prediction=signal_prediction,
                risk=risk_assessment,
            )

        except Exception as e:
            logger.exception("Prediction failed")
            raise HTTPException(
                status_code=500,
                detail=f"Prediction failed: {e!s}",
            ) from e

    @app.post(
        "/predict/batch",
        response_model=list[PredictionResponse],
        summary="Batch prediction",
    )
    async def predict_batch(
        request: BatchPredictionRequest,
        background_tasks: BackgroundTasks,
        model: SignalPredictor = Depends(get_model),  # noqa: B008
        device: torch.device = Depends(get_device),  # noqa: B008
    ) -> list[PredictionResponse]:
        """
        Predicción en batch para múltiples símbolos.
        Más eficiente que llamadas individuales.
        """
        results = []

        # Batch inference (más eficiente)
        tensors = [r.to_tensor() for r in request.requests]
        batch_tensor = torch.cat(tensors, dim=0).to(device)  # (n, 60, 5)

        start_time = time.perf_counter()
        with torch.no_grad():
            batch_probs = model(batch_tensor)  # (n, 3)
        total_inference_time = (time.perf_counter() - start_time) * 1000

        # Procesar resultados
        for i, req in enumerate(request.requests):
            probs = batch_probs[i].cpu().numpy()
            signal_idx = probs.argmax()
            signal_map = {0: SignalType.SELL, 1: SignalType.HOLD, 2: SignalType.BUY}

            signal_prediction = SignalPrediction(
                signal=signal_map[signal_idx],
                confidence=float(probs[signal_idx]),
                probabilities={
                    SignalType.SELL: float(probs[0]),
                    SignalType.HOLD: float(probs[1]),
                    SignalType.BUY: float(probs[2]),
                },
                symbol=req.symbol,
                exchange=req.exchange,
                model_version=ModelState.version,
                inference_time_ms=total_inference_time / len(request.requests),
            )

            volatility = calculate_volatility(req.sequence)
            trend_strength = calculate_trend_strength(req.sequence)

            results.append(
                PredictionResponse(
                    prediction=signal_prediction,
                    risk=RiskAssessment.from_signal(signal_prediction, volatility, trend_strength),
                )
            )

        # Log en background (no bloquea respuesta)
        background_tasks.add_task(log_predictions, results)

        return results

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.seed_server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--model-dir", default="models")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all CPUs)")
    parser.add_argument("--device", default=None, help="torch device (default: the seed's cuda > mps > cpu)")
    args = parser.parse_args(argv)

    import uvicorn

    uvicorn.run(
        create_app(args.model_dir, args.threads, device=args.device),
        host=args.host,
        port=args.port,
        workers=1,  # Un worker para mantener modelo en memoria
        loop="uvloop",
        http="httptools",
        log_level="warning",
    )


if __name__ == "__main__":
    main()
