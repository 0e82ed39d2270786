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
  at each level (the ``edge_batch_size`` histogram of its /metrics, before and after the level).

Windows are synthetic random walks (1 % daily volatility, OHLC wicks, uniform volume), not market data: the device
this runs on has no network and no `arch`. Latencies are milliseconds of wall time around one call.

Without CUDA (onnxruntime without the CUDA provider, or one that cannot load its libraries) it exits with status 2
and says why. ``--provider cpu`` runs the same steps with the CPU provider in place of CUDA: only for checking this
script on a machine without a GPU; its figures say nothing about CUDA.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/gpu.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench.floor import percentile
from bench.metrics import MODEL_HISTOGRAMS, histogram_delta, scrape_histograms
from bench.servers import REPO_ROOT, Server, free_port, http_request, service_spec
from runtime.constants import INPUT_NAME, OUTPUT_NAME, WINDOW_LENGTH

BATCHES = (1, 8, 64, 256)
CPU_BATCHES = (1, 64)
PARITY_WINDOWS = 512
#: Batch shapes the warm-up (1, 8) does not run; the batcher forms them under concurrency.
COLD_SHAPES = (2, 3, 5, 7, 16, 64)
E2E_CONNECTIONS = (1, 64)


class Unavailable(Exception):
    """CUDA cannot be used here; the message says why."""


# -- inputs ----------------------------------------------------------------------------------------------------


