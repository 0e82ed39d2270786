"""Export the FP32 SignalPredictor to a single-file ONNX graph with a dynamic batch axis.

We use torch's TorchScript-based exporter (``dynamo=False``) on purpose. It emits each LSTM layer as one native
ONNX ``LSTM`` node whose W/R/B weights are plain initializers, which is what onnxruntime's dynamic quantizer needs
to produce ``DynamicQuantizeLSTM``. torch 2.13's default dynamo exporter instead computes the reordered recurrent
weights inside the graph, so `quantize_dynamic` finds no LSTM weights: it silently leaves the LSTMs in FP32
or, with onnx 1.23 / onnxruntime 1.31, fails shape inference, unless the graph is pre-processed
(``onnxruntime.quantization.quant_pre_process``); it also writes a separate ``.onnx.data`` file unless told
otherwise. `quantize.py` asserts the integer ops either way.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch

from runtime.constants import CLASSES, INPUT_NAME, N_CLASSES, N_FEATURES, OUTPUT_NAME, WINDOW_LENGTH
from training.errors import ExportError
from training.model import SignalPredictor

logger = logging.getLogger(__name__)

BATCH_DIM = "batch"


def export_onnx(model: SignalPredictor, path: Path, *, opset: int = 17, version: str = "") -> None:
    """Write `model` (eval mode, BatchNorm using its running statistics) to `path` and check the result."""
    model = model.eval()
    example = torch.ones(2, WINDOW_LENGTH, N_FEATURES)  # (b, 60, 5); any positive window traces the same graph
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo; see the module docstring for why we keep it.
        # Its TracerWarnings are about the LSTM's Python-side shape checks, which the fixed window makes moot.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
            opset_version=opset,
            do_constant_folding=True,
        )
    graph = onnx.load(str(path))
    # The file alone must be the model: record what the runtime needs to interpret it.
    graph.doc_string = "SignalPredictor: raw OHLCV window -> probabilities (sell, hold, buy)"
    for key, value in {"classes": ",".join(CLASSES), "window_length": str(WINDOW_LENGTH), "version": version}.items():
        graph.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.save_model(graph, str(path), save_as_external_data=False)
    check_onnx_graph(path, opset=opset)
    logger.info("exported %s (%d bytes)", path, path.stat().st_size)


def _dims(value_info: onnx.ValueInfoProto) -> list[str | int]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def check_onnx_graph(path: Path, *, opset: int = 17, expect_op: str | None = "LSTM") -> None:
    """Raise `ExportError` listing every way the graph breaks the runtime's contract."""
    model = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(model)
    problems: list[str] = []
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external or any(path.parent.glob(f"{path.name}.data")):
        problems.append(f"weights stored outside the file ({external[:3]}...); the .onnx must be a single file")
    default_opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if default_opset < opset:
        problems.append(f"opset {default_opset} < required {opset}")
    inputs, outputs = list(model.graph.input), list(model.graph.output)
    want_in: list[str | int] = [BATCH_DIM, WINDOW_LENGTH, N_FEATURES]
    want_out: list[str | int] = [BATCH_DIM, N_CLASSES]
    if [i.name for i in inputs] != [INPUT_NAME] or _dims(inputs[0]) != want_in:
        problems.append(f"inputs {[(i.name, _dims(i)) for i in inputs]}; expected [({INPUT_NAME!r}, {want_in})]")
    if [o.name for o in outputs] != [OUTPUT_NAME] or _dims(outputs[0]) != want_out:
        problems.append(f"outputs {[(o.name, _dims(o)) for o in outputs]}; expected [({OUTPUT_NAME!r}, {want_out})]")
    for vi in (*inputs, *outputs):
        if vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            problems.append(f"{vi.name} is not float32")
    ops = {n.op_type for n in model.graph.node}
    if expect_op is not None and expect_op not in ops:
        problems.append(f"no native {expect_op} node; ops are {sorted(ops)}")
    if problems:
        raise ExportError(f"{path.name}: " + "; ".join(problems))
