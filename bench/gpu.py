"""The CUDA execution provider, measured: ``python -m bench.gpu`` on a machine with onnxruntime-gpu and a GPU.

One run measures, on the same machine:

* ``Model.run`` on CUDA (FP32, IO binding: `runtime.session.Model._run_iobinding`) against a plain
  ``session.run`` on the same CUDA session, p50/p99 and windows/s at batch 1, 8, 64 and 256;
* the CPU provider (INT8 and FP32, batch 1 and 64) at one intra-op thread and at the service's default;
* parity of CUDA FP32 against CPU FP32 on 512 windows (max |Δp| and argmax agreement), and CUDA batch invariance;
* the first run at a batch shape the warm-up did not cover (the batcher forms every size up to max_batch_size);
* which nodes onnxruntime places on the CPU in the CUDA session;
* end to end: the real server (``python -m runtime --provider cuda --precision fp32``) on loopback, its cold start
  to /ready, and POST /predict from a closed-loop aiohttp client at 1 and 64 connections (``--connections``; and
  the CPU server at its defaults for comparison, unless ``--no-cpu-server``), with the batch sizes the server formed
  at each level (the ``edge_batch_size`` histogram of its /metrics, before and after the level);
* large batches end to end (`bench.v2_throughput`): v2 binary windows/s through HTTP at batch 64-256 (1 and 2
  workers sharing the device) against in-process ``Model.run`` at the same batch, and their ratio.

Windows are synthetic random walks (1 % daily volatility, OHLC wicks, uniform volume), not market data: the device
this runs on has no network and no `arch`. Latencies are milliseconds of wall time around one call.

Without CUDA (onnxruntime without the CUDA provider, or one that cannot load its libraries) it exits with status 2
and says why. ``--provider cpu`` runs the same steps with the CPU provider in place of CUDA: only for checking this
script on a machine without a GPU; its figures say nothing about CUDA.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/gpu.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench import v2_throughput
from bench.end_to_end import E2E_CONNECTIONS, end_to_end
from bench.floor import percentile
from bench.machine import gpu_environment
from bench.report import gpu_markdown
from bench.servers import REPO_ROOT
from bench.synthetic import request_body, synthetic_windows
from runtime.constants import INPUT_NAME, OUTPUT_NAME

BATCHES = (1, 8, 64, 256)
CPU_BATCHES = (1, 64)
PARITY_WINDOWS = 512
#: Batch shapes the warm-up (1, 8) does not run; the batcher forms them under concurrency.
COLD_SHAPES = (2, 3, 5, 7, 16, 64)


class Unavailable(Exception):
    """CUDA cannot be used here; the message says why."""


# -- timing ----------------------------------------------------------------------------------------------------


def time_calls(fn: Callable[[], object], *, seconds: float, warmup: int, min_runs: int) -> list[float]:
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    end = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        samples.append((t1 - t0) * 1e3)
        if t1 >= end and len(samples) >= min_runs:
            return samples


def stats(samples: list[float], batch: int = 1) -> dict[str, float]:
    mean = statistics.fmean(samples)
    return {
        "runs": len(samples),
        "p50_ms": statistics.median(samples),
        "p99_ms": percentile(samples, 99),
        "mean_ms": mean,
        "min_ms": min(samples),
        "windows_per_s": batch * 1e3 / mean,
    }


def interleaved(fns: Mapping[str, Callable[[], object]], *, seconds: float, batch: int) -> dict[str, dict[str, float]]:
    """Time each callable for ``seconds`` in total, in two interleaved halves (a, b, a, b)."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(2):
        for k, fn in fns.items():
            samples[k] += time_calls(
                fn, seconds=seconds / 2, warmup=20 if batch <= 8 else 5, min_runs=50 if batch <= 8 else 10
            )
    return {k: stats(v, batch) for k, v in samples.items()}


# -- the provider under test -----------------------------------------------------------------------------------


def load_accelerated(model_dir: Path, provider: str, threads: int) -> tuple[Any, float]:
    """Model.load on the provider under test, with CUDA's failures turned into `Unavailable`."""
    from runtime.errors import EdgeError
    from runtime.session import Model

    t0 = time.perf_counter()
    try:
        model = Model.load(model_dir, precision="fp32", provider=provider, intra_op_threads=threads)
    except EdgeError as e:
        raise Unavailable(
            f"{e.message}\nIf onnxruntime-gpu is installed, the CUDA provider may not find libcudart/libcublas/"
            "libcudnn: put the nvidia/*/lib folders of the nvidia-* wheels on LD_LIBRARY_PATH (or ldconfig), "
            "as Dockerfile.gpu does."
        ) from e
    return model, time.perf_counter() - t0


