"""Open Inference Protocol v2 (KServe v2 / Triton HTTP) over the same model and batcher as /predict.

Routes (``routes`` below; `runtime.app.create_app` mounts them):

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
or version), 413 (body over ``max_body_bytes``), 415 (content encoding), 503 (not ready or overloaded) and
504 (deadline). Health and metadata stay open, like /health and /ready; inference needs the API key when the
service has keys.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any, Final, TypeVar

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runtime import __version__
from runtime.body import read_limited_body
from runtime.constants import INPUT_NAME, MODEL_NAME, N_CLASSES, N_FEATURES, OUTPUT_NAME, WINDOW_LENGTH
from runtime.errors import (
    BadRequest,
    DeadlineExceeded,
    EdgeError,
    InferenceFailed,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from runtime.predictions import audit_record
from runtime.session import ModelInfo
from runtime.types import Float32Array

if TYPE_CHECKING:  # runtime.app mounts these routes; importing it at run time would be a cycle
    from runtime.app import Service

SERVER_NAME: Final = "neuraltrade-edge"
PLATFORM: Final = "onnxruntime_onnx"
DATATYPE: Final = "FP32"
#: Most windows in one v2 infer request. The batcher runs a request whole, so this also bounds one model run.
MAX_INFER_WINDOWS: Final = 1024
HEADER_LENGTH: Final = "inference-header-content-length"

_FP32_LE = np.dtype("<f4")
_PRICE_COLUMNS = slice(0, 4)  # open, high, low, close; column 4 is volume
_TENSOR_METADATA: Final = {
    "inputs": [{"name": INPUT_NAME, "datatype": DATATYPE, "shape": [-1, WINDOW_LENGTH, N_FEATURES]}],
    "outputs": [{"name": OUTPUT_NAME, "datatype": DATATYPE, "shape": [-1, N_CLASSES]}],
}


class ModelNotFound(EdgeError):
    """The path names a model or version this server does not serve."""

    status_code = 404
    code = "MODEL_NOT_FOUND"


# -- the request header (schemas: structure only; meaning is checked against the model below) --------------
class _Parameters(BaseModel):
    # The protocol lets clients add their own parameters; ignore them rather than fail.
    model_config = ConfigDict(extra="allow", frozen=True)


def _null_is_empty(value: object) -> object:
    # Some clients write "parameters": null for "no parameters"; treat it as the empty object it means.
    return {} if value is None else value


_P = TypeVar("_P", bound=_Parameters)
Params = Annotated[_P, BeforeValidator(_null_is_empty)]


class InputParameters(_Parameters):
    binary_data_size: StrictInt | None = Field(default=None, ge=0, description="Bytes of this input after the header.")
    shared_memory_region: str | None = None


class InputTensor(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    shape: list[StrictInt]
    datatype: str
    parameters: Params[InputParameters] = InputParameters()
    data: Any = None  # flat or nested numbers; converted by numpy, not pydantic, to keep large bodies fast


class OutputParameters(_Parameters):
    binary_data: StrictBool | None = None
    classification: StrictInt | None = None
    shared_memory_region: str | None = None


class RequestedOutput(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    parameters: Params[OutputParameters] = OutputParameters()


class RequestParameters(_Parameters):
    binary_data_output: StrictBool = False
    timeout: StrictInt | None = Field(default=None, gt=0, description="Triton's request timeout, microseconds.")


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str | None = None
    inputs: list[InputTensor]
    outputs: list[RequestedOutput] | None = None
    parameters: Params[RequestParameters] = RequestParameters()


# -- responses -----------------------------------------------------------------------------------------------
def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def _error(exc: EdgeError) -> Response:
    from runtime.app import error_headers  # one rule for Retry-After and the 401 challenge

    return _json(exc.status_code, {"error": exc.message}, error_headers(exc))


Endpoint = Callable[[Request], Awaitable[Response]]


def _v2_errors(endpoint: Endpoint) -> Endpoint:
    """Answer with the protocol's ``{"error"}`` body here, so the service-wide handler does not reshape it."""

    @functools.wraps(endpoint)
    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except EdgeError as e:
            return _error(e)

    return wrapped


