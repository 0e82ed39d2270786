"""OpenAPI paths of Triton's model repository extension (`runtime.http.repository`)."""

from __future__ import annotations

from typing import Any, Final

from runtime.constants import MODEL_NAME
from runtime.http.openapi_components import KEY, errors, json_body, ref, response

#: Response bodies the repository handlers build as dicts.
SCHEMAS: Final[dict[str, Any]] = {
    "V2RepositoryIndex": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "state": {"enum": ["READY", "UNAVAILABLE"]},
                "reason": {
                    "type": "string",
                    "description": "Why UNAVAILABLE (every problem, '; '-separated); 'serving' for the served "
                    "version; empty for another READY one.",
                },
            },
            "required": ["name", "version", "state", "reason"],
        },
    },
}

_MODEL_NAME: Final = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}
_INDEX_OK: Final = response("Every version, the root first", ref("V2RepositoryIndex"))


def _index(method: str) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": f"v2RepositoryIndex{method.capitalize()}",
        "tags": ["v2"],
        "summary": "Model repository index: every version under the model directory, READY or UNAVAILABLE "
        "with the reason",
        "security": KEY,
        "responses": {"200": _INDEX_OK, **errors("401", "429", v2=True)},
    }
    if method == "post":
        operation["requestBody"] = json_body(
            ref("IndexRequest"), {"all": {"summary": "Every version", "value": {}}}, required=False
        )
        operation["responses"].update(errors("400", "401", "413", "415", "429", v2=True))
        _describe(operation, "400", "Malformed JSON, or a field other than `ready`")
    return operation


def _describe(operation: dict[str, Any], status: str, description: str) -> None:
    operation["responses"][status] = {**operation["responses"][status], "description": description}


def repository_paths() -> dict[str, Any]:
    load = {
        "operationId": "v2RepositoryLoad",
        "tags": ["v2"],
        "summary": "Load a version (or the newest READY one): verified and warmed, then swapped in; a failed "
        "load keeps the old version serving (409)",
        "security": KEY,
        "parameters": [_MODEL_NAME],
        "requestBody": json_body(
            ref("LoadRequest"),
            {
                "newest": {"summary": "The newest READY version", "value": {}},
                "version": {"summary": "A named version", "value": {"parameters": {"version": "1.0.0"}}},
            },
            required=False,
        ),
        "responses": {
            "200": response("Loaded", ref("Reloaded")),
            **errors("400", "401", "404", "409", "413", "415", "429", "503", v2=True),
        },
    }
    _describe(load, "400", "Malformed JSON, or a parameter other than `version` (Triton's `config`, `file:`)")
    unload = {
        "operationId": "v2RepositoryUnload",
        "tags": ["v2"],
        "summary": f"Refused (400): '{MODEL_NAME}' is the only model served and cannot be unloaded",
        "security": KEY,
        "parameters": [_MODEL_NAME],
        "responses": errors("400", "401", "404", "429", v2=True),
    }
    _describe(unload, "400", "Always: the single served model cannot be unloaded")
    return {
        "/v2/repository/index": {"get": _index("get"), "post": _index("post")},
        "/v2/repository/models/{model_name}/load": {"post": load},
        "/v2/repository/models/{model_name}/unload": {"post": unload},
    }
