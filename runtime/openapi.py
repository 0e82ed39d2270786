"""OpenAPI 3.1 document of every route, generated from the Pydantic schemas (built once per exchange list).

Each operation lists every status it can answer. Besides its own, every route can answer 431 (request headers over
``max_header_bytes``, refused before routing) and 500 (an unexpected error, in the one error shape); any method a
route does not list gets the router's 405 with an ``Allow`` header. The v2 routes answer errors in the protocol's
``{"error": "..."}`` shape. Request bodies carry a valid 60-candle example, so Swagger UI's "Try it out" works.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from runtime import __version__
from runtime.constants import MAX_BATCH_REQUESTS, WINDOW_LENGTH
from runtime.docs import ASSETS
from runtime.schemas import (
    DEFAULT_EXCHANGES,
    BatchPredictionRequest,
    ErrorResponse,
    PredictionRequest,
    PredictionResponse,
    ReloadRequest,
)
from runtime.v2 import MAX_INFER_WINDOWS, InferenceRequest

_REF = "#/components/schemas/{model}"
_JSON = "application/json"

# -- examples ---------------------------------------------------------------------------------------------------
#: The seed's example candle (its OHLCVPoint's json_schema_extra), the first of the example window.
SEED_CANDLE: Final = {
    "timestamp": "2024-01-15T10:30:00Z",
    "open": 42150.50,
    "high": 42300.00,
    "low": 42100.00,
    "close": 42250.75,
    "volume": 1234.56,
}


def example_window() -> list[dict[str, Any]]:
    """A valid window: the seed's candle, then 59 more one minute apart on a small deterministic walk.

    Integer cents throughout, so every value is exact on every platform; each candle opens at the previous close,
    moves at most 13.75 and has low <= open, close <= high.
    """
    start = datetime(2024, 1, 15, 10, 30, tzinfo=UTC)
    candles = [dict(SEED_CANDLE)]
    close = 4_225_075  # cents
    for i in range(1, WINDOW_LENGTH):
        open_ = close
        close = open_ + ((i * 37) % 23 - 11) * 125
        high = max(open_, close) + 500 + (i * 13) % 7 * 100
        low = min(open_, close) - 400 - (i * 11) % 5 * 100
        volume = 123_456 + ((i * 29) % 17 - 8) * 2_500
        candles.append(
            {
                "timestamp": (start + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "open": open_ / 100,
                "high": high / 100,
                "low": low / 100,
                "close": close / 100,
                "volume": volume / 100,
            }
        )
    return candles


def example_request(exchange: str = "binance") -> dict[str, Any]:
    """The documented /predict body (the seed's symbol and exchange)."""
    return {"symbol": "BTC/USDT", "exchange": exchange, "sequence": example_window()}


def _window_sha256(candles: list[dict[str, Any]]) -> str:
    rows = [[c["open"], c["high"], c["low"], c["close"], c["volume"]] for c in candles]
    return hashlib.sha256(np.asarray(rows, dtype="<f4").tobytes()).hexdigest()


#: The seed's PredictionResponse example, with the fields the service adds and a risk score that matches its
#: one factor (the seed's 2.5 does not: "High market volatility" alone adds 3.0).
EXAMPLE_RESPONSE: Final[dict[str, Any]] = {
    "prediction": {
        "signal": "buy",
        "confidence": 0.85,
        "probabilities": {"sell": 0.05, "hold": 0.10, "buy": 0.85},
        "symbol": "BTC/USDT",
        "exchange": "binance",
        "model_version": "v1.2.0",
        "inference_time_ms": 12.5,
        "timestamp": "2024-01-15T10:30:00Z",
        "request_id": "5b4854fdb3a84ce39add4abebfd440eb",
        "precision": "int8",
        "provider": "cpu",
    },
    "risk": {
        "risk_score": 3.0,
        "risk_level": "medium",
        "factors": ["High market volatility"],
        "recommendation": "Consider reduced position size",
        "volatility": 0.0612,
        "trend_strength": 0.45,
        "fmea": {
            "severity": 7,
            "occurrence": 6,
            "detection": 1,
            "risk_priority_number": 42,
            "risk_level": "low",
            "log_volatility": 0.0594,
            "factors": ["volatility 0.0594 per candle (severity 7)", "model entropy 0.55 of maximum (occurrence 6)"],
        },
    },
    "audit": {
        "model_sha256": "9ca945c28711b7c8f132967f63080163964d951e65002d7c2b7b6f672d16473a",
        "window_sha256": _window_sha256(example_window()),
    },
}


# -- building blocks --------------------------------------------------------------------------------------------
def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _header(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name}"}


def _response(
    description: str,
    schema: dict[str, Any] | None = None,
    *,
    media: str = _JSON,
    example: Any = None,
    headers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "headers": {"X-Request-Id": _header("RequestId"), **(headers or {})},
    }
    if schema is not None:
        content: dict[str, Any] = {"schema": schema}
        if example is not None:
            content["example"] = example
        out["content"] = {media: content}
    return out


#: Why each error status happens, on the routes that speak the service's error shape.
_ERRORS: Final = {
    "400": "Malformed JSON, an empty body, or a bad header (X-Deadline-Ms, Content-Length)",
    "401": "Missing or invalid X-API-Key",
    "404": "Unknown model or version",
    "409": "The new model failed to load or verify; the old one keeps serving",
    "413": "Body larger than the limit",
    "415": "Content-Type is not application/json",
    "422": "Validation failed; `details` names each field and rule (code VALIDATION_FAILED, or STALE_WINDOW)",
    "429": "This API key's request rate is used up (code RATE_LIMITED); retry after Retry-After seconds",
    "431": "Request headers larger than the limit",
    "500": "Unexpected error (code INTERNAL_ERROR or INFERENCE_FAILED)",
    "503": "Not ready, draining, or overloaded; retry after Retry-After seconds",
    "504": "The X-Deadline-Ms budget passed before the model ran; the window was not computed",
}
_V2_ERRORS: Final = {
    **_ERRORS,
    "400": "Malformed request, or tensors that do not fit the model (name, datatype, shape, values)",
    "415": "Content-Encoding other than gzip, deflate or identity",
    "500": "Unexpected error, or the model produced non-finite probabilities",
}


def _error_headers(code: str) -> dict[str, Any]:
    if code == "401":
        return {"WWW-Authenticate": _header("WWWAuthenticate")}
    if code in ("429", "503"):
        return {"Retry-After": _header("RetryAfter")}
    return {}


def _errors(*codes: str, v2: bool = False) -> dict[str, Any]:
    """Error responses for `codes`, plus the 431 and 500 every route can answer."""
    texts = _V2_ERRORS if v2 else _ERRORS
    schema = _ref("V2Error" if v2 else "ErrorResponse")
    out = {code: _response(texts[code], schema, headers=_error_headers(code)) for code in codes}
    out["431"] = _response(_ERRORS["431"], _ref("ErrorResponse"))
    out["431"]["headers"] = {}  # refused before the request gets an id
    out["500"] = _response(texts["500"], schema)  # ErrorResponse also has the v2 shape's "error"
    return out


_DEADLINE: Final = {
    "name": "X-Deadline-Ms",
    "in": "header",
    "required": False,
    "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 600000},
    "description": "Budget in ms from now; work still queued when it passes is not computed (504).",
}
_KEY: Final[list[dict[str, list[str]]]] = [{"ApiKey": []}]
_OPEN: Final[list[dict[str, list[str]]]] = []


def _json_body(schema: dict[str, Any], examples: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {_JSON: {"schema": schema, "examples": examples}}}


def _predict_paths(exchange: str) -> dict[str, Any]:
    window = example_request(exchange)
    response = {**EXAMPLE_RESPONSE, "prediction": {**EXAMPLE_RESPONSE["prediction"], "exchange": exchange}}
    post_errors = _errors("400", "401", "413", "415", "422", "429", "503", "504")
    return {
        "/predict": {
            "post": {
                "operationId": "predict",
                "tags": ["signals"],
                "summary": "Signal and risk for one 60-candle window",
                "security": _KEY,
                "parameters": [_DEADLINE],
                "requestBody": _json_body(
                    _ref("PredictionRequest"),
                    {"seed": {"summary": f"{WINDOW_LENGTH} one-minute BTC/USDT candles", "value": window}},
                ),
                "responses": {
                    "200": _response("Prediction and risk", _ref("PredictionResponse"), example=response),
                    **post_errors,
                },
            }
        },
        "/predict/batch": {
            "post": {
                "operationId": "predictBatch",
                "tags": ["signals"],
                "summary": f"Signals for up to {MAX_BATCH_REQUESTS} windows, a list in request order",
                "security": _KEY,
                "parameters": [_DEADLINE],
                "requestBody": _json_body(
                    _ref("BatchPredictionRequest"),
                    {"seed": {"summary": "Two windows", "value": {"requests": [window, window]}}},
                ),
                "responses": {
                    "200": _response(
                        "One PredictionResponse per window, in request order",
                        {"type": "array", "items": _ref("PredictionResponse")},
                        example=[response, response],
                    ),
                    **post_errors,
                },
            }
        },
    }


def _service_paths() -> dict[str, Any]:
    return {
        "/health": {
            "get": {
                "operationId": "health",
                "tags": ["health"],
                "summary": "Liveness: the process answers",
                "security": _OPEN,
                "responses": {"200": _response("Process is up", _ref("Health")), **_errors()},
            }
        },
        "/ready": {
            "get": {
                "operationId": "ready",
                "tags": ["health"],
                "summary": "Readiness: model loaded and warmed, not draining",
                "security": _OPEN,
                "responses": {
                    "200": _response("Ready", _ref("Ready")),
                    "503": _response("Not ready: loading or draining (code NOT_READY)", _ref("ErrorResponse")),
                    **_errors(),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "tags": ["health"],
                "summary": "Prometheus metrics (needs X-API-Key only where EDGE_METRICS_REQUIRE_KEY is set)",
                "security": [{}, *_KEY],
                "responses": {
                    "200": _response("Prometheus text exposition format", {"type": "string"}, media="text/plain"),
                    **_errors("401", "429"),
                },
            }
        },
        "/admin/reload": {
            "post": {
                "operationId": "adminReload",
                "tags": ["admin"],
                "summary": "Reload the model (optionally another version), verified and warmed before an atomic swap",
                "security": _KEY,
                "requestBody": _json_body(
                    _ref("ReloadRequest"),
                    {"same": {"summary": "Reload the served version", "value": {}}},
                    required=False,
                ),
                "responses": {
                    "200": _response("Reloaded", _ref("Reloaded")),
                    **_errors("400", "401", "409", "413", "415", "422", "429", "503"),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "tags": ["docs"],
                "summary": "This document",
                "security": _OPEN,
                "responses": {"200": _response("OpenAPI 3.1 document", {"type": "object"}), **_errors()},
            }
        },
        "/docs": {
            "get": {
                "operationId": "docs",
                "tags": ["docs"],
                "summary": "Interactive documentation (Swagger UI), served from the package: no internet needed",
                "security": _OPEN,
                "responses": {"200": _response("HTML page", {"type": "string"}, media="text/html"), **_errors()},
            }
        },
        "/docs/static/{name}": {
            "get": {
                "operationId": "docsAsset",
                "tags": ["docs"],
                "summary": "A Swagger UI asset (cached for a year: its URL changes with each release)",
                "security": _OPEN,
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"enum": list(ASSETS)}}],
                "responses": {
                    "200": {
                        "description": "The asset",
                        "headers": {"X-Request-Id": _header("RequestId")},
                        "content": {
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}},
                            "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}},
                        },
                    },
                    "304": _response("Not modified (If-None-Match matched the ETag)"),
                    "404": _response("No such asset", _ref("ErrorResponse")),
                    **_errors(),
                },
            }
        },
    }