def node_placement(model_dir: Path, provider: str) -> dict[str, Any]:
    """Which nodes onnxruntime assigns to which provider (its verbose log, read in a child process)."""
    code = (
        "import onnxruntime as ort, sys\n"
        "o = ort.SessionOptions(); o.log_severity_level = 0; o.log_verbosity_level = 0\n"
        "o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL\n"
        f"ort.InferenceSession(sys.argv[1], sess_options=o, providers={[_ep(provider), 'CPUExecutionProvider']!r})\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code, str(model_dir / "signal_predictor.onnx")],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    lines = (out.stdout + out.stderr).splitlines()
    keep: list[str] = []
    for i, line in enumerate(lines):
        if "placed on [" in line or "Node placements" in line or "not assigned to the preferred" in line:
            keep.append(line.split("] ", 1)[-1].strip())
            # The node names follow, one per line, indented.
            for nxt in lines[i + 1 : i + 40]:
                if nxt.startswith(" ") and "[" not in nxt[:40]:
                    keep.append("  " + nxt.strip())
                else:
                    break
    memcpy = sum(1 for ln in lines if "MemcpyToHost" in ln or "MemcpyFromHost" in ln)
    return {"lines": keep[:80], "memcpy_mentions": memcpy, "returncode": out.returncode}


def _ep(provider: str) -> str:
    return {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}[provider]


# -- in-process measurements -----------------------------------------------------------------------------------


def kernel_points(model: Any, windows: np.ndarray, seconds: float) -> dict[str, Any]:
    """Model.run (IO binding on CUDA) vs plain session.run on the same session, at each batch size."""
    session = model._session  # the onnxruntime session Model wraps: the same EP, options and graph
    out: dict[str, Any] = {}
    for n in BATCHES:
        x = np.ascontiguousarray(windows[:n])
        fns: dict[str, Callable[[], object]] = {
            "model_run": functools.partial(model.run, x),
            "session_run": functools.partial(session.run, [OUTPUT_NAME], {INPUT_NAME: x}),
        }
        for method, s in interleaved(fns, seconds=seconds, batch=n).items():
            out[f"{method}@{n}"] = {"method": method, "batch": n, **s}
    return out


def cpu_points(model_dir: Path, windows: np.ndarray, seconds: float, thread_counts: list[int]) -> dict[str, Any]:
    from runtime.session import Model

    out: dict[str, Any] = {}
    for threads in thread_counts:
        models = {
            p: Model.load(model_dir, precision=p, provider="cpu", intra_op_threads=threads) for p in ("int8", "fp32")
        }
        for n in CPU_BATCHES:
            x = np.ascontiguousarray(windows[:n])
            fns = {p: functools.partial(m.run, x) for p, m in models.items()}
            for p, s in interleaved(fns, seconds=seconds, batch=n).items():
                out[f"cpu-{p}-t{threads}@{n}"] = {"precision": p, "threads": threads, "batch": n, **s}
    return out


def parity(model: Any, cpu_fp32: Any, windows: np.ndarray) -> dict[str, Any]:
    acc = model.run(windows)
    ref = cpu_fp32.run(windows)
    diff = np.abs(acc - ref)
    one_by_one = np.concatenate([model.run(windows[i : i + 1]) for i in range(64)])
    return {
        "windows": len(windows),
        "max_abs_dp": float(diff.max()),
        "mean_abs_dp": float(diff.mean()),
        "argmax_agreement": float(np.mean(acc.argmax(1) == ref.argmax(1))),
        "argmax_disagreements": int(np.sum(acc.argmax(1) != ref.argmax(1))),
        "class_counts_cpu": np.bincount(ref.argmax(1), minlength=3).tolist(),
        "batch_invariance_max_abs_dp": float(np.abs(one_by_one - acc[:64]).max()),
        "max_prob": float(ref.max()),
    }


def cold_shapes(model_dir: Path, provider: str, windows: np.ndarray, threads: int) -> dict[str, Any]:
    """A fresh model (warmed at 1 and 8 as the service does), then the first call at each unseen batch size."""
    model, load_s = load_accelerated(model_dir, provider, threads)
    out: dict[str, Any] = {"load_and_warmup_s": load_s, "shapes": {}}
    for n in COLD_SHAPES:
        x = np.ascontiguousarray(windows[:n])
        t0 = time.perf_counter()
        model.run(x)
        first = (time.perf_counter() - t0) * 1e3
        steady = statistics.median(time_calls(functools.partial(model.run, x), seconds=0.0, warmup=3, min_runs=30))
        out["shapes"][str(n)] = {"first_ms": first, "steady_p50_ms": steady}
    return out


# -- main ------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO_ROOT / "bench" / "results" / "raw",
        help="Folder for gpu.json and gpu.md (default $OUT, else bench/results/raw).",
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="Seconds per in-process point (both halves).")
    parser.add_argument("--e2e-seconds", type=float, default=5.0, help="Seconds per end-to-end load level.")
    parser.add_argument("--threads", type=int, default=1, help="intra_op_threads of the in-process CUDA session.")
    parser.add_argument("--no-cpu-server", action="store_true", help="Skip the CPU server end-to-end comparison.")
    parser.add_argument(
        "--connections",
        type=_connection_list,
        default=E2E_CONNECTIONS,
        help="End-to-end load levels, comma-separated connection counts (default 1,64).",
    )
    parser.add_argument(
        "--provider",
        choices=("cuda", "cpu"),
        default="cuda",
        help="Provider under test. 'cpu' only checks this script where there is no GPU.",
    )
    return parser


