"""Parity between torch and ONNX, FP32 and INT8: one library function, tolerances defined once, every failing
check listed before raising (cf. Optimum's ``_run_validation``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import torch
from torch import nn

from runtime.constants import INPUT_NAME
from runtime.session import session_options
from training.errors import ParityError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParityTolerances:
    """The only place parity limits are defined; tests and the CLI use `TOLERANCES`."""

    #: torch FP32 vs ONNX FP32: largest allowed |Δp| over all windows and classes.
    fp32_max_abs_diff: float = 1e-5
    #: Batch sizes at which FP32 parity is checked (the batch axis is dynamic).
    fp32_batch_sizes: tuple[int, ...] = (1, 7, 64, 256)
    #: ONNX INT8 vs ONNX FP32 and vs torch INT8 on the real test split.
    int8_max_abs_diff: float = 0.02
    int8_min_argmax_agreement: float = 0.99
    #: INT8 checks run one window per call: dynamic quantization picks activation ranges per batch, so a batch's
    #: content would otherwise change each window's result; batch 1 is also how /predict calls the model.
    int8_batch_size: int = 1


TOLERANCES: Final = ParityTolerances()


@dataclass(frozen=True)
class ParityCheck:
    name: str
    metric: str
    value: float
    limit: float
    passed: bool


@dataclass
class ParityReport:
    checks: list[ParityCheck] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[ParityCheck]:
        return [c for c in self.checks if not c.passed]

    def add_max_abs(self, name: str, a: npt.NDArray[Any], b: npt.NDArray[Any], limit: float) -> None:
        value = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
        self.checks.append(ParityCheck(name, "max_abs_diff", value, limit, bool(value <= limit)))

    def add_agreement(self, name: str, a: npt.NDArray[Any], b: npt.NDArray[Any], limit: float) -> None:
        value = float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))
        self.checks.append(ParityCheck(name, "argmax_agreement", value, limit, bool(value >= limit)))

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "tolerances": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(TOLERANCES).items()},
            "checks": [asdict(c) for c in self.checks],
            **self.info,
        }

    def raise_for_failures(self) -> None:
        if self.failures:
            lines = "\n".join(f"  {c.name}: {c.metric}={c.value:.6g} (limit {c.limit:g})" for c in self.failures)
            raise ParityError(
                f"{len(self.failures)} of {len(self.checks)} parity check(s) failed:\n{lines}{self._near_tie_hint()}"
            )

    def _near_tie_hint(self) -> str:
        """When only argmax agreement fails and every |Δp| of the same comparison is within its limit, the flips
        are near ties: say so, with the share of windows whose FP32 top-2 margin is that small."""
        flipped = {c.name for c in self.failures if c.metric == "argmax_agreement"}
        if not flipped or any(c.name in flipped and not c.passed for c in self.checks if c.metric == "max_abs_diff"):
            return ""
        share, margin = self.info.get("fp32_near_tie_share"), self.info.get("near_tie_margin")
        if share is None or margin is None:
            return ""
        return (
            f"\n  every |dp| of those comparisons is within its limit: the class flips are near ties ({share:.1%} of "
            f"the test windows have an FP32 top-2 margin under {margin:g}); the model's probabilities are too flat "
            "for its signal to survive INT8 rounding"
        )


def make_session(path: Path, threads: int = 1) -> ort.InferenceSession:
    # The service's own session options, so parity checks what serving runs.
    return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])


def run_onnx(session: ort.InferenceSession, windows: npt.NDArray[np.float32], batch_size: int) -> npt.NDArray[Any]:
    """Probabilities (n, 3) from an ONNX session, calling it `batch_size` windows at a time."""
    parts = [
        session.run(None, {INPUT_NAME: windows[i : i + batch_size]})[0] for i in range(0, len(windows), batch_size)
    ]
    return np.concatenate(parts)


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@torch.no_grad()
def run_torch(model: nn.Module, windows: npt.NDArray[np.float32], batch_size: int) -> npt.NDArray[Any]:
    model.eval()
    # One thread: at batch 1 the per-step thread hand-offs cost more than they save, and on a busy machine
    # (CI, shared hosts) two spinning threads made 1,382 single-window calls take minutes instead of a second.
    with _torch_threads(1):
        parts = [
            model(torch.from_numpy(windows[i : i + batch_size])).numpy() for i in range(0, len(windows), batch_size)
        ]
    return np.concatenate(parts)


def _tile(windows: npt.NDArray[np.float32], n: int) -> npt.NDArray[np.float32]:
    reps = -(-n // len(windows))
    return np.concatenate([windows] * reps)[:n]


def check_parity(
    torch_fp32: nn.Module,
    torch_int8: nn.Module,
    fp32_path: Path,
    int8_path: Path,
    test_windows: npt.NDArray[np.float32],
    tolerances: ParityTolerances = TOLERANCES,
) -> ParityReport:
    """Run every check and return them all; call `raise_for_failures` (or use `assert_parity`) to enforce."""
    report = ParityReport()
    fp32_session, int8_session = make_session(fp32_path), make_session(int8_path)

    for bs in tolerances.fp32_batch_sizes:
        batch = _tile(test_windows, bs)
        report.add_max_abs(
            f"torch_fp32_vs_onnx_fp32@batch{bs}",
            run_torch(torch_fp32, batch, bs),
            run_onnx(fp32_session, batch, bs),
            tolerances.fp32_max_abs_diff,
        )

    bs = tolerances.int8_batch_size
    onnx_fp32 = run_onnx(fp32_session, test_windows, bs)
    onnx_int8 = run_onnx(int8_session, test_windows, bs)
    ref_int8 = run_torch(torch_int8, test_windows, bs)
    for name, other in (("onnx_int8_vs_onnx_fp32", onnx_fp32), ("onnx_int8_vs_torch_int8", ref_int8)):
        report.add_agreement(name, onnx_int8, other, tolerances.int8_min_argmax_agreement)
        report.add_max_abs(name, onnx_int8, other, tolerances.int8_max_abs_diff)

    # Informational, not enforced: how far each INT8 model moved from FP32, and the batched INT8 behaviour.
    torch_fp32_probs = run_torch(torch_fp32, test_windows, 256)
    top2 = np.sort(onnx_fp32, axis=1)[:, -2:]
    near_tie_margin = 2 * tolerances.int8_max_abs_diff  # a flip needs the two top classes to move this far in all
    report.info = {
        "test_windows": len(test_windows),
        "near_tie_margin": near_tie_margin,
        "fp32_near_tie_share": float(np.mean(top2[:, 1] - top2[:, 0] < near_tie_margin)),
        "torch_int8_vs_torch_fp32_max_abs_diff": float(np.max(np.abs(ref_int8 - torch_fp32_probs))),
        "torch_int8_vs_torch_fp32_argmax_agreement": float(np.mean(ref_int8.argmax(1) == torch_fp32_probs.argmax(1))),
        "onnx_int8_batch64_vs_onnx_fp32_max_abs_diff": float(
            np.max(np.abs(run_onnx(int8_session, test_windows, 64) - onnx_fp32))
        ),
    }
    for check in report.checks:
        logger.info(
            "%s %s=%.6g limit=%g %s",
            check.name,
            check.metric,
            check.value,
            check.limit,
            "ok" if check.passed else "FAILED",
        )
    return report


def assert_parity(*args: Any, **kwargs: Any) -> ParityReport:
    """`check_parity`, then raise `ParityError` listing every failing check."""
    report = check_parity(*args, **kwargs)
    report.raise_for_failures()
    return report
