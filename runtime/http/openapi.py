"""OpenAPI 3.1 document of every route, generated from the Pydantic schemas (built once per exchange list).

Each operation lists every status it can answer. Besides its own, every route can answer 431 (request headers over
``max_header_bytes``, refused before routing) and 500 (an unexpected error, in the one error shape); any method a
route does not list gets the router's 405 with an ``Allow`` header. The v2 routes answer errors in the protocol's
``{"error": "..."}`` shape. Request bodies carry a valid 60-candle example, so Swagger UI's "Try it out" works.
"""

from __future__ import annotations

import functools
from typing import Any, Final

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from runtime import __version__
from runtime.constants import MAX_BATCH_REQUESTS, WINDOW_LENGTH
from runtime.http.docs import ASSETS
from runtime.http.examples import EXAMPLE_RESPONSE, example_request, example_window
from runtime.http.openapi_components import (
    DEADLINE,
    HAND_WRITTEN,
    HEADERS,
    JSON_MEDIA,
    KEY,
    OPEN,
    REF,
    error_headers,
    errors,
    header,
    json_body,
    ref,
    response,
)
from runtime.http.openapi_repository import SCHEMAS as REPOSITORY_SCHEMAS
from runtime.http.openapi_repository import repository_paths
from runtime.http.repository import IndexRequest, LoadRequest
from runtime.http.v2_tensors import InferenceRequest
from runtime.schemas import (
    DEFAULT_EXCHANGES,
    BatchPredictionRequest,
    ErrorResponse,
    PredictionRequest,
    PredictionResponse,
    ReloadRequest,
)
from runtime.tensors import MAX_INFER_WINDOWS


def _predict_paths(exchange: str) -> dict[str, Any]:
    window = example_request(exchange)
    answer = {**EXAMPLE_RESPONSE, "prediction": {**EXAMPLE_RESPONSE["prediction"], "exchange": exchange}}
    post_errors = errors("400", "401", "413", "415", "422", "429", "503", "504")
    return {
        "/predict": {
            "post": {
                "operationId": "predict",
                "tags": ["signals"],
                "summary": "Signal and risk for one 60-candle window",
                "security": KEY,
                "parameters": [DEADLINE],
                "requestBody": json_body(
                    ref("PredictionRequest"),
                    {"seed": {"summary": f"{WINDOW_LENGTH} one-minute BTC/USDT candles", "value": window}},
                ),
                "responses": {
                    "200": response("Prediction and risk", ref("PredictionResponse"), example=answer),
                    **post_errors,
                },
            }
        },
        "/predict/batch": {
            "post": {
                "operationId": "predictBatch",
                "tags": ["signals"],
                "summary": f"Signals for up to {MAX_BATCH_REQUESTS} windows, a list in request order",
                "security": KEY,
                "parameters": [DEADLINE],
                "requestBody": json_body(
                    ref("BatchPredictionRequest"),
                    {"seed": {"summary": "Two windows", "value": {"requests": [window, window]}}},
                ),
                "responses": {
                    "200": response(
                        "One PredictionResponse per window, in request order",
                        {"type": "array", "items": ref("PredictionResponse")},
                        example=[answer, answer],
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
                "security": OPEN,
                "responses": {"200": response("Process is up", ref("Health")), **errors()},
            }
        },
        "/ready": {
            "get": {
                "operationId": "ready",
                "tags": ["health"],
                "summary": "Readiness: model loaded and warmed, not draining",
                "security": OPEN,
                "responses": {
                    "200": response("Ready", ref("Ready")),
                    "503": response("Not ready: loading, draining or saturated (code NOT_READY)", ref("ErrorResponse")),
                    **errors(),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "tags": ["health"],
                "summary": "Prometheus metrics (needs X-API-Key only where EDGE_METRICS_REQUIRE_KEY is set)",
                "security": [{}, *KEY],
                "responses": {
                    "200": response("Prometheus text exposition format", {"type": "string"}, media="text/plain"),
                    **errors("401", "429"),
                },
            }
        },
        "/admin/reload": {
            "post": {
                "operationId": "adminReload",
                "tags": ["admin"],
                "summary": "Reload the model (optionally another version), verified and warmed before an atomic swap",
                "security": KEY,
                "requestBody": json_body(
                    ref("ReloadRequest"),
                    {"same": {"summary": "Reload the served version", "value": {}}},
                    required=False,
                ),
                "responses": {
                    "200": response("Reloaded", ref("Reloaded")),
                    **errors("400", "401", "409", "413", "415", "422", "429", "503"),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "tags": ["docs"],
                "summary": "This document",
                "security": OPEN,
                "responses": {"200": response("OpenAPI 3.1 document", {"type": "object"}), **errors()},
            }
        },
        "/docs": {
            "get": {
                "operationId": "docs",
                "tags": ["docs"],
                "summary": "Interactive documentation (Swagger UI), served from the package: no internet needed",
                "security": OPEN,
                "responses": {"200": response("HTML page", {"type": "string"}, media="text/html"), **errors()},
            }
        },
        "/docs/static/{name}": {
            "get": {
                "operationId": "docsAsset",
                "tags": ["docs"],
                "summary": "A Swagger UI asset (cached for a year: its URL changes with each release)",
                "security": OPEN,
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"enum": list(ASSETS)}}],
                "responses": {
                    "200": {
                        "description": "The asset",
                        "headers": {"X-Request-Id": header("RequestId")},
                        "content": {
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}},
                            "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}},
                        },
                    },
                    "304": response("Not modified (If-None-Match matched the ETag)"),
                    "404": response("No such asset", ref("ErrorResponse")),
                    **errors(),
                },
            }
        },
    }