# -- v2 (Open Inference Protocol) -------------------------------------------------------------------------------
_MODEL_NAME: Final = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION: Final = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}


def _v2_get(op: str, summary: str, ok: str, *, ready: bool = False, model: bool = False) -> dict[str, Any]:
    """A v2 GET; `model` routes check the path's model (404) and need a loaded model (503)."""
    responses: dict[str, Any] = {"200": _response(summary, _ref(ok))}
    if ready and model:  # not ready: the same body (false), or with no model loaded yet the error shape
        retry = {"description": "Seconds to wait (with the error shape).", "schema": {"type": "integer"}}
        responses["503"] = _response(
            "Not ready", {"anyOf": [_ref(ok), _ref("V2Error")]}, headers={"Retry-After": retry}
        )
    elif ready:
        responses["503"] = _response("Not ready", _ref(ok))
    elif model:
        responses["503"] = _response("No model loaded yet", _ref("V2Error"), headers=_error_headers("503"))
    return {
        "get": {
            "operationId": op,
            "tags": ["v2"],
            "summary": summary,
            "security": _OPEN,
            "responses": {**responses, **_errors(*(["404"] if model else []), v2=True)},
        }
    }


def _v2_infer(op: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": op,
            "tags": ["v2"],
            "summary": f"Inference on [n, {WINDOW_LENGTH}, 5] raw OHLCV windows (n <= {MAX_INFER_WINDOWS})",
            "description": "Tensors travel as JSON, or with Triton's binary tensor extension: an "
            "`Inference-Header-Content-Length: N` header says the first N bytes are the JSON header and the rest "
            "little-endian tensors. Outputs come back binary (application/octet-stream, same header) when asked.",
            "security": _KEY,
            "parameters": [
                _DEADLINE,
                {
                    "name": "Inference-Header-Content-Length",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1},
                    "description": "Bytes of JSON header before the binary tensors (binary tensor extension).",
                },
            ],
            "requestBody": {
                "required": True,
                "content": {
                    _JSON: {
                        "schema": _ref("InferenceRequest"),
                        "examples": {"window": {"summary": "One window", "value": _v2_example()}},
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "Probabilities [n, 3] in sell, hold, buy order",
                    "headers": {"X-Request-Id": _header("RequestId")},
                    "content": {
                        _JSON: {"schema": _ref("InferenceResponse")},
                        "application/octet-stream": {
                            "schema": {"type": "string", "contentMediaType": "application/octet-stream"}
                        },
                    },
                },
                **_errors("400", "401", "404", "413", "415", "429", "503", "504", v2=True),
            },
        }
    }