# -- model lookup --------------------------------------------------------------------------------------------
def _served_version(request: Request) -> tuple[Service, str]:
    """The service and its model version, after checking the path's model name and version against them."""
    service: Service = request.app.state.service
    name = request.path_params["model_name"]
    if name != MODEL_NAME:
        raise ModelNotFound(f"unknown model '{name[:100]}'; this server serves '{MODEL_NAME}'")
    if service.model is None:
        raise NotReady("model is not loaded yet" if not service.draining else "server is shutting down")
    version = service.model.info.version
    asked = request.path_params.get("version")
    if asked is not None and asked != version:
        raise ModelNotFound(f"model '{MODEL_NAME}' has no version '{asked[:100]}'; the served version is '{version}'")
    return service, version


def _ready(service: Service) -> bool:
    return service.ready and service.model is not None and service.batcher is not None


def _is_byte_count(value: str) -> bool:
    # str.isdigit() alone accepts characters int() rejects, such as the latin-1 superscript '²'.
    return value.isascii() and value.isdigit()


# -- body ----------------------------------------------------------------------------------------------------
async def _read_body(request: Request, limit: int) -> bytes:
    """The (decompressed) body, refusing more than `limit` bytes before or after decompression."""
    body = await read_limited_body(request, limit)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    return _decompress(body, encoding, limit)


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    # tritonclient's request_compression_algorithm sends gzip or zlib-wrapped deflate. The output is capped so
    # a small compressed body cannot expand past the same limit an uncompressed one has.
    if encoding == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise UnsupportedMediaType(f"Content-Encoding '{encoding[:32]}' is not supported; use gzip, deflate or none")
    decoder = zlib.decompressobj(wbits)
    try:
        out = decoder.decompress(body, limit + 1)
    except zlib.error as e:
        raise BadRequest(f"request body is not valid {encoding} data: {e}") from e
    if len(out) > limit:
        raise PayloadTooLarge(f"decompressed request body exceeds the limit of {limit} bytes")
    if not decoder.eof or decoder.unused_data:
        raise BadRequest(f"request body is not one complete {encoding} stream")
    return out


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tail) per the binary tensor extension; without the header the body is all JSON."""
    if header_length is None:
        return body, b""
    if not _is_byte_count(header_length.strip()):
        raise BadRequest(f"Inference-Header-Content-Length '{header_length[:32]}' is not a number of bytes")
    n = int(header_length)
    if not 0 < n <= len(body):
        raise BadRequest(f"Inference-Header-Content-Length {n} is outside the body of {len(body)} bytes")
    return body[:n], body[n:]


def _parse_header(raw: bytes) -> InferenceRequest:
    if not raw:
        raise BadRequest("request body is empty; send a v2 inference request")
    try:
        return InferenceRequest.model_validate_json(raw)
    except ValidationError as e:
        errors = e.errors(include_url=False, include_input=False, include_context=False)
        if any(err["type"] == "json_invalid" for err in errors):
            raise BadRequest(f"request JSON header is not valid JSON: {errors[0]['msg']}") from e
        shown = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise BadRequest(f"invalid inference request: {shown}{more}") from e


_KINDS: Final = {"b": "booleans", "U": "strings", "O": "nulls, objects or integers beyond 64 bits"}


def _names(names: Iterable[str]) -> list[str]:
    """Tensor names for an error message, bounded: they come from the client."""
    return [n[:64] for n in itertools.islice(names, 8)]


# -- validation against the model ----------------------------------------------------------------------------
def _windows(req: InferenceRequest, tail: bytes, max_windows: int) -> Float32Array:
    """The request's input as float32 (n, 60, 5), or `BadRequest` naming the first thing that does not fit."""
    names = _names(t.name for t in req.inputs)
    if names != [INPUT_NAME]:
        raise BadRequest(f"inputs {names} do not match the model's inputs ['{INPUT_NAME}']")
    tensor = req.inputs[0]
    if tensor.datatype != DATATYPE:
        raise BadRequest(f"input '{INPUT_NAME}' has datatype '{tensor.datatype[:32]}'; the model takes '{DATATYPE}'")
    shape = tensor.shape
    if len(shape) != 3 or shape[1:] != [WINDOW_LENGTH, N_FEATURES] or not 1 <= shape[0] <= max_windows:
        raise BadRequest(
            f"input '{INPUT_NAME}' has shape {shape[:8]}; expected [n, {WINDOW_LENGTH}, {N_FEATURES}] "
            f"with 1 <= n <= {max_windows}"
        )
    numel = math.prod(shape)
    params = tensor.parameters
    if params.shared_memory_region is not None:
        raise BadRequest("shared-memory inputs are not supported; send the tensor in the body")
    if params.binary_data_size is not None:
        if tensor.data is not None:
            raise BadRequest(f"input '{INPUT_NAME}' has both JSON 'data' and 'binary_data_size'")
        if params.binary_data_size != _FP32_LE.itemsize * numel:
            raise BadRequest(
                f"input '{INPUT_NAME}' binary_data_size is {params.binary_data_size} bytes; shape {shape} of "
                f"{DATATYPE} needs {_FP32_LE.itemsize * numel}"
            )
        if len(tail) != params.binary_data_size:
            raise BadRequest(
                f"body holds {len(tail)} bytes after the JSON header; input '{INPUT_NAME}' declares "
                f"{params.binary_data_size} (is Inference-Header-Content-Length right?)"
            )
        # Little-endian float32 is the native layout here; copy so the array is aligned and writable.
        windows = np.frombuffer(tail, dtype=_FP32_LE, count=numel).astype(np.float32).reshape(shape)
    else:
        if tail:
            raise BadRequest(f"{len(tail)} bytes follow the JSON header but no input declares binary_data_size")
        if tensor.data is None:
            raise BadRequest(f"input '{INPUT_NAME}' has neither 'data' nor parameters.binary_data_size")
        windows = _from_json_data(tensor.data, shape, numel)
    _check_values(windows)
    return windows