# -- v2 (Open Inference Protocol) -------------------------------------------------------------------------------
_MODEL_NAME: Final = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION: Final = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}


def _v2_get(op: str, summary: str, ok: str, *, ready: bool = False, model: bool = False) -> dict[str, Any]:
    """A v2 GET; `model` routes check the path's model (404) and need a loaded model (503)."""
    responses: dict[str, Any] = {"200": response(summary, ref(ok))}
    if ready and model:  # not ready: the same body (false), or with no model loaded yet the error shape
        retry = {"description": "Seconds to wait (with the error shape).", "schema": {"type": "integer"}}
        responses["503"] = response("Not ready", {"anyOf": [ref(ok), ref("V2Error")]}, headers={"Retry-After": retry})
    elif ready:
        responses["503"] = response("Not ready", ref(ok))
    elif model:
        responses["503"] = response("No model loaded yet", ref("V2Error"), headers=error_headers("503"))
    return {
        "get": {
            "operationId": op,
            "tags": ["v2"],
            "summary": summary,
            "security": OPEN,
            "responses": {**responses, **errors(*(["404"] if model else []), v2=True)},
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
            "security": KEY,
            "parameters": [
                DEADLINE,
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
                    JSON_MEDIA: {
                        "schema": ref("InferenceRequest"),
                        "examples": {"window": {"summary": "One window", "value": _v2_example()}},
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "Probabilities [n, 3] in sell, hold, buy order",
                    "headers": {"X-Request-Id": header("RequestId")},
                    "content": {
                        JSON_MEDIA: {"schema": ref("InferenceResponse")},
                        "application/octet-stream": {
                            "schema": {"type": "string", "contentMediaType": "application/octet-stream"}
                        },
                    },
                },
                **errors("400", "401", "404", "413", "415", "429", "503", "504", v2=True),
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
        f"{model}/config": _v2_get("v2ModelConfig", "Triton model configuration", "V2ModelConfig", model=True),
        f"{version}/config": _v2_get("v2ModelVersionConfig", "Triton model configuration", "V2ModelConfig", model=True),
        "/v2/models/stats": _v2_get("v2Statistics", "Statistics of every model", "V2ModelStatistics", model=True),
        f"{model}/stats": _v2_get("v2ModelStatistics", "Model statistics", "V2ModelStatistics", model=True),
        f"{version}/stats": _v2_get(
            "v2ModelVersionStatistics", "Model version statistics", "V2ModelStatistics", model=True
        ),
    }
    for path in ("/v2/models/stats", f"{model}/stats", f"{version}/stats"):
        # Behind the API key when /metrics is (EDGE_METRICS_REQUIRE_KEY): they reveal traffic.
        operation = paths[path]["get"]
        operation["security"] = [{}, *KEY]
        operation["responses"].update(errors("401", "429", v2=True))
    for path, item in paths.items():
        params = [_MODEL_NAME] + ([_VERSION] if "{version}" in path else []) if "{model_name}" in path else []
        for operation in item.values():
            operation["parameters"] = params + operation.get("parameters", [])
    return paths


# -- the document -----------------------------------------------------------------------------------------------
@functools.cache
def openapi_schema(exchanges: tuple[str, ...] = DEFAULT_EXCHANGES) -> dict[str, Any]:
    """The document for a deployment accepting `exchanges` (``settings.exchanges``); cached per tuple."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (PredictionRequest, "validation"),
        (BatchPredictionRequest, "validation"),
        (ReloadRequest, "validation"),
        (InferenceRequest, "validation"),
        (IndexRequest, "validation"),
        (LoadRequest, "validation"),
        (PredictionResponse, "serialization"),
        (ErrorResponse, "serialization"),
    ]
    _, defs = models_json_schema(models, ref_template=REF)
    schemas: dict[str, Any] = {**defs["$defs"], **HAND_WRITTEN, **REPOSITORY_SCHEMAS}
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
        "paths": {**_predict_paths(example), **_v2_paths(), **repository_paths(), **_service_paths()},
        "components": {
            "schemas": schemas,
            "headers": HEADERS,
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
    }
