"""Open Inference Protocol v2 (KServe v2 / Triton HTTP) over the same model and batcher as /predict.

Routes (``routes`` below; `runtime.http.app.create_app` mounts them):

- ``GET /v2`` server metadata, ``GET /v2/health/live``, ``GET /v2/health/ready``
- ``GET /v2/models/signal_predictor[/versions/<v>]`` model metadata, ``.../ready`` model readiness
- ``POST /v2/models/signal_predictor[/versions/<v>]/infer``

One input, ``ohlcv_sequence`` (FP32, ``[n, 60, 5]``, raw OHLCV in `FEATURES` order), one output,
``probabilities`` (FP32, ``[n, 3]`` in `CLASSES` order). Tensors travel as JSON (``data`` flat or nested,
row-major) or with Triton's binary tensor extension: an ``Inference-Header-Content-Length: N`` request header
says the first N body bytes are the JSON header and the rest are little-endian tensors, each input naming its
size in ``parameters.binary_data_size``. Outputs come back binary when an output asks for
``parameters.binary_data: true`` or the request sets ``parameters.binary_data_output: true`` (what
``tritonclient.http`` sends when no outputs are named); the response then carries the same header.

Everything is checked against the model before anything is queued. The ONNX graph normalises the window
itself (log of prices over the last close, log1p of volume over the window's mean), so raw values go in as-is;
beyond shape and dtype we only require what that normalisation needs to stay finite and what /predict
enforces per candle: every value finite in float32, prices (open, high, low, close) > 0, volume >= 0. Unlike
/predict there are no OHLC range cross-checks: this is a tensor API and the caller owns candle validity.

Errors follow the protocol: ``{"error": "<message>"}`` with 400 (malformed), 401 (API key), 404 (unknown model
or version), 413 (body over ``max_body_bytes``), 415 (content encoding, or a Content-Type other than
``application/json``, ``application/octet-stream`` or none), 503 (not ready or overloaded) and
504 (deadline). Health and metadata stay open, like /health and /ready; inference needs the API key when the
service has keys.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from runtime.constants import MODEL_NAME, OUTPUT_NAME
from runtime.errors import EdgeError, InferenceFailed
from runtime.http.errors import error_headers, json_response
from runtime.http.request import deadline as header_deadline
from runtime.http.request import read_limited_body
from runtime.http.v2_tensors import (
    HEADER_LENGTH,
    InferenceRequest,
    binary_outputs,
    check_content_type,
    decompress,
    parse_header,
    split_body,
    windows_of,
)
from runtime.predictions import audit_record
from runtime.service import Service
from runtime.tensors import DATATYPE, max_windows
from runtime.triton import is_ready, served_model
from runtime.triton import model_config as model_config_body
from runtime.triton import model_metadata as model_metadata_body
from runtime.triton import model_statistics as model_statistics_body
from runtime.triton import server_metadata as server_metadata_body

log = logging.getLogger("runtime.http")

_FP32_LE = np.dtype("<f4")


# -- responses -----------------------------------------------------------------------------------------------
def _error(exc: EdgeError) -> Response:
    return json_response(exc.status_code, {"error": exc.message}, error_headers(exc))


Endpoint = Callable[[Request], Awaitable[Response]]


def v2_errors(endpoint: Endpoint) -> Endpoint:
    """Answer with the protocol's ``{"error"}`` body here, so the service-wide handler does not reshape it; an
    unexpected exception too (a 500 in the same shape, its text only in the log)."""

    @functools.wraps(endpoint)
    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except EdgeError as e:
            return _error(e)
        except ClientDisconnect:
            raise
        except Exception:
            log.exception("unhandled error on a v2 route", extra={"path": request.url.path})
            return json_response(500, {"error": "internal server error"})

    return wrapped


# -- model lookup --------------------------------------------------------------------------------------------
def _served_version(request: Request) -> tuple[Service, str]:
    """The service and its model version, after checking the path's model name and version against them."""
    service: Service = request.app.state.service
    info = served_model(service, request.path_params["model_name"], request.path_params.get("version"))
    return service, info.version


# -- body ----------------------------------------------------------------------------------------------------
async def _read_body(request: Request, limit: int) -> bytes:
    """The (decompressed) body, refusing more than `limit` bytes before or after decompression."""
    body = await read_limited_body(request, limit)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    return decompress(body, encoding, limit)


def _deadline(request: Request, req: InferenceRequest) -> float | None:
    """The earlier of X-Deadline-Ms (as on /predict) and Triton's ``parameters.timeout`` (microseconds)."""
    deadlines = [header_deadline(request)]
    if req.parameters.timeout is not None:
        deadlines.append(time.perf_counter() + req.parameters.timeout / 1e6)
    present = [d for d in deadlines if d is not None]
    return min(present) if present else None


# -- routes --------------------------------------------------------------------------------------------------
@v2_errors
async def server_metadata(request: Request) -> Response:
    return json_response(200, server_metadata_body())


@v2_errors
async def server_live(request: Request) -> Response:
    return json_response(200, {"live": True})