def random_walk(n_candles: int, seed: int) -> np.ndarray:
    """Candles (n, 5) open, high, low, close, volume: a geometric random walk with consistent OHLC."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n_candles)))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(rng.normal(0, 0.002, n_candles))
    top = np.maximum(open_, close)
    bottom = np.minimum(open_, close)
    high = top * (1 + np.abs(rng.normal(0, 0.004, n_candles)))
    low = bottom * (1 - np.abs(rng.normal(0, 0.004, n_candles)))
    volume = rng.uniform(1e6, 5e6, n_candles)
    return np.stack([open_, high, low, close, volume], axis=1)


def synthetic_windows(n: int, seed: int = 0) -> np.ndarray:
    """n float32 windows (n, 60, 5) cut at random offsets from one long random walk."""
    series = random_walk(20_000, seed)
    starts = np.random.default_rng(seed + 1).integers(0, len(series) - WINDOW_LENGTH, n)
    return np.ascontiguousarray(np.stack([series[s : s + WINDOW_LENGTH] for s in starts]), dtype=np.float32)


def request_body(window: np.ndarray, symbol: str = "SYN") -> bytes:
    """A /predict body for one window, validated with the service's own schema (daily candles, UTC)."""
    from bench import payload

    start = datetime(2024, 1, 1, tzinfo=UTC)
    candles = [
        {
            "timestamp": (start + timedelta(days=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "open": float(r[0]),
            "high": float(r[1]),
            "low": float(r[2]),
            "close": float(r[3]),
            "volume": float(r[4]),
        }
        for i, r in enumerate(window.astype(np.float64))
    ]
    return payload.encode(payload.request_body(candles, symbol=symbol))


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


# -- environment -----------------------------------------------------------------------------------------------


def gpu_name() -> str | None:
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


def environment(ort: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "onnxruntime": ort.__version__,
        "onnxruntime_package": getattr(getattr(ort.capi, "build_and_package_info", None), "package_name", None),
        "onnxruntime_cuda_version": getattr(getattr(ort.capi, "build_and_package_info", None), "cuda_version", None),
        "available_providers": ort.get_available_providers(),
        "gpu": gpu_name(),
        "cpus": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "ld_library_path_dirs": len([p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return info


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


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


# -- end to end ------------------------------------------------------------------------------------------------


async def _closed_loop(url: str, body: bytes, api_key: str, connections: int, seconds: float) -> dict[str, Any]:
    import aiohttp

    headers = {"Content-Type": "application/json", "X-API-Key": api_key}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> tuple[int, float]:
            t0 = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                return resp.status, (time.perf_counter() - t0) * 1e3

        async def worker(end: float, record: bool) -> None:
            while time.perf_counter() < end:
                status, ms = await one()
                if record:
                    latencies.append(ms)
                    statuses[status] = statuses.get(status, 0) + 1

        warm_end = time.perf_counter() + 1.0
        await asyncio.gather(*(worker(warm_end, False) for _ in range(connections)))
        cpu0 = _self_cpu_s()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(t0 + seconds, True) for _ in range(connections)))
        wall = time.perf_counter() - t0
        cpu = _self_cpu_s() - cpu0
    ok = latencies  # every request's latency, whatever its status; `statuses` counts them
    return {
        "connections": connections,
        "seconds": wall,
        "requests": len(latencies),
        "req_per_s": len(latencies) / wall,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "p50_ms": statistics.median(ok) if ok else None,
        "p99_ms": percentile(ok, 99) if ok else None,
        "mean_ms": statistics.fmean(ok) if ok else None,
        "client_cpu_fraction": cpu / wall,
    }


def _self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def end_to_end(
    name: str,
    provider: str,
    precision: str,
    model_dir: Path,
    body: bytes,
    expected: np.ndarray,
    seconds: float,
    log_dir: Path,
    connections: tuple[int, ...] = E2E_CONNECTIONS,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    api_key = secrets.token_hex(16)
    port = free_port()
    spec = service_spec(
        name,
        port=port,
        model_dir=str(model_dir),
        precision=precision,
        workers=1,
        api_key=api_key,
        env=env,
        extra=["--provider", provider],
    )
    server = Server(spec, port, log_dir)
    out: dict[str, Any] = {"name": name, "argv_tail": spec.argv[3:], "env": env or {}}
    server.start()
    try:
        out["cold_start_to_ready_s"] = server.wait_ready(timeout_s=180.0)
        status, raw = http_request(port, "GET", "/ready")
        out["ready"] = json.loads(raw) if status == 200 else {"status": status}
        status, raw = http_request(
            port, "POST", "/predict", body, {"Content-Type": "application/json", "X-API-Key": api_key}
        )
        if status != 200:
            raise RuntimeError(f"/predict answered {status}: {raw[:500]!r}")
        probs = json.loads(raw)["prediction"]["probabilities"]
        got = np.array([probs[c] for c in ("sell", "hold", "buy")])
        out["first_predict_vs_cpu_fp32_max_abs_dp"] = float(np.abs(got - expected).max())
        out["load"] = {}
        for c in connections:
            hist0 = scrape_histograms(port, MODEL_HISTOGRAMS)
            cpu0 = server.cpu_seconds()
            res = asyncio.run(_closed_loop(f"{server.base_url}/predict", body, api_key, c, seconds))
            res["server_cpu_fraction"] = (server.cpu_seconds() - cpu0) / (res["seconds"] + 1.0)  # warm-up included
            server.wait_idle(timeout_s=10)
            hist1 = scrape_histograms(port, MODEL_HISTOGRAMS)
            # Model runs during the level, its 1 s warm-up included (not separable from outside the server).
            res["server_histograms"] = {n: histogram_delta(hist0[n], hist1[n]) for n in hist1}
            out["load"][str(c)] = res
        out["rss_mb"] = server.memory()["rss_mb"]
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
        out["log_tail"] = server.log_tail(3000)
    finally:
        server.stop()
    return out


# -- report ----------------------------------------------------------------------------------------------------


def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}" if abs(x) < 1e4 else f"{x:,.0f}"
    return str(x)


def markdown(r: dict[str, Any]) -> str:
    env = r["environment"]
    acc = r["provider"].upper()
    lines = [
        f"### {acc} execution provider: {env.get('gpu') or 'no GPU'}; onnxruntime {env['onnxruntime']} "
        f"({env.get('onnxruntime_package')}, CUDA {env.get('onnxruntime_cuda_version')}); {env['cpus']} CPUs",
        "",
        f"Model load + warm-up on {acc}: {r['load_s']:.2f} s. Synthetic random-walk windows.",
        "",
        f"**{acc} FP32, one call (ms)**: `Model.run` (IO binding on CUDA) vs plain `session.run`, same session, "
        f"intra_op_threads={r['accelerated_threads']}",
        "",
        "| batch | Model.run p50 | p99 | windows/s | session.run p50 | p99 | windows/s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    k = r["kernel"]
    for n in BATCHES:
        a, b = k[f"model_run@{n}"], k[f"session_run@{n}"]
        lines.append(
            f"| {n} | {_f(a['p50_ms'])} | {_f(a['p99_ms'])} | {_f(a['windows_per_s'], 0)} "
            f"| {_f(b['p50_ms'])} | {_f(b['p99_ms'])} | {_f(b['windows_per_s'], 0)} |"
        )
    lines += [
        "",
        "**CPU provider on the same machine (ms)**",
        "",
        "| precision | threads | batch | p50 | p99 | windows/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for v in r["cpu"].values():
        lines.append(
            f"| {v['precision']} | {v['threads']} | {v['batch']} | {_f(v['p50_ms'])} | {_f(v['p99_ms'])} "
            f"| {_f(v['windows_per_s'], 0)} |"
        )
    p = r["parity"]
    lines += [
        "",
        f"**Parity** {acc} FP32 vs CPU FP32 on {p['windows']} windows: max |Δp| = {p['max_abs_dp']:.2e} "
        f"(mean {p['mean_abs_dp']:.2e}), argmax agreement {p['argmax_agreement'] * 100:.2f} % "
        f"({p['argmax_disagreements']} differ); {acc} batch-1 vs batch-512 max |Δp| = "
        f"{p['batch_invariance_max_abs_dp']:.2e}. CPU classes sell/hold/buy: {p['class_counts_cpu']}.",
        "",
        "**First call at a batch size the warm-up did not run** (fresh model, warmed at 1 and 8)",
        "",
        "| batch | first call ms | steady p50 ms |",
        "| ---: | ---: | ---: |",
    ]
    for n, v in r["cold_shapes"]["shapes"].items():
        lines.append(f"| {n} | {_f(v['first_ms'])} | {_f(v['steady_p50_ms'])} |")
    lines += ["", "**Node placement** (onnxruntime's verbose log):", "", "```"]
    lines += r["placement"].get("lines", [])[:30] or ["(nothing reported)"]
    lines += ["```", ""]
    for e in r["end_to_end"]:
        lines.append(f"**End to end: {e['name']}** (`python -m runtime {' '.join(e['argv_tail'])}`)")
        lines.append("")
        if "error" in e:
            lines += [f"failed: {e['error']}", "", "```", e.get("log_tail", ""), "```", ""]
            continue
        ready = e["ready"]
        lines.append(
            f"cold start to /ready {e['cold_start_to_ready_s']:.2f} s; /ready: provider={ready.get('provider')}, "
            f"precision={ready.get('precision')}, intra_op_threads={ready.get('intra_op_threads')}; first /predict "
            f"vs in-process CPU FP32 max |Δp| = {e['first_predict_vs_cpu_fp32_max_abs_dp']:.2e}; RSS "
            f"{e['rss_mb']:.0f} MB"
        )
        lines += [
            "",
            "| connections | req/s | p50 ms | p99 ms | statuses | client CPU | server CPU |",
            "| ---: | ---: | ---: | ---: | --- | ---: | ---: |",
        ]
        for c, v in e["load"].items():
            lines.append(
                f"| {c} | {_f(v['req_per_s'], 0)} | {_f(v['p50_ms'])} | {_f(v['p99_ms'])} | {v['statuses']} "
                f"| {v['client_cpu_fraction']:.2f} | {v['server_cpu_fraction']:.2f} |"
            )
        lines += [
            "",
            "Model runs the server made per level (its /metrics, 1 s warm-up included): count, mean windows per run "
            "and mean compute / queue ms per run, and runs per batch-size bucket (`edge_batch_size`, lo-hi = "
            "lo < size <= hi)",
            "",
            "| connections | runs | mean batch | mean compute ms | mean queue ms | runs by batch size |",
            "| ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for c, v in e["load"].items():
            h = v.get("server_histograms", {})
            b, comp, q = h.get("edge_batch_size"), h.get("edge_compute_seconds"), h.get("edge_queue_seconds")
            if not b:
                continue

            def ms(x: dict[str, Any] | None) -> float | None:
                return None if not x or x["mean"] is None else float(x["mean"]) * 1e3

            lines.append(
                f"| {c} | {b['count']} | {_f(b['mean'], 1)} | {_f(ms(comp))} | {_f(ms(q))} "
                f"| {', '.join(f'{k}: {n}' for k, n in b['buckets'].items())} |"
            )
        lines.append("")
    lines.append(f"Total bench time {r['elapsed_s']:.0f} s.")
    return "\n".join(lines)


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

    env = environment(ort)
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
    results["elapsed_s"] = time.perf_counter() - started

    md = markdown(results)
    print(md, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    (args.out / "gpu.md").write_text(md + "\n")
    print(f"bench.gpu: wrote {args.out / 'gpu.json'} and {args.out / 'gpu.md'}", flush=True)
    return 1 if any("error" in e for e in e2e) else 0


if __name__ == "__main__":
    sys.exit(main())
