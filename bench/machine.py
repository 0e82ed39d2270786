"""What a run ran on: the machine, the code and the versions, recorded with its results."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from bench.servers import REPO_ROOT


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo, or None where it says none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def gpu_name() -> str | None:
    """nvidia-smi's name, driver version and memory of each GPU, or None without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def git_commit() -> str:
    """The short commit, marked when runtime/, models/ or bench/ differ from it."""
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            or "unknown"
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "runtime", "models", "bench"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if dirty:
            commit += " (+ uncommitted changes)"
    except OSError:
        commit = "unknown"
    return commit


def _version(mod: str) -> str:
    try:
        m = __import__(mod)
        return str(getattr(m, "__version__", "?"))
    except Exception:
        return "missing"


def machine_meta(args: argparse.Namespace) -> dict[str, Any]:
    """results.json's "meta": the machine, the code, the versions and the load settings of the CPU benchmark."""
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False).stdout.split("\n")[
        0
    ]
    return {
        "quick": args.quick,
        "started_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "git_commit": git_commit(),
        "cpu_model": cpu_model() or "unknown",
        "cpus": len(os.sched_getaffinity(0)),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "versions": {
            "python": platform.python_version(),
            "onnxruntime": _version("onnxruntime"),
            "uvicorn": _version("uvicorn"),
            "starlette": _version("starlette"),
            "fastapi": _version("fastapi"),
            "pydantic": _version("pydantic"),
            "wrk": wrk_version.replace("wrk ", "").split(" [")[0],
        },
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "connections": args.connections,
        "wrk_threads": args.wrk_threads,
    }


def gpu_environment(ort: Any) -> dict[str, Any]:
    """gpu.json's "environment": onnxruntime's build and providers, the GPU and the CPUs (bench.gpu)."""
    return {
        "onnxruntime": ort.__version__,
        "onnxruntime_package": getattr(getattr(ort.capi, "build_and_package_info", None), "package_name", None),
        "onnxruntime_cuda_version": getattr(getattr(ort.capi, "build_and_package_info", None), "cuda_version", None),
        "available_providers": ort.get_available_providers(),
        "gpu": gpu_name(),
        "cpus": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "ld_library_path_dirs": len([p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
