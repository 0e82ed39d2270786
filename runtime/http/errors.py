"""The one JSON error shape of the HTTP API, and the handlers that produce it.

``{"error", "code", "details": [{"field", "message", "type"}], "request_id"}``; a 422 is the seed handler's
(``"code": "VALIDATION_FAILED"``, ``"error": "Validation Error"``). The v2 routes answer ``{"error"}`` as their
protocol says, with the same status and headers (`error_headers`).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from runtime.errors import EdgeError, detail
from runtime.http.request import request_id


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def error_body(error: str, code: str, details: list[dict[str, Any]] | None = None, rid: str | None = None) -> Any:
    return {"error": error, "code": code, "details": details or [], "request_id": rid}


def error_headers(exc: EdgeError) -> dict[str, str]:
    """Headers an error carries: its own (Retry-After of a 429), Retry-After on a 503, the 401 challenge."""
    headers = dict(exc.headers)
    if exc.status_code == 503:
        headers.setdefault("Retry-After", "1")
    elif exc.status_code == 401:
        headers["WWW-Authenticate"] = "ApiKey"
    return headers


def validation_details(e: ValidationError) -> tuple[int, str, str, list[dict[str, Any]]]:
    """Status, code, message and details of a request body Pydantic refused (invalid JSON: 400, else 422)."""
    # FastAPI (the seed) prefixes body fields with "body": clients parse "body.sequence.3.high".
    errors = e.errors(include_url=False, include_input=False, include_context=False)
    details = [detail(("body", *err["loc"]), err["msg"], err["type"]) for err in errors]
    if any(err["type"] == "json_invalid" for err in errors):
        return 400, "BAD_REQUEST", "request body is not valid JSON", details
    return 422, "VALIDATION_FAILED", "Validation Error", details


async def edge_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EdgeError)
    body = error_body(exc.message, exc.code, exc.details, request_id(request.scope))
    return json_response(exc.status_code, body, error_headers(exc))


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    status, code, message, details = validation_details(exc)
    return json_response(status, error_body(message, code, details, request_id(request.scope)))


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
    return json_response(
        exc.status_code,
        error_body(str(exc.detail), codes.get(exc.status_code, "HTTP_ERROR"), rid=request_id(request.scope)),
        dict(exc.headers) if exc.headers else None,
    )


HANDLERS = {EdgeError: edge_error, ValidationError: validation_error, HTTPException: http_error}