def _v2_example() -> dict[str, Any]:
    rows = [[c["open"], c["high"], c["low"], c["close"], c["volume"]] for c in example_window()]
    return {"inputs": [{"name": "ohlcv_sequence", "datatype": "FP32", "shape": [1, WINDOW_LENGTH, 5], "data": rows}]}


def _v2_paths() -> dict[str, Any]:
    model, version = "/v2/models/{model_name}", "/v2/models/{model_name}/versions/{version}"
    paths = {
        "/v2": _v2_get("v2ServerMetadata", "Server metadata", "V2ServerMetadata"),
        "/v2/health/live": _v2_get("v2ServerLive", "Server liveness", "V2Live"),
        "/v2/health/ready": _v2_get("v2ServerReady", "Server readiness", "V2Ready", ready=True),
        model: _v2_get("v2ModelMetadata", "Model metadata", "V2ModelMetadata", model=True),
        version: _v2_get("v2ModelVersionMetadata", "Model version metadata", "V2ModelMetadata", model=True),
        f"{model}/ready": _v2_get("v2ModelReady", "Model readiness", "V2ModelReady", ready=True, model=True),
        f"{version}/ready": _v2_get(
            "v2ModelVersionReady", "Model version readiness", "V2ModelReady", ready=True, model=True
        ),
        f"{model}/infer": _v2_infer("v2Infer"),
        f"{version}/infer": _v2_infer("v2InferVersion"),
    }
    for path, item in paths.items():
        params = [_MODEL_NAME] + ([_VERSION] if "{version}" in path else []) if "{model_name}" in path else []
        for operation in item.values():
            operation["parameters"] = params + operation.get("parameters", [])
    return paths


