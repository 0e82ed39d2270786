"""OpenAPI 3.1 document generated from the Pydantic schemas (built on first use, then cached)."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from runtime import __version__
from runtime.schemas import (
    BatchPredictionRequest,
    ErrorResponse,
    PredictionRequest,
    PredictionResponse,
)

_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _json_content(name: str, *, array: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array", "items": _ref(name)} if array else _ref(name)
    return {"application/json": {"schema": schema}}


_ERRORS = {
    "400": "Malformed JSON or header",
    "401": "Missing or invalid X-API-Key",
    "413": "Body larger than the limit",
    "415": "Content-Type is not application/json",
    "422": "Validation failed; `details` names each field and rule",
    "503": "Not ready, draining, or overloaded (see Retry-After)",
    "504": "Deadline passed before the model ran",
}


def _post(summary: str, request: str, response: str, *, array: bool = False) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": [{"ApiKey": []}],
            "parameters": [
                {
                    "name": "X-Deadline-Ms",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 600000},
                    "description": "Budget in ms; work still queued when it passes is not computed (504).",
                }
            ],
            "requestBody": {"required": True, "content": _json_content(request)},
            "responses": {
                "200": {"description": "Prediction", "content": _json_content(response, array=array)},
                **{code: {"description": d, "content": _json_content("ErrorResponse")} for code, d in _ERRORS.items()},
            },
        }
    }


def _get(summary: str, codes: dict[str, str]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "security": [],
            "responses": {c: {"description": d, "content": {"application/json": {}}} for c, d in codes.items()},
        }
    }


@functools.cache
def openapi_schema() -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        PredictionRequest,
        BatchPredictionRequest,
        PredictionResponse,
        ErrorResponse,
    ]
    _, defs = models_json_schema(
        [(m, "validation" if m.__name__.endswith("Request") else "serialization") for m in models],
        ref_template=_REF,
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": "NeuralTrade Edge", "version": __version__},
        "paths": {
            "/predict": _post("Signal for one 60-candle window", "PredictionRequest", "PredictionResponse"),
            "/predict/batch": _post(
                "Signals for up to 100 windows, a list in request order",
                "BatchPredictionRequest",
                "PredictionResponse",
                array=True,
            ),
            "/health": _get("Liveness", {"200": "Process is up"}),
            "/ready": _get("Readiness: model loaded and warmed", {"200": "Ready", "503": "Not ready"}),
        },
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
    }
