"""Training's exceptions: one base, each subclassing the built-in it behaves like."""

from __future__ import annotations


class TrainingError(Exception):
    """Base of every error the training package raises on purpose."""


class DataValidationError(TrainingError, ValueError):
    """Input data break the API's rules; `problems` lists every one found (location, reason)."""

    def __init__(self, source: str, problems: list[tuple[str, str]], *, max_listed: int = 20) -> None:
        self.source = source
        self.problems = problems
        listed = "\n".join(f"  {where}: {why}" for where, why in problems[:max_listed])
        more = len(problems) - max_listed
        tail = f"\n  ... and {more} more problem(s)" if more > 0 else ""
        super().__init__(f"{source}: {len(problems)} invalid row(s); nothing was dropped or fixed:\n{listed}{tail}")


class ExportError(TrainingError, RuntimeError):
    """The exported ONNX graph is not what the runtime expects (names, shapes, ops, single file)."""


class QuantizationError(TrainingError, RuntimeError):
    """Quantization did not produce the integer ops it should have (e.g. LSTMs silently left in FP32)."""


class ParityError(TrainingError, AssertionError):
    """One or more parity checks failed; the message lists every failing check."""


class ArtifactError(TrainingError, RuntimeError):
    """A model directory is missing a file, or a file does not match the sha256 in its manifest."""
