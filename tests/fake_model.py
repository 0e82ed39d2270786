"""A tiny ONNX stand-in with the real model's signature, for runtime tests that must not need torch."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np


def write_fake_model_dir(path: Path, version: str = "0.0.0-test", seed: int = 0) -> Path:
    """Write manifest.json + FP32/INT8 files of a scale-invariant toy graph: softmax(mean(log(x/x_last)) @ W)."""
    onnx = __import__("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(size=(5, 3)).astype(np.float32) * 50, "W"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_t"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "start"),
        numpy_helper.from_array(np.array([2**62], dtype=np.int64), "end"),
    ]
    nodes = [
        helper.make_node("Slice", ["ohlcv_sequence", "start", "end", "axis_t"], ["last"]),  # (b, 1, 5)
        helper.make_node("Div", ["ohlcv_sequence", "last"], ["rel"]),  # (b, 60, 5)
        helper.make_node("Log", ["rel"], ["lr"]),
        helper.make_node("ReduceMean", ["lr", "axis_t"], ["m"], keepdims=0),  # (b, 5)
        helper.make_node("MatMul", ["m", "W"], ["z"]),  # (b, 3)
        helper.make_node("Softmax", ["z"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "fake_signal_predictor",
        [helper.make_tensor_value_info("ohlcv_sequence", TensorProto.FLOAT, ["batch", 60, 5])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in ("signal_predictor.onnx", "signal_predictor.int8.onnx"):
        data = model.SerializeToString()
        (path / name).write_bytes(data)
        files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    manifest = {"name": "signal_predictor", "version": version, "files": files}
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return path