def _from_json_data(data: Any, shape: list[int], numel: int) -> Float32Array:
    # Without a dtype numpy reveals strings, nulls, bools and ragged nesting instead of coercing them.
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError, OverflowError) as e:
        raise BadRequest(f"input '{INPUT_NAME}' data is not a regular array of numbers: {e}") from e
    if arr.dtype.kind not in "iuf":
        found = _KINDS.get(arr.dtype.kind, f"'{arr.dtype}' values")
        raise BadRequest(f"input '{INPUT_NAME}' data must hold only numbers, found {found}")
    if arr.size != numel:
        raise BadRequest(f"input '{INPUT_NAME}' data has {arr.size} values; shape {shape} needs {numel}")
    with np.errstate(over="ignore"):  # values beyond float32 become inf and are reported by _check_values
        return arr.astype(np.float32).reshape(shape)


def _check_values(windows: Float32Array) -> None:
    finite = np.isfinite(windows)
    bad = ~finite
    bad[..., _PRICE_COLUMNS] |= finite[..., _PRICE_COLUMNS] & (windows[..., _PRICE_COLUMNS] <= 0)
    bad[..., -1] |= finite[..., -1] & (windows[..., -1] < 0)
    if bad.any():
        n, t, f = (int(i) for i in np.argwhere(bad)[0])
        raise BadRequest(
            f"input '{INPUT_NAME}'[{n}, {t}, {f}] is {float(windows[n, t, f])!r}: values must be finite "
            f"float32, prices (columns 0-3) > 0 and volume (column 4) >= 0; {int(bad.sum())} value(s) fail"
        )


def _binary_outputs(req: InferenceRequest) -> bool:
    """Whether `probabilities` goes back as binary; unknown or unsupported output requests are refused."""
    default = req.parameters.binary_data_output
    if not req.outputs:
        return default
    names = _names(o.name for o in req.outputs)
    if names != [OUTPUT_NAME]:
        raise BadRequest(f"requested outputs {names} do not match the model's outputs ['{OUTPUT_NAME}']")
    params = req.outputs[0].parameters
    if params.classification is not None:
        raise BadRequest("the classification extension is not supported; request the probabilities tensor")
    if params.shared_memory_region is not None:
        raise BadRequest("shared-memory outputs are not supported")
    return default if params.binary_data is None else params.binary_data


def _deadline(request: Request, req: InferenceRequest) -> float | None:
    """The earlier of X-Deadline-Ms (as on /predict) and Triton's ``parameters.timeout`` (microseconds)."""
    # Imported at call time: runtime.app mounts these routes, so a module-level import would be a cycle.
    from runtime.app import _deadline as header_deadline

    deadlines = [header_deadline(request)]
    if req.parameters.timeout is not None:
        deadlines.append(time.perf_counter() + req.parameters.timeout / 1e6)
    present = [d for d in deadlines if d is not None]
    return min(present) if present else None