@v2_errors
async def server_ready(request: Request) -> Response:
    ready = is_ready(request.app.state.service)
    return json_response(200 if ready else 503, {"ready": ready})


@v2_errors
async def model_metadata(request: Request) -> Response:
    service: Service = request.app.state.service
    info = served_model(service, request.path_params["model_name"], request.path_params.get("version"))
    return json_response(200, model_metadata_body(info))


@v2_errors
async def model_ready(request: Request) -> Response:
    service, _ = _served_version(request)
    ready = is_ready(service)
    return json_response(200 if ready else 503, {"name": MODEL_NAME, "ready": ready})


@v2_errors
async def infer(request: Request) -> Response:
    service, version = _served_version(request)
    # Not `_ready`: while draining after SIGTERM, requests already received are still served.
    with service.admission():  # as /predict: shed before the body is read
        return await _infer(request, service, version)


async def _infer(request: Request, service: Service, version: str) -> Response:
    batcher = service.serving()
    service.authorize(request.headers.get("x-api-key"))
    check_content_type(request.headers.get("content-type"))
    body = await _read_body(request, service.settings.max_body_bytes)
    header, tail = split_body(body, request.headers.get(HEADER_LENGTH))
    req = parse_header(header)
    # A request wider than the admission queue could never be admitted: that is the client's error, not a 503.
    windows = windows_of(req, tail, max_windows(batcher.max_queue))
    binary = binary_outputs(req)
    deadline = _deadline(request, req)

    # After a hot reload the batch may have run on a newer model than the one the path was checked against:
    # report the version that computed these probabilities. v2 traffic is live traffic for the drift monitor.
    result, info = await service.run_windows(windows, deadline=deadline)
    probs = result.probabilities  # (n, 3)
    if not np.isfinite(probs).all():
        raise InferenceFailed("the model produced non-finite probabilities for this input")
    version = info.version

    output: dict[str, Any] = {"name": OUTPUT_NAME, "datatype": DATATYPE, "shape": list(probs.shape)}
    payload: dict[str, Any] = {"model_name": MODEL_NAME, "model_version": version}
    if req.id is not None:
        payload["id"] = req.id
    if info.sha256:
        # The audit record of /predict, per window; protocol parameters are scalars, so hashes are comma-joined.
        audits = [audit_record(w, info, result) for w in windows]
        payload["parameters"] = {
            "model_sha256": info.sha256,
            "window_sha256": ",".join(a["window_sha256"] for a in audits),
        }
        if "batch" in audits[0]:
            payload["parameters"].update({"batch_run": result.run_id, "batch_size": result.batch_size})
    payload["outputs"] = [output]
    if not binary:
        output["data"] = probs.ravel().tolist()
        return json_response(200, payload)
    raw = np.ascontiguousarray(probs, dtype=_FP32_LE).tobytes()
    output["parameters"] = {"binary_data_size": len(raw)}
    head = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    return Response(
        head + raw,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(head))},
    )


@v2_errors
async def model_config(request: Request) -> Response:
    """Triton's model configuration extension; open like the model metadata."""
    service: Service = request.app.state.service
    info = served_model(service, request.path_params["model_name"], request.path_params.get("version"))
    # Triton's HTTP API answers the configuration itself (gRPC wraps it in ModelConfigResponse.config).
    return json_response(200, model_config_body(service, info))


@v2_errors
async def model_statistics(request: Request) -> Response:
    """Triton's statistics extension; behind the API key when /metrics is (it reveals traffic)."""
    service: Service = request.app.state.service
    if service.settings.metrics_require_key:
        service.authorize(request.headers.get("x-api-key"))
    if "model_name" in request.path_params:
        info = served_model(service, request.path_params["model_name"], request.path_params.get("version"))
    else:  # GET /v2/models/stats: every model, which is this one
        info = served_model(service, MODEL_NAME, None)
    return json_response(200, model_statistics_body(service.metrics.stats, info))


_MODEL = "/v2/models/{model_name}"
_VERSION = "/v2/models/{model_name}/versions/{version}"

routes: list[Route] = [
    Route("/v2", server_metadata, methods=["GET"]),
    # Before the model routes: "stats" would otherwise be taken for a model name.
    Route("/v2/models/stats", model_statistics, methods=["GET"]),
    Route(f"{_MODEL}/stats", model_statistics, methods=["GET"]),
    Route(f"{_VERSION}/stats", model_statistics, methods=["GET"]),
    Route(f"{_MODEL}/config", model_config, methods=["GET"]),
    Route(f"{_VERSION}/config", model_config, methods=["GET"]),
    Route("/v2/health/live", server_live, methods=["GET"]),
    Route("/v2/health/ready", server_ready, methods=["GET"]),
    Route(_MODEL, model_metadata, methods=["GET"]),
    Route(_VERSION, model_metadata, methods=["GET"]),
    Route(f"{_MODEL}/ready", model_ready, methods=["GET"]),
    Route(f"{_VERSION}/ready", model_ready, methods=["GET"]),
    Route(f"{_MODEL}/infer", infer, methods=["POST"]),
    Route(f"{_VERSION}/infer", infer, methods=["POST"]),
]
