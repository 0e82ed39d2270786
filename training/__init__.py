"""NeuralTrade Edge training: torch model, quantization, ONNX export and parity (the `train` extra)."""

__version__ = "0.1.0"
