"""OpenAPI components written by hand: the response bodies handlers build as dicts (the v2 protocol's and the
small service routes'), and the response headers."""

from __future__ import annotations

from typing import Any, Final

REF: Final = "#/components/schemas/{model}"
JSON_MEDIA: Final = "application/json"


def _obj(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required or properties)}


_STR: Final = {"type": "string"}
_TENSOR_META: Final = _obj({"name": _STR, "datatype": _STR, "shape": {"type": "array", "items": {"type": "integer"}}})

_COUNT: Final = {"type": "integer", "minimum": 0}
_DURATION: Final = _obj({"count": _COUNT, "ns": _COUNT})
_CONFIG_TENSOR: Final = _obj(
    {"name": _STR, "data_type": {"const": "TYPE_FP32"}, "dims": {"type": "array", "items": {"type": "integer"}}}
)

#: Response bodies the handlers write as dicts (the v2 protocol's and the service's small ones).
HAND_WRITTEN: Final[dict[str, dict[str, Any]]] = {
    "Health": _obj({"status": {"const": "alive"}, "version": _STR}),
    "Ready": _obj(
        {
            "status": {"const": "ready"},
            "model": _STR,
            "model_version": _STR,
            "precision": {"enum": ["int8", "fp32"]},
            "provider": _STR,
            "intra_op_threads": {"type": "integer"},
            "instances": {"type": "integer"},
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
    # Triton's model configuration (protobuf's JSON form of ModelConfig), as runtime.triton builds it.
    "V2ModelConfig": _obj(
        {
            "name": _STR,
            "platform": {"const": "onnxruntime_onnx"},
            "backend": _STR,
            "version_policy": {"type": "object"},
            "max_batch_size": {"type": "integer", "minimum": 1},
            "input": {"type": "array", "items": _CONFIG_TENSOR},
            "output": {"type": "array", "items": _CONFIG_TENSOR},
            "dynamic_batching": {"type": "object"},
            "instance_group": {"type": "array", "items": {"type": "object"}},
            "default_model_filename": _STR,
            "parameters": {"type": "object", "additionalProperties": _obj({"string_value": _STR})},
        }
    ),
    # Triton's statistics extension: one entry per model (here, one).
    "V2ModelStatistics": _obj(
        {
            "model_stats": {
                "type": "array",
                "items": _obj(
                    {
                        "name": _STR,
                        "version": _STR,
                        "last_inference": _COUNT,
                        "inference_count": _COUNT,
                        "execution_count": _COUNT,
                        "inference_stats": {"type": "object", "additionalProperties": _DURATION},
                        "batch_stats": {"type": "array", "items": {"type": "object"}},
                    }
                ),
            }
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

HEADERS: Final = {
    "RequestId": {"description": "The request's id (the client's X-Request-Id when valid).", "schema": _STR},
    "RetryAfter": {"description": "Seconds to wait before retrying.", "required": True, "schema": {"type": "integer"}},
    "WWWAuthenticate": {"description": "The challenge: ApiKey.", "required": True, "schema": _STR},
}


# -- building blocks --------------------------------------------------------------------------------------------
def ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def header(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name}"}


def response(
    description: str,
    schema: dict[str, Any] | None = None,
    *,
    media: str = JSON_MEDIA,
    example: Any = None,
    headers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "headers": {"X-Request-Id": header("RequestId"), **(headers or {})},
    }
    if schema is not None:
        content: dict[str, Any] = {"schema": schema}
        if example is not None:
            content["example"] = example
        out["content"] = {media: content}
    return out


#: Why each error status happens, on the routes that speak the service's error shape.
ERRORS: Final = {
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
    **ERRORS,
    "400": "Malformed request, or tensors that do not fit the model (name, datatype, shape, values)",
    "415": "Content-Encoding other than gzip, deflate or identity",
    "500": "Unexpected error, or the model produced non-finite probabilities",
}


def error_headers(code: str) -> dict[str, Any]:
    if code == "401":
        return {"WWW-Authenticate": header("WWWAuthenticate")}
    if code in ("429", "503"):
        return {"Retry-After": header("RetryAfter")}
    return {}


def errors(*codes: str, v2: bool = False) -> dict[str, Any]:
    """Error responses for `codes`, plus the 431 and 500 every route can answer."""
    texts = _V2_ERRORS if v2 else ERRORS
    schema = ref("V2Error" if v2 else "ErrorResponse")
    out = {code: response(texts[code], schema, headers=error_headers(code)) for code in codes}
    out["431"] = response(ERRORS["431"], ref("ErrorResponse"))
    out["431"]["headers"] = {}  # refused before the request gets an id
    out["500"] = response(texts["500"], schema)  # ErrorResponse also has the v2 shape's "error"
    return out


DEADLINE: Final = {
    "name": "X-Deadline-Ms",
    "in": "header",
    "required": False,
    "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 600000},
    "description": "Budget in ms from now; work still queued when it passes is not computed (504).",
}
KEY: Final[list[dict[str, list[str]]]] = [{"ApiKey": []}]
OPEN: Final[list[dict[str, list[str]]]] = []


def json_body(schema: dict[str, Any], examples: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {JSON_MEDIA: {"schema": schema, "examples": examples}}}
