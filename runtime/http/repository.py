"""Triton's model repository extension over the service's versions (`runtime.repository`).

- ``GET|POST /v2/repository/index``: every version under ``model_dir`` as ``[{"name", "version", "state",
  "reason"}]``: state READY (verified, loadable; the served one's reason is ``serving``) or UNAVAILABLE with every
  reason found. The POST body may be ``{"ready": true}`` (only READY versions), as Triton's.
- ``POST /v2/repository/models/signal_predictor/load``: body empty or ``{"parameters": {"version": "..."}}``; no
  version loads the newest READY one (latest manifest ``created``, then the higher semantic version). It is the
  service's one serialized reload: verified and warmed before the swap, 409 when another reload runs or the
  version is UNAVAILABLE or fails to load (the old version keeps serving), 404 for a version the repository
  does not hold. Triton's ``config`` and ``file:`` parameters are not supported (400).
- ``POST /v2/repository/models/signal_predictor/unload``: 400. This server serves exactly one model; there is
  nothing to fall back to, so unloading it is refused rather than faked. Load another version, or stop the server.

Every route needs the API key (the index names files and why they fail verification: operator information).
Errors are the protocol's ``{"error": "..."}``; state-changing bodies are ``application/json`` or untyped (what
``tritonclient`` sends), 415 otherwise.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runtime.constants import MODEL_NAME, VERSION_PATTERN
from runtime.errors import BadRequest, ModelNotFound, UnsupportedMediaType
from runtime.http.errors import json_response
from runtime.http.request import read_limited_body
from runtime.http.v2 import v2_errors
from runtime.repository import READY, ROOT
from runtime.service import Service

_BODY_LIMIT = 4096
T = TypeVar("T", bound=BaseModel)


class IndexRequest(BaseModel):
    """Body of ``POST /v2/repository/index`` (optional)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    ready: bool = Field(default=False, description="Only versions that are READY.")


class LoadParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    version: str | None = Field(
        default=None,
        pattern=VERSION_PATTERN,
        description="A version of the repository index; absent: the newest READY one.",
        examples=["1.0.0"],
    )


class LoadRequest(BaseModel):
    """Body of ``POST /v2/repository/models/{model_name}/load`` (optional)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    parameters: LoadParameters | None = None


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    service.authorize(request.headers.get("x-api-key"))
    return service


def _check_model(request: Request) -> None:
    name = request.path_params["model_name"]
    if name != MODEL_NAME:
        raise ModelNotFound(f"unknown model '{name[:100]}'; this server serves '{MODEL_NAME}'")


async def _body(request: Request, schema: type[T]) -> T | None:
    """The optional JSON body as `schema`; 415 for a type other than JSON or none, 400 naming field and rule."""
    content_type = request.headers.get("content-type")
    if content_type is not None and content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise UnsupportedMediaType(f"Content-Type '{content_type[:100]}' is not supported; send 'application/json'")
    body = await read_limited_body(request, _BODY_LIMIT)
    if not body.strip():
        return None
    try:
        return schema.model_validate_json(body)
    except ValidationError as e:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']} ({err['type']})"
            for err in e.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise BadRequest(f"invalid request body: {'; '.join(problems)}") from e


@v2_errors
async def index(request: Request) -> Response:
    service = _service(request)
    ready_only = False
    if request.method == "POST":
        parsed = await _body(request, IndexRequest)
        ready_only = parsed is not None and parsed.ready
    entries = await asyncio.to_thread(service.repository.scan)  # hashes what changed since the last listing
    serving = service.version or ROOT
    return json_response(200, [e.index_entry(serving) for e in entries if not ready_only or e.state == READY])


@v2_errors
async def load(request: Request) -> Response:
    _check_model(request)
    service = _service(request)
    parsed = await _body(request, LoadRequest)
    version = parsed.parameters.version if parsed is not None and parsed.parameters is not None else None
    old, new = await service.reload(version, repository=True)
    return json_response(
        200,
        {
            "status": "reloaded",
            "previous_version": old.version,
            "model_version": new.version,
            "precision": new.precision,
            "provider": new.provider,
        },
    )


@v2_errors
async def unload(request: Request) -> Response:
    _check_model(request)
    _service(request)
    raise BadRequest(
        f"'{MODEL_NAME}' is the only model this server serves and cannot be unloaded; load another version "
        f"(POST /v2/repository/models/{MODEL_NAME}/load) or stop the server"
    )


routes: list[Route] = [
    Route("/v2/repository/index", index, methods=["GET", "POST"]),
    Route("/v2/repository/models/{model_name}/load", load, methods=["POST"]),
    Route("/v2/repository/models/{model_name}/unload", unload, methods=["POST"]),
]