def _obj(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required or properties)}


_STR: Final = {"type": "string"}
_TENSOR_META: Final = _obj({"name": _STR, "datatype": _STR, "shape": {"type": "array", "items": {"type": "integer"}}})

#: Response bodies the handlers write as dicts (the v2 protocol's and the service's small ones).
_HAND_WRITTEN: Final[dict[str, dict[str, Any]]] = {
    "Health": _obj({"status": {"const": "alive"}, "version": _STR}),
    "Ready": _obj(
        {
            "status": {"const": "ready"},
            "model": _STR,
            "model_version": _STR,
            "precision": {"enum": ["int8", "fp32"]},
            "provider": _STR,
            "intra_op_threads": {"type": "integer"},
        }
    ),
    "Reloaded": _obj(
        {
            "status": {"const": "reloaded"},
            "previous_version": _STR,
            "model_version": _STR,
            "precision": {"enum": ["int8", "fp32"]},
            "provider": _STR,
        }
    ),
    "V2Error": _obj({"error": _STR}),
    "V2ServerMetadata": _obj({"name": _STR, "version": _STR, "extensions": {"type": "array", "items": _STR}}),
    "V2Live": _obj({"live": {"type": "boolean"}}),
    "V2Ready": _obj({"ready": {"type": "boolean"}}),
    "V2ModelReady": _obj({"name": _STR, "ready": {"type": "boolean"}}),
    "V2ModelMetadata": _obj(
        {
            "name": _STR,
            "versions": {"type": "array", "items": _STR},
            "platform": _STR,
            "inputs": {"type": "array", "items": _TENSOR_META},
            "outputs": {"type": "array", "items": _TENSOR_META},
        }
    ),
    "InferenceResponse": _obj(
        {
            "model_name": _STR,
            "model_version": _STR,
            "id": _STR,
            "outputs": {
                "type": "array",
                "items": _obj(
                    {
                        **_TENSOR_META["properties"],
                        "data": {"type": "array", "items": {"type": "number"}},
                        "parameters": _obj({"binary_data_size": {"type": "integer", "minimum": 0}}),
                    },
                    "name",
                    "datatype",
                    "shape",
                ),
            },
        },
        "model_name",
        "model_version",
        "outputs",
    ),
}

