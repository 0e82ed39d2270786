"""NeuralTrade Edge serving runtime: torch-free, onnxruntime only."""

__version__ = "0.1.0"
