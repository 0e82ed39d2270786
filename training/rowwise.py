"""Batch-invariant graphs: the exported model wrapped in an ONNX ``Scan`` over the batch axis.

Dynamic INT8 quantization picks one activation scale per tensor, i.e. per batch, so in the plain INT8 graph a
window's probabilities depend on which other windows share its model run; FP32 too takes another kernel path
at batch 1 than at batch 2+. The serving contract is stronger: a window gets the same answer, bit for bit,
whatever the load. Wrapping the graph in ``Scan`` (one iteration per window, the body being the original graph
on a ``[1, 60, 5]`` slice) keeps one onnxruntime call per batch - no per-window Python, no GIL hand-offs - while
every window is computed exactly as it would be alone. The body shares the outer graph's initializers, so the
file is the same size as the original.

`check_rowwise` proves it on real windows: the wrapped graph at batch sizes 1 to n equals the original graph
called with one window at a time, exactly (tolerance 0).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper

from runtime.constants import INPUT_NAME, N_CLASSES, N_FEATURES, OUTPUT_NAME, WINDOW_LENGTH
from runtime.session import session_options
from training.errors import ExportError

logger = logging.getLogger(__name__)

#: Batch sizes at which the wrapped graph is compared with one-window calls of the original.
CHECK_BATCH_SIZES = (1, 2, 7, 8, 64, 100)
_ROW, _ROW_3D, _ROW_PROBS_2D, _ROW_PROBS, _AXIS0 = "row", "row_3d", "row_probs_2d", "row_probs", "rowwise_axis0"


def rowwise_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` (input ``[batch, 60, 5]``, output ``[batch, 3]``) as a Scan whose body runs it on one window."""
    graph = model.graph
    body_nodes = []
    for node in graph.node:
        node = copy.deepcopy(node)
        # Subgraph names must not shadow the outer graph's input and output (SSA).
        node.input[:] = [_ROW_3D if name == INPUT_NAME else name for name in node.input]
        node.output[:] = [_ROW_PROBS_2D if name == OUTPUT_NAME else name for name in node.output]
        body_nodes.append(node)
    body = helper.make_graph(
        [
            helper.make_node("Unsqueeze", [_ROW, _AXIS0], [_ROW_3D]),  # (60, 5) -> (1, 60, 5)
            *body_nodes,
            helper.make_node("Squeeze", [_ROW_PROBS_2D, _AXIS0], [_ROW_PROBS]),  # (1, 3) -> (3,)
        ],
        "one_window",
        [helper.make_tensor_value_info(_ROW, TensorProto.FLOAT, [WINDOW_LENGTH, N_FEATURES])],
        [helper.make_tensor_value_info(_ROW_PROBS, TensorProto.FLOAT, [N_CLASSES])],
        initializer=[helper.make_tensor(_AXIS0, TensorProto.INT64, [1], [0])],
    )
    scan = helper.make_node("Scan", [INPUT_NAME], [OUTPUT_NAME], num_scan_inputs=1, body=body, name="per_window")
    outer = helper.make_graph(
        [scan],
        graph.name + "_rowwise",
        list(graph.input),
        list(graph.output),
        initializer=list(graph.initializer),  # read by the body from the outer scope
    )
    outer.doc_string = (graph.doc_string + " " if graph.doc_string else "") + "(Scan over the batch: batch-invariant)"
    wrapped = helper.make_model(outer, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    wrapped.metadata_props.extend(model.metadata_props)
    wrapped.metadata_props.append(onnx.StringStringEntryProto(key="batch_invariant", value="scan"))
    onnx.checker.check_model(wrapped)
    return wrapped


def write_rowwise(src: Path, dst: Path) -> None:
    onnx.save_model(rowwise_model(onnx.load(str(src))), str(dst), save_as_external_data=False)
    logger.info("wrote %s (%d bytes), batch-invariant form of %s", dst, dst.stat().st_size, src.name)


def _session(path: Path) -> Any:
    import onnxruntime as ort

    # The service's own options (one intra-op thread on these CPUs): the check runs what serving runs.
    return ort.InferenceSession(str(path), session_options(1), providers=["CPUExecutionProvider"])


def check_rowwise(original: Path, rowwise: Path, windows: npt.NDArray[np.float32]) -> dict[str, Any]:
    """Compare `rowwise` at every `CHECK_BATCH_SIZES` (and shuffled) with `original` one window per call.

    Raises `ExportError` naming the first differing window; returns what was checked. Tolerance: exact equality.
    """
    base, wrapped = _session(original), _session(rowwise)
    windows = np.ascontiguousarray(windows, dtype=np.float32)
    alone = np.concatenate([base.run([OUTPUT_NAME], {INPUT_NAME: windows[i : i + 1]})[0] for i in range(len(windows))])
    order = np.random.default_rng(0).permutation(len(windows))
    for size in CHECK_BATCH_SIZES:
        for shuffled in (False, True):
            idx = order if shuffled else np.arange(len(windows))
            got = np.empty_like(alone)
            for start in range(0, len(idx), size):
                rows = idx[start : start + size]
                got[rows] = wrapped.run([OUTPUT_NAME], {INPUT_NAME: windows[rows]})[0]
            differ = np.flatnonzero((got != alone).any(axis=1))
            if len(differ):
                i = int(differ[0])
                raise ExportError(
                    f"{rowwise.name} is not batch-invariant: at batch {size} window {i} gives {got[i].tolist()}, "
                    f"alone {alone[i].tolist()} ({len(differ)} of {len(windows)} windows differ)"
                )
    return {"windows": len(windows), "batch_sizes": list(CHECK_BATCH_SIZES), "max_abs_diff": 0.0, "tolerance": 0.0}
