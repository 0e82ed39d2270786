"""Large batches end to end: v2 binary windows/s through HTTP against in-process ``session.run`` at the same batch.

``python -m bench.v2_throughput`` (also run by ``python -m bench.gpu``) on a machine with CUDA:

* in process: `Model.load(provider=cuda, precision=fp32)` and ``Model.run`` on batches of 64, 128 and 256
  windows, back to back for ``--seconds``: windows/s;
* through HTTP: the real server (``python -m runtime --provider cuda``, 1 worker and ``--workers 2`` sharing the
  device) on loopback, ``POST /v2/models/signal_predictor/infer`` with the binary tensor extension (the windows as
  little-endian float32 after the JSON header, probabilities back binary), at each batch from ``--connections``
  threads with keep-alive connections: windows/s of 200 answers;
* the ratio HTTP ÷ in-process at each batch (the issue's goal: >= 0.5).

Without CUDA it exits with status 2 and says why (nothing measured). ``--provider cpu`` runs the same steps on the
CPU provider: only to check the script where there is no GPU; those figures say nothing about CUDA.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/v2_throughput.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench.servers import REPO_ROOT, Server, free_port, running, service_spec
from bench.synthetic import synthetic_windows
from runtime.constants import INPUT_NAME, MODEL_NAME, OUTPUT_NAME

BATCHES = (64, 128, 256)
API_KEY = "bench-key-0123456789"


class Unavailable(Exception):
    """The provider under test cannot be used here; the message says why."""


def v2_binary_body(windows: np.ndarray) -> tuple[bytes, int]:
    """A v2 infer request with the binary tensor extension; (body, JSON header length)."""
    raw = np.ascontiguousarray(windows, dtype="<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": INPUT_NAME,
                    "datatype": "FP32",
                    "shape": list(windows.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": OUTPUT_NAME, "parameters": {"binary_data": True}}],
        },
        separators=(",", ":"),
    ).encode()
    return header + raw, len(header)


def in_process(model: Any, windows: np.ndarray, seconds: float) -> dict[str, float]:
    model.run(windows)  # this batch shape once before timing
    calls = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        model.run(windows)
        calls += 1
    wall = time.perf_counter() - t0
    return {"windows_per_s": calls * len(windows) / wall, "ms_per_call": wall / calls * 1000, "calls": calls}


def through_http(port: int, windows: np.ndarray, connections: int, seconds: float) -> dict[str, Any]:
    body, header_len = v2_binary_body(windows)
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(header_len),
        "X-API-Key": API_KEY,
    }
    path = f"/v2/models/{MODEL_NAME}/infer"
    counts = {"ok": 0, "other": 0}
    lock = threading.Lock()
    start = threading.Barrier(connections + 1)
    end = [0.0]

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        ok = other = 0
        try:
            start.wait()
            while time.perf_counter() < end[0]:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    ok += 1
                else:
                    other += 1
        finally:
            conn.close()
            with lock:
                counts["ok"] += ok
                counts["other"] += other

    threads = [threading.Thread(target=client) for _ in range(connections)]
    for t in threads:
        t.start()
    end[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    start.wait()
    for t in threads:
        t.join(seconds + 120)
    wall = time.perf_counter() - t0
    return {
        "connections": connections,
        "windows_per_s": counts["ok"] * len(windows) / wall,
        "requests_ok": counts["ok"],
        "requests_not_ok": counts["other"],
    }


def check_answer(port: int, windows: np.ndarray, expected: np.ndarray) -> float:
    """Max |dp| of one binary v2 answer against the in-process probabilities (the path must compute, not echo)."""
    body, header_len = v2_binary_body(windows)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(
            "POST",
            f"/v2/models/{MODEL_NAME}/infer",
            body=body,
            headers={"Inference-Header-Content-Length": str(header_len), "X-API-Key": API_KEY},
        )
        response = conn.getresponse()
        raw = response.read()
        if response.status != 200:
            raise RuntimeError(f"v2 infer answered {response.status}: {raw[:300]!r}")
        n = int(response.getheader("Inference-Header-Content-Length") or 0)
    finally:
        conn.close()
    got = np.frombuffer(raw[n:], dtype="<f4").reshape(len(windows), -1)
    return float(np.abs(got - expected).max())


def measure(model_dir: Path, provider: str, seconds: float, connections: int, log_dir: Path) -> dict[str, Any]:
    from runtime.errors import EdgeError
    from runtime.session import Model

    try:
        model = Model.load(model_dir, precision="fp32", provider=provider, intra_op_threads=1)
    except EdgeError as e:
        raise Unavailable(e.message) from e
    if model.info.provider != provider:
        raise Unavailable(f"Model.load ran on {model.info.provider}, not {provider}")
    windows = synthetic_windows(max(BATCHES), seed=0)
    results: dict[str, Any] = {"provider": provider, "in_process": {}, "http": {}}
    for b in BATCHES:
        results["in_process"][str(b)] = in_process(model, windows[:b], seconds)
    expected = model.run(windows[: BATCHES[0]])
    del model
    for workers in (1, 2):
        port = free_port()
        spec = service_spec(
            f"v2-{provider}-w{workers}",
            port=port,
            model_dir=str(model_dir),
            precision="fp32",
            workers=workers,
            api_key=API_KEY,
            extra=[
                "--provider",
                provider,
                "--max-batch-size",
                str(max(BATCHES)),
                "--max-queue",
                str(max(BATCHES) * connections * 2),
                "--max-pending-requests",
                str(connections * 4),
                "--drift-sample-rate",
                "0",
            ],
        )
        server = Server(spec, port, log_dir)
        key = f"workers={workers}"
        with running([server]):
            server.start()
            server.wait_ready(180)
            results["http"][key] = {"max_abs_dp_vs_in_process": check_answer(port, windows[: BATCHES[0]], expected)}
            for b in BATCHES:
                point = through_http(port, windows[:b], connections, seconds)
                point["ratio_to_in_process"] = point["windows_per_s"] / results["in_process"][str(b)]["windows_per_s"]
                results["http"][key][str(b)] = point
    return results


def markdown(results: dict[str, Any], seconds: float, connections: int) -> str:
    lines = [
        f"**v2 binary through HTTP vs in-process `Model.run`** ({results['provider']}, FP32, synthetic windows, "
        f"{seconds:g} s per point, {connections} client connections): windows/s",
        "",
        "| batch | in-process | HTTP 1 worker | ÷ | HTTP 2 workers | ÷ |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for b in BATCHES:
        ip = results["in_process"][str(b)]["windows_per_s"]
        one = results["http"]["workers=1"][str(b)]
        two = results["http"]["workers=2"][str(b)]
        lines.append(
            f"| {b} | {ip:,.0f} | {one['windows_per_s']:,.0f} | {one['ratio_to_in_process']:.2f} | "
            f"{two['windows_per_s']:,.0f} | {two['ratio_to_in_process']:.2f} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.v2_throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, default=REPO_ROOT / "models")
    p.add_argument("--provider", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO_ROOT / "bench" / "results" / "raw",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import onnxruntime as ort
    except ImportError:
        print("bench.v2_throughput: onnxruntime is not installed; nothing measured", file=sys.stderr)
        return 2
    if args.provider == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        print(
            f"bench.v2_throughput: CUDA is unavailable here (onnxruntime {ort.__version__} offers "
            f"{ort.get_available_providers()}), nothing measured; install onnxruntime-gpu (`pip install .[gpu]`)",
            file=sys.stderr,
        )
        return 2
    try:
        results = measure(args.model_dir, args.provider, args.seconds, args.connections, Path(tempfile.mkdtemp()))
    except Unavailable as e:
        print(f"bench.v2_throughput: {args.provider} is unavailable here, nothing measured.\n{e}", file=sys.stderr)
        return 2
    md = markdown(results, args.seconds, args.connections)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "v2_throughput.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "v2_throughput.md").write_text(md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