# -- routes --------------------------------------------------------------------------------------------------
@_v2_errors
async def server_metadata(request: Request) -> Response:
    return _json(200, {"name": SERVER_NAME, "version": __version__, "extensions": ["binary_tensor_data"]})


@_v2_errors
async def server_live(request: Request) -> Response:
    return _json(200, {"live": True})


@_v2_errors
async def server_ready(request: Request) -> Response:
    ready = _ready(request.app.state.service)
    return _json(200 if ready else 503, {"ready": ready})


@_v2_errors
async def model_metadata(request: Request) -> Response:
    _, version = _served_version(request)
    return _json(200, {"name": MODEL_NAME, "versions": [version], "platform": PLATFORM, **_TENSOR_METADATA})


@_v2_errors
async def model_ready(request: Request) -> Response:
    service, _ = _served_version(request)
    ready = _ready(service)
    return _json(200 if ready else 503, {"name": MODEL_NAME, "ready": ready})


@_v2_errors
async def infer(request: Request) -> Response:
    from runtime.app import admission  # shared with /predict; imported late (see _deadline)

    service, version = _served_version(request)
    if service.model is None or service.batcher is None:
        # Not `_ready`: while draining after SIGTERM, requests already received are still served.
        raise NotReady("model is not loaded yet")
    with admission(service):  # as /predict: shed before the body is read
        return await _infer(request, service, version)


async def _infer(request: Request, service: Service, version: str) -> Response:
    from runtime.app import _authorize  # the one API-key check /predict uses

    batcher = service.batcher
    assert batcher is not None
    _authorize(request, service)
    body = await _read_body(request, service.settings.max_body_bytes)
    header, tail = _split_body(body, request.headers.get(HEADER_LENGTH))
    req = _parse_header(header)
    # A request wider than the admission queue could never be admitted: that is the client's error, not a 503.
    windows = _windows(req, tail, min(MAX_INFER_WINDOWS, batcher.max_queue))
    binary = _binary_outputs(req)
    deadline = _deadline(request, req)

    try:
        result = await batcher.submit(windows, deadline=deadline)
    except Overloaded:
        service.metrics.rejected.labels("overloaded").inc()
        raise
    except DeadlineExceeded:
        service.metrics.rejected.labels("deadline").inc()
        raise
    probs = result.probabilities  # (n, 3)
    if not np.isfinite(probs).all():
        raise InferenceFailed("the model produced non-finite probabilities for this input")
    # After a hot reload the batch may have run on a newer model than the one the path was checked against:
    # report the version that computed these probabilities.
    info = result.tag if isinstance(result.tag, ModelInfo) else None
    if info is not None:
        version = info.version
        if service.drift is not None and info.precision == "int8":
            service.drift.offer(windows, probs)  # v2 traffic is live traffic for the quantization drift monitor

    output: dict[str, Any] = {"name": OUTPUT_NAME, "datatype": DATATYPE, "shape": list(probs.shape)}
    payload: dict[str, Any] = {"model_name": MODEL_NAME, "model_version": version}
    if req.id is not None:
        payload["id"] = req.id
    if info is not None:
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
        return _json(200, payload)
    raw = np.ascontiguousarray(probs, dtype=_FP32_LE).tobytes()
    output["parameters"] = {"binary_data_size": len(raw)}
    head = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    return Response(
        head + raw,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(head))},
    )


_MODEL = "/v2/models/{model_name}"
_VERSION = "/v2/models/{model_name}/versions/{version}"

routes: list[Route] = [
    Route("/v2", server_metadata, methods=["GET"]),
    Route("/v2/health/live", server_live, methods=["GET"]),
    Route("/v2/health/ready", server_ready, methods=["GET"]),
    Route(_MODEL, model_metadata, methods=["GET"]),
    Route(_VERSION, model_metadata, methods=["GET"]),
    Route(f"{_MODEL}/ready", model_ready, methods=["GET"]),
    Route(f"{_VERSION}/ready", model_ready, methods=["GET"]),
    Route(f"{_MODEL}/infer", infer, methods=["POST"]),
    Route(f"{_VERSION}/infer", infer, methods=["POST"]),
]
