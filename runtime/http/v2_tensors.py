"""The v2 wire format: the inference request's JSON header, the binary tensor extension, compressed bodies,
and the request's input checked against the model and turned into float32 windows. Knows no routes."""

from __future__ import annotations

import zlib
from typing import Annotated, Any, Final, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from runtime.constants import INPUT_NAME
from runtime.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from runtime.tensors import (
    DATATYPE,
    FP32_LE,
    check_input,
    check_outputs,
    windows_from_bytes,
    windows_from_values,
)
from runtime.types import Float32Array

HEADER_LENGTH: Final = "inference-header-content-length"


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
    # Triton's field is a uint64: larger integers are a 400, not an overflow when turned into seconds.
    timeout: StrictInt | None = Field(
        default=None, gt=0, le=2**64 - 1, description="Triton's request timeout, microseconds."
    )


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str | None = None
    inputs: list[InputTensor]
    outputs: list[RequestedOutput] | None = None
    parameters: Params[RequestParameters] = RequestParameters()


def is_byte_count(value: str) -> bool:
    # str.isdigit() alone accepts characters int() rejects, such as the latin-1 superscript '²'.
    return value.isascii() and value.isdigit()


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
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


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tail) per the binary tensor extension; without the header the body is all JSON."""
    if header_length is None:
        return body, b""
    if not is_byte_count(header_length.strip()):
        raise BadRequest(f"Inference-Header-Content-Length '{header_length[:32]}' is not a number of bytes")
    n = int(header_length)
    if not 0 < n <= len(body):
        raise BadRequest(f"Inference-Header-Content-Length {n} is outside the body of {len(body)} bytes")
    return body[:n], body[n:]


#: What an infer body may be labelled: JSON, Triton's binary extension, or nothing (tritonclient sends no
#: Content-Type). A browser form or text/plain POST (a "simple" cross-origin request) is refused.
_INFER_TYPES: Final = ("", "application/json", "application/octet-stream")


def check_content_type(content_type: str | None) -> None:
    """415 unless the infer body's Content-Type is one the protocol documents (or absent)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in _INFER_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type '{(content_type or '')[:100]}' is not supported; send 'application/json' or, with "
            "Inference-Header-Content-Length, 'application/octet-stream'"
        )


def parse_header(raw: bytes) -> InferenceRequest:
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


# -- validation against the model (the rules live in runtime.tensors, shared with gRPC) ---------------------
def windows_of(req: InferenceRequest, tail: bytes, max_windows: int) -> Float32Array:
    """The request's input as float32 (n, 60, 5), or `BadRequest` naming the first thing that does not fit."""
    tensor = req.inputs[0] if req.inputs else None
    numel = check_input(
        [t.name for t in req.inputs],
        tensor.datatype if tensor is not None else "",
        tensor.shape if tensor is not None else [],
        max_windows,
    )
    assert tensor is not None  # check_input refused an empty input list
    shape = tensor.shape
    params = tensor.parameters
    if params.shared_memory_region is not None:
        raise BadRequest("shared-memory inputs are not supported; send the tensor in the body")
    if params.binary_data_size is not None:
        if tensor.data is not None:
            raise BadRequest(f"input '{INPUT_NAME}' has both JSON 'data' and 'binary_data_size'")
        if params.binary_data_size != FP32_LE.itemsize * numel:
            raise BadRequest(
                f"input '{INPUT_NAME}' binary_data_size is {params.binary_data_size} bytes; shape {shape} of "
                f"{DATATYPE} needs {FP32_LE.itemsize * numel}"
            )
        if len(tail) != params.binary_data_size:
            raise BadRequest(
                f"body holds {len(tail)} bytes after the JSON header; input '{INPUT_NAME}' declares "
                f"{params.binary_data_size} (is Inference-Header-Content-Length right?)"
            )
        return windows_from_bytes(tail, shape)
    if tail:
        raise BadRequest(f"{len(tail)} bytes follow the JSON header but no input declares binary_data_size")
    if tensor.data is None:
        raise BadRequest(f"input '{INPUT_NAME}' has neither 'data' nor parameters.binary_data_size")
    return windows_from_values(tensor.data, shape)


def binary_outputs(req: InferenceRequest) -> bool:
    """Whether `probabilities` goes back as binary; unknown or unsupported output requests are refused."""
    default = req.parameters.binary_data_output
    if not req.outputs:
        return default
    check_outputs([o.name for o in req.outputs])
    params = req.outputs[0].parameters
    if params.classification is not None:
        raise BadRequest("the classification extension is not supported; request the probabilities tensor")
    if params.shared_memory_region is not None:
        raise BadRequest("shared-memory outputs are not supported")
    return default if params.binary_data is None else params.binary_data
