"""Why CUDA cannot be used here, in words an operator can act on. Knows no HTTP.

With ``EDGE_PROVIDER=cuda`` the service refuses to start without a usable GPU (the GPU image's default): a driver
mismatch must not degrade into a CPU FP32 server whose /ready looks healthy. onnxruntime itself only says that it
fell back, or prints a loader error to stderr; `diagnose` names the missing piece: the CUDA build of onnxruntime,
the NVIDIA driver (libcuda) or a GPU device, or one of the CUDA / cuDNN libraries the provider links against.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CUDA_EP = "CUDAExecutionProvider"
GPU_INSTALL = "pip install 'neuraltrade-edge[gpu]' (onnxruntime-gpu; uninstall the CPU-only onnxruntime first)"
#: The CUDA major of the onnxruntime-gpu the `gpu` extra pins (1.31.x: CUDA 13, cuDNN 9), and the libraries its CUDA
#: provider loads. CUDA 13 needs an NVIDIA driver >= 580 (580.65.06 shipped with CUDA 13.0).
CUDA_MAJOR = 13
REQUIRED_LIBRARIES = (
    f"libcudart.so.{CUDA_MAJOR}",
    f"libcublas.so.{CUDA_MAJOR}",
    f"libcublasLt.so.{CUDA_MAJOR}",
    "libcufft.so.12",
    "libcudnn.so.9",
)
DRIVER_LIBRARY = "libcuda.so.1"


def _loadable(name: str) -> bool:
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def preload_libraries(ort: Any) -> None:
    """Load the CUDA/cuDNN libraries of NVIDIA's pip wheels before the first CUDA session (onnxruntime >= 1.21:
    `preload_dlls`), so `pip install .[gpu]` works outside the image without LD_LIBRARY_PATH. Best effort: what it
    cannot load is named by `diagnose` if the session then fails."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as e:  # it raises on odd layouts; the session creation that follows gives the real verdict
        log.warning("onnxruntime.preload_dlls() failed: %s", e)


def diagnose(
    ort: Any,
    *,
    loadable: Callable[[str], bool] = _loadable,
    dev: Path = Path("/dev"),
    proc: Path = Path("/proc/driver/nvidia/gpus"),
) -> list[str]:
    """What is missing for onnxruntime's CUDA provider, first cause first; empty when nothing obvious is."""
    problems: list[str] = []
    available = list(ort.get_available_providers())
    if CUDA_EP not in available:
        problems.append(
            f"onnxruntime {getattr(ort, '__version__', '?')} has no {CUDA_EP} (available: {', '.join(available)}): "
            f"this is the CPU build; install the CUDA build: {GPU_INSTALL}"
        )
    if not loadable(DRIVER_LIBRARY):
        problems.append(
            f"the NVIDIA driver library {DRIVER_LIBRARY} cannot be loaded: no driver installed or not mounted into "
            "the container (check `nvidia-smi` on the host; run the container with `--gpus all` / the NVIDIA "
            f"container toolkit; CUDA {CUDA_MAJOR} needs driver >= 580)"
        )
    if not any(p.name[len("nvidia") :].isdigit() for p in dev.glob("nvidia[0-9]*")) and not proc.exists():
        problems.append(
            "no GPU device is visible (no /dev/nvidiaN): check `nvidia-smi`, NVIDIA_VISIBLE_DEVICES and, on "
            "Kubernetes, the nvidia.com/gpu resource limit"
        )
    if CUDA_EP in available:
        missing = [lib for lib in REQUIRED_LIBRARIES if not loadable(lib)]
        if missing:
            problems.append(
                f"CUDA {CUDA_MAJOR} / cuDNN 9 libraries cannot be loaded: {', '.join(missing)} (install the wheels "
                f"with {GPU_INSTALL}, or put the CUDA toolkit's lib directory on the loader path)"
            )
    return problems


def explain_failure(ort: Any, detail: str) -> str:
    """The refusal message for provider=cuda: what onnxruntime said and what is missing."""
    problems = diagnose(ort)
    found = "; ".join(problems) if problems else "no missing piece found (see onnxruntime's error above)"
    return f"EDGE_PROVIDER=cuda but CUDA is not usable ({detail}): {found}"
