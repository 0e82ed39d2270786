"""INT8 models: torch's dynamic quantization (the reference) and onnxruntime's (what ships).

torch cannot export a dynamically quantized model to ONNX (pytorch#35536), so the shipped INT8 graph is made by
quantizing the exported FP32 graph with onnxruntime; the torch INT8 model exists to cross-check it.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch import nn

from training.errors import QuantizationError
from training.export import check_onnx_graph

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnnxQuantSettings:
    """Arguments of `onnxruntime.quantization.quantize_dynamic` we choose, recorded in the manifest."""

    weight_type: str = "QInt8"
    per_channel: bool = False
    reduce_range: bool = False
    nodes_to_exclude: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["nodes_to_exclude"] = list(self.nodes_to_exclude)
        return out


class _DropPreprocessAdvice(logging.Filter):
    """onnxruntime's quantizer logs advice to run quant_pre_process on the root logger for every model. Our graph
    does not need it (see export.py) and `quantize_onnx` proves the integer ops exist, so the advice only misleads."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "pre-processing before quantization" not in message and "Quantization parameters for" not in message


def quantize_torch(model: nn.Module) -> nn.Module:
    """Dynamic INT8 (qint8 weights, activations quantized on the fly) of every LSTM and Linear; a copy."""
    if "fbgemm" in torch.backends.quantized.supported_engines:
        # x86 kernels; the default engine can differ between builds and would change the numbers.
        torch.backends.quantized.engine = "fbgemm"
    reference = copy.deepcopy(model).eval()
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which has no dynamic quantized LSTM; the
        # eager API is still the reference the issue asks for, so its deprecation notices are expected noise.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        quantized: nn.Module = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            reference, {nn.LSTM, nn.Linear}, dtype=torch.qint8
        )
    return quantized


def op_counts(path: Path) -> dict[str, int]:
    model = onnx.load(str(path), load_external_data=False)
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def quantize_onnx(fp32_path: Path, int8_path: Path, settings: OnnxQuantSettings | None = None) -> dict[str, int]:
    """Quantize the FP32 graph and prove it worked: every LSTM became DynamicQuantizeLSTM, integer matmuls exist."""
    settings = settings or OnnxQuantSettings()
    root = logging.getLogger()
    quiet = _DropPreprocessAdvice()
    root.addFilter(quiet)
    try:
        quantize_dynamic(
            fp32_path,
            int8_path,
            weight_type=QuantType[settings.weight_type],
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            nodes_to_exclude=list(settings.nodes_to_exclude) or None,
        )
    finally:
        root.removeFilter(quiet)
    check_onnx_graph(int8_path, expect_op=None)  # names, shapes, single file; the ops are checked below
    before, after = op_counts(fp32_path), op_counts(int8_path)
    problems: list[str] = []
    if after.get("LSTM", 0):
        problems.append(f"{after['LSTM']} LSTM node(s) left in FP32")
    if after.get("DynamicQuantizeLSTM", 0) != before.get("LSTM", 0):
        problems.append(
            f"{after.get('DynamicQuantizeLSTM', 0)} DynamicQuantizeLSTM for {before.get('LSTM', 0)} LSTM node(s)"
        )
    if not after.get("MatMulInteger", 0):
        problems.append("no MatMulInteger: the Linear layers were not quantized")
    if problems:
        raise QuantizationError(
            f"{int8_path.name} is not really INT8: " + "; ".join(problems) + f". Ops: {after}. If the graph came "
            "from the dynamo exporter, run onnxruntime.quantization.quant_pre_process first."
        )
    logger.info("quantized %s -> %s: %s", fp32_path.name, int8_path.name, after)
    return after
