"""A ModelInferRequest's input as float32 windows, by the rules v2 REST applies (`runtime.tensors`)."""

from __future__ import annotations

import numpy as np

from runtime.constants import INPUT_NAME
from runtime.errors import BadRequest
from runtime.grpc import edge_inference_pb2 as pb
from runtime.tensors import DATATYPE, FP32_LE, check_input, check_outputs, windows_from_bytes, windows_from_values
from runtime.types import Float32Array

#: Typed content fields that cannot carry an FP32 tensor (the protocol puts FP32 values in fp32_contents).
_OTHER_CONTENTS = (
    "bool_contents",
    "int_contents",
    "int64_contents",
    "uint_contents",
    "uint64_contents",
    "fp64_contents",
    "bytes_contents",
)


def windows_of(request: pb.ModelInferRequest, limit: int) -> Float32Array:
    """The request's input as float32 (n, 60, 5), or `BadRequest` naming the field that does not fit."""
    inputs = request.inputs
    tensor = inputs[0] if inputs else None
    numel = check_input(
        [t.name for t in inputs],
        tensor.datatype if tensor is not None else "",
        list(tensor.shape) if tensor is not None else [],
        limit,
    )
    assert tensor is not None  # check_input refused an empty input list
    shape = list(tensor.shape)
    if "shared_memory_region" in tensor.parameters:
        raise BadRequest("shared-memory inputs are not supported; send the tensor in the request")
    contents = tensor.contents
    typed = [name for name in ("fp32_contents", *_OTHER_CONTENTS) if len(getattr(contents, name))]
    raw = request.raw_input_contents
    if raw:
        if typed:
            raise BadRequest(f"input '{INPUT_NAME}' has both contents.{typed[0]} and raw_input_contents")
        if len(raw) != 1:
            raise BadRequest(f"raw_input_contents has {len(raw)} entries; the model has 1 input ('{INPUT_NAME}')")
        if len(raw[0]) != FP32_LE.itemsize * numel:
            raise BadRequest(
                f"raw_input_contents[0] holds {len(raw[0])} bytes; input '{INPUT_NAME}' of shape {shape} and "
                f"datatype {DATATYPE} needs {FP32_LE.itemsize * numel}"
            )
        return windows_from_bytes(raw[0], shape)
    if any(name != "fp32_contents" for name in typed):
        wrong = next(name for name in typed if name != "fp32_contents")
        raise BadRequest(
            f"input '{INPUT_NAME}' carries contents.{wrong}; a {DATATYPE} tensor's values go in contents.fp32_contents"
        )
    if not typed:
        raise BadRequest(f"input '{INPUT_NAME}' has neither contents.fp32_contents nor raw_input_contents")
    values = contents.fp32_contents
    if len(values) != numel:
        raise BadRequest(
            f"input '{INPUT_NAME}' contents.fp32_contents has {len(values)} values; shape {shape} needs {numel}"
        )
    return windows_from_values(np.fromiter(values, dtype=np.float32, count=len(values)), shape)


def check_requested_outputs(request: pb.ModelInferRequest) -> None:
    check_outputs([o.name for o in request.outputs])
    for output in request.outputs:
        if "classification" in output.parameters:
            raise BadRequest("the classification extension is not supported; request the probabilities tensor")
        if "shared_memory_region" in output.parameters:
            raise BadRequest("shared-memory outputs are not supported")