_HEADERS: Final = {
    "RequestId": {"description": "The request's id (the client's X-Request-Id when valid).", "schema": _STR},
    "RetryAfter": {"description": "Seconds to wait before retrying.", "required": True, "schema": {"type": "integer"}},
    "WWWAuthenticate": {"description": "The challenge: ApiKey.", "required": True, "schema": _STR},
}


# -- the document -----------------------------------------------------------------------------------------------
@functools.cache
def openapi_schema(exchanges: tuple[str, ...] = DEFAULT_EXCHANGES) -> dict[str, Any]:
    """The document for a deployment accepting `exchanges` (``settings.exchanges``); cached per tuple."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (PredictionRequest, "validation"),
        (BatchPredictionRequest, "validation"),
        (ReloadRequest, "validation"),
        (InferenceRequest, "validation"),
        (PredictionResponse, "serialization"),
        (ErrorResponse, "serialization"),
    ]
    _, defs = models_json_schema(models, ref_template=_REF)
    schemas: dict[str, Any] = {**defs["$defs"], **_HAND_WRITTEN}
    for model in ("InferenceRequest", "InputTensor", "RequestedOutput"):  # v2 takes "parameters": null as {}
        parameters = schemas[model]["properties"]["parameters"]
        parameters["anyOf"] = [{"$ref": parameters.pop("$ref")}, {"type": "null"}]
    exchange = schemas["PredictionRequest"]["properties"]["exchange"]
    exchange["enum"] = list(exchanges)
    example = "binance" if "binance" in exchanges else exchanges[0]
    exchange["examples"] = [example]
    exchange["description"] = f"Exchange the candles come from: one of this service's ({', '.join(exchanges)})."
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "NeuralTrade Edge",
            "version": __version__,
            "description": "Trading signals from an ONNX model at the edge: the seed's /predict contract, the Open "
            "Inference Protocol v2, health, metrics and hot reload. Errors share one shape "
            '(`error`, `code`, `details`, `request_id`); the v2 routes answer `{"error"}` as the protocol does.',
        },
        "tags": [
            {"name": "signals", "description": "The seed's prediction contract"},
            {"name": "v2", "description": "Open Inference Protocol v2 (KServe v2 / Triton HTTP)"},
            {"name": "health", "description": "Liveness, readiness and metrics"},
            {"name": "admin", "description": "Operating the service"},
            {"name": "docs", "description": "This document and its viewer"},
        ],
        "paths": {**_predict_paths(example), **_v2_paths(), **_service_paths()},
        "components": {
            "schemas": schemas,
            "headers": _HEADERS,
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
    }