def _connection_list(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not levels or any(c < 1 for c in levels):
        raise argparse.ArgumentTypeError(f"connection counts must be positive: {text!r}")
    return levels


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except Unavailable as e:
        print(f"bench.gpu: CUDA is unavailable here, nothing measured.\n{e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise Unavailable("onnxruntime is not installed; install onnxruntime-gpu (`pip install .[gpu]`).") from e
    if args.provider == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise Unavailable(
            f"onnxruntime {ort.__version__} offers {ort.get_available_providers()}, not CUDAExecutionProvider: "
            "install onnxruntime-gpu (the CUDA build matching the machine's CUDA major) instead of onnxruntime."
        )
    from runtime.session import Model, available_cpus, threads_per_worker

    env = gpu_environment(ort)
    print(f"bench.gpu: {json.dumps(env)}", flush=True)
    model, load_s = load_accelerated(args.model_dir, args.provider, args.threads)
    if model.info.provider != args.provider:
        raise Unavailable(f"Model.load ran on {model.info.provider}, not {args.provider}")
    actual = model._session.get_providers()
    print(f"bench.gpu: session providers {actual}; load + warm-up {load_s:.2f} s", flush=True)

    windows = synthetic_windows(PARITY_WINDOWS, seed=0)
    results: dict[str, Any] = {
        "provider": args.provider,
        "environment": env,
        "session_providers": actual,
        "accelerated_threads": args.threads,
        "load_s": load_s,
        "inputs": "synthetic random-walk windows (1 % daily volatility, OHLC wicks, uniform volume), seed 0",
    }
    results["kernel"] = kernel_points(model, windows, args.seconds)
    print("bench.gpu: kernel points done", flush=True)
    service_threads = threads_per_worker(0, 1, available_cpus())
    results["cpu"] = cpu_points(args.model_dir, windows, args.seconds, sorted({1, service_threads}))
    print("bench.gpu: cpu points done", flush=True)
    cpu_fp32 = Model.load(args.model_dir, precision="fp32", provider="cpu", intra_op_threads=service_threads)
    results["parity"] = parity(model, cpu_fp32, windows)
    results["cold_shapes"] = cold_shapes(args.model_dir, args.provider, windows, args.threads)
    results["placement"] = node_placement(args.model_dir, args.provider)
    print("bench.gpu: parity, cold shapes, placement done", flush=True)

    body_window = windows[0]
    body = request_body(body_window)
    expected = cpu_fp32.run(body_window[None])[0]
    del model  # free the in-process sessions before the servers start
    log_dir = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    e2e = [
        end_to_end(
            f"{args.provider}-fp32",
            args.provider,
            "fp32",
            args.model_dir,
            body,
            expected,
            args.e2e_seconds,
            log_dir,
            args.connections,
        )
    ]
    if not args.no_cpu_server and args.provider != "cpu":
        e2e.append(
            end_to_end(
                "cpu-auto", "cpu", "auto", args.model_dir, body, expected, args.e2e_seconds, log_dir, args.connections
            )
        )
    results["end_to_end"] = e2e
    try:
        results["v2_throughput"] = v2_throughput.measure(args.model_dir, args.provider, args.e2e_seconds, 8, log_dir)
    except Exception as e:  # recorded, not raised: the rest of the run is still worth writing
        results["v2_throughput"] = {"error": f"{type(e).__name__}: {e}"}
    results["elapsed_s"] = time.perf_counter() - started

    md = gpu_markdown(results)
    if "error" not in results["v2_throughput"]:
        md += "\n\n" + v2_throughput.markdown(results["v2_throughput"], args.e2e_seconds, 8)
    print(md, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    (args.out / "gpu.md").write_text(md + "\n")
    print(f"bench.gpu: wrote {args.out / 'gpu.json'} and {args.out / 'gpu.md'}", flush=True)
    return 1 if any("error" in e for e in e2e) else 0


if __name__ == "__main__":
    sys.exit(main())
