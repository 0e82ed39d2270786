"""KServe v2 over gRPC beside v2 over HTTP (binary tensors), in one run against one server (issue 15's figures).

    python -m bench.grpc                  # ~50 s: 5 s per point
    python -m bench.grpc --seconds 2      # smoke

One ``python -m runtime --grpc-port`` (default settings, INT8, batch-invariant) serves both protocols from one
process and event loop. The same real window (the last 60 S&P 500 days) goes as:

- HTTP: ``POST /v2/models/signal_predictor/infer`` with Triton's binary tensor extension (a JSON header and the
  1,200 raw bytes; binary output), on keep-alive connections, the request bytes built once;
- gRPC: ``ModelInfer`` with ``raw_input_contents`` (what tritonclient.grpc sends), the request serialized once,
  one ``grpc.aio`` channel per connection (a local subchannel pool, so channels do not share a connection).

Before measuring, both answers are checked equal bit for bit. First each protocol alone: liveness calls
(``GET /v2/health/live``, ``ServerLive``: no model, no body) one after another, with the server's CPU per call.
Latency at one connection: closed loop, the two protocols alternating in slices so machine noise hits both alike
(p50/p99 per request). Throughput: N connections closed loop per protocol, one after the other, with the server's
CPU time per request (from /proc) and the clients' (this process). Every client is Python asyncio (uvloop) on the
same machine as the server, so the figures include the clients' own CPU: they compare the two protocols in one run,
not capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.floor import percentile
from bench.servers import REPO_ROOT, Server, free_port, service_spec
from bench.stream import _bars

KEY = "bench-grpc-key-0123456789"
METHOD = "/inference.GRPCInferenceService/ModelInfer"
PATH = "/v2/models/signal_predictor/infer"


def _window() -> np.ndarray:
    return np.asarray(_bars()[-60:], dtype=np.float32)[None]  # (1, 60, 5)


def http_request(window: np.ndarray) -> bytes:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "ohlcv_sequence",
                    "shape": list(window.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": window.nbytes},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()
    body = header + window.astype("<f4").tobytes()
    head = (
        f"POST {PATH} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/octet-stream\r\nx-api-key: {KEY}\r\n"
        f"inference-header-content-length: {len(header)}\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def grpc_request(window: np.ndarray) -> bytes:
    from runtime.grpc import edge_inference_pb2 as pb

    tensor = pb.ModelInferRequest.InferInputTensor(name="ohlcv_sequence", datatype="FP32", shape=list(window.shape))
    request = pb.ModelInferRequest(
        model_name="signal_predictor", inputs=[tensor], raw_input_contents=[window.astype("<f4").tobytes()]
    )
    return request.SerializeToString()


class HttpConnection:
    def __init__(self, port: int, request: bytes) -> None:
        self.port, self.request = port, request

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def call(self) -> bytes:
        self.writer.write(self.request)
        headers = await self.reader.readuntil(b"\r\n\r\n")
        length = int(next(h for h in headers.split(b"\r\n") if h.lower().startswith(b"content-length:"))[15:])
        body = await self.reader.readexactly(length)
        if not headers.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"HTTP answered {headers[:40]!r}: {body[:200]!r}")
        return body

    async def close(self) -> None:
        self.writer.close()


class GrpcConnection:
    def __init__(self, port: int, request: bytes, method: str = METHOD) -> None:
        self.port, self.request, self.method = port, request, method

    async def open(self) -> None:
        import grpc

        self.channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{self.port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        # Bytes in, bytes out: the request was serialized once, and the answer is not parsed (as HTTP's is not).
        self.stub = self.channel.unary_unary(self.method)
        self.metadata = (("x-api-key", KEY),)
        await self.channel.channel_ready()

    async def call(self) -> bytes:
        return bytes(await self.stub(self.request, metadata=self.metadata))

    async def close(self) -> None:
        await self.channel.close()


async def _loop(conn: HttpConnection | GrpcConnection, seconds: float, latencies: list[float] | None) -> int:
    done = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        await conn.call()
        if latencies is not None:
            latencies.append((time.perf_counter() - t0) * 1e3)
        done += 1
    return done


async def _latency(port: int, grpc_port: int, window: np.ndarray, seconds: float) -> dict[str, list[float]]:
    http, rpc = HttpConnection(port, http_request(window)), GrpcConnection(grpc_port, grpc_request(window))
    await http.open()
    await rpc.open()
    try:
        await _loop(http, 1.0, None)  # warm-up
        await _loop(rpc, 1.0, None)
        samples: dict[str, list[float]] = {"http": [], "grpc": []}
        slices = 10  # alternate, so a noisy second hits both protocols
        for _ in range(slices):
            await _loop(http, seconds / slices, samples["http"])
            await _loop(rpc, seconds / slices, samples["grpc"])
        return samples
    finally:
        await http.close()
        await rpc.close()


async def _throughput(conns: list[HttpConnection] | list[GrpcConnection], seconds: float) -> tuple[int, float]:
    """(requests answered, seconds taken) with every connection in a closed loop."""
    await asyncio.gather(*(c.open() for c in conns))
    try:
        t0 = time.perf_counter()
        done = await asyncio.gather(*(_loop(c, seconds, None) for c in conns))
        return sum(done), time.perf_counter() - t0
    finally:
        await asyncio.gather(*(c.close() for c in conns))


async def _check(port: int, grpc_port: int, window: np.ndarray) -> list[float]:
    """Both protocols' probabilities for the window, which must be the same float32 values."""
    from runtime.grpc import edge_inference_pb2 as pb

    http, rpc = HttpConnection(port, http_request(window)), GrpcConnection(grpc_port, grpc_request(window))
    await http.open()
    await rpc.open()
    try:
        body = await http.call()
        answer = pb.ModelInferResponse.FromString(await rpc.call())
    finally:
        await http.close()
        await rpc.close()
    over_http = np.frombuffer(body[-12:], dtype="<f4")  # binary output: 3 float32 after the JSON header
    over_grpc = np.frombuffer(answer.raw_output_contents[0], dtype="<f4")
    if not np.array_equal(over_http, over_grpc):
        raise RuntimeError(f"gRPC answered {over_grpc}, HTTP {over_http}: not measuring")
    return [float(p) for p in over_grpc]


async def _protocol_floor(server: Server, conn: HttpConnection | GrpcConnection, calls: int) -> dict[str, float]:
    """Liveness calls (no model, no body) one after another: what each protocol's stack costs alone."""
    await conn.open()
    try:
        for _ in range(100):
            await conn.call()
        cpu = server.cpu_seconds()
        latencies: list[float] = []
        for _ in range(calls):
            t0 = time.perf_counter()
            await conn.call()
            latencies.append((time.perf_counter() - t0) * 1e3)
        return {**_summary(latencies), "server_cpu_us": (server.cpu_seconds() - cpu) / calls * 1e6}
    finally:
        await conn.close()


def _summary(samples: list[float]) -> dict[str, float]:
    return {"n": len(samples), "p50_ms": statistics.median(samples), "p99_ms": percentile(samples, 99)}


def run(seconds: float, connections: int, model_dir: Path) -> dict[str, Any]:
    try:
        import uvloop

        loop_run: Any = uvloop.run
    except ImportError:  # pragma: no cover
        loop_run = asyncio.run
    window = _window()
    port, grpc_port = free_port(), free_port()
    spec = service_spec(
        "grpc",
        port=port,
        model_dir=str(model_dir),
        precision="int8",
        workers=1,
        api_key=KEY,
        env={"EDGE_GRPC_PORT": str(grpc_port), "EDGE_DRIFT_SAMPLE_RATE": "0"},
    )
    server = Server(spec, port, REPO_ROOT / "bench" / "results" / "raw" / "grpc")
    server.start()
    out: dict[str, Any] = {"seconds_per_point": seconds, "connections": connections}
    try:
        server.wait_ready()
        out["probabilities"] = loop_run(_check(port, grpc_port, window))
        calls = max(200, int(seconds * 400))
        live = b"GET /v2/health/live HTTP/1.1\r\nhost: bench\r\n\r\n"
        out["http_live"] = loop_run(_protocol_floor(server, HttpConnection(port, live), calls))
        server.wait_idle()
        live_rpc = GrpcConnection(grpc_port, b"", "/inference.GRPCInferenceService/ServerLive")
        out["grpc_live"] = loop_run(_protocol_floor(server, live_rpc, calls))
        samples = loop_run(_latency(port, grpc_port, window, seconds))
        out["http_1"], out["grpc_1"] = _summary(samples["http"]), _summary(samples["grpc"])
        for name, conns in (
            ("http", [HttpConnection(port, http_request(window)) for _ in range(connections)]),
            ("grpc", [GrpcConnection(grpc_port, grpc_request(window)) for _ in range(connections)]),
        ):
            server.wait_idle()
            cpu, client_cpu = server.cpu_seconds(), time.process_time()
            done, elapsed = loop_run(_throughput(conns, seconds))
            out[f"{name}_n_rps"] = done / elapsed
            # CPU per request of the server and of this process's clients (all its threads): they share the cores.
            out[f"{name}_n_server_cpu_us"] = (server.cpu_seconds() - cpu) / max(done, 1) * 1e6
            out[f"{name}_n_client_cpu_us"] = (time.process_time() - client_cpu) / max(done, 1) * 1e6
        out["server_rss_mb"] = server.memory()["rss_mb"]
    finally:
        server.stop()
    return out


def report(r: dict[str, Any]) -> str:
    h, g, n = r["http_1"], r["grpc_1"], r["connections"]
    hl, gl = r["http_live"], r["grpc_live"]
    return "\n".join(
        [
            f"| protocol | 1 conn. p50 (ms) | p99 (ms) | {n} conn. (req/s) | server CPU/req (µs) | client CPU (µs) |",
            "|---|---|---|---|---|---|",
            f"| v2 HTTP, binary tensors | {h['p50_ms']:.3f} | {h['p99_ms']:.3f} | {r['http_n_rps']:.0f} | "
            f"{r['http_n_server_cpu_us']:.0f} | {r['http_n_client_cpu_us']:.0f} |",
            f"| v2 gRPC, raw_input_contents | {g['p50_ms']:.3f} | {g['p99_ms']:.3f} | {r['grpc_n_rps']:.0f} | "
            f"{r['grpc_n_server_cpu_us']:.0f} | {r['grpc_n_client_cpu_us']:.0f} |",
            f"| protocol alone: GET /v2/health/live | {hl['p50_ms']:.3f} | {hl['p99_ms']:.3f} | | "
            f"{hl['server_cpu_us']:.0f} | |",
            f"| protocol alone: gRPC ServerLive | {gl['p50_ms']:.3f} | {gl['p99_ms']:.3f} | | "
            f"{gl['server_cpu_us']:.0f} | |",
            "",
            f"gRPC / HTTP: p50 {g['p50_ms'] / h['p50_ms']:.2f}x, p99 {g['p99_ms'] / h['p99_ms']:.2f}x at 1 connection; "
            f"{r['grpc_n_rps'] / r['http_n_rps']:.2f}x the requests/s at {n} connections "
            f"({r['seconds_per_point']:g} s per point; server RSS {r['server_rss_mb']:.0f} MB at the end; "
            f"answers equal bit for bit: {r['probabilities']}).",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per measured point")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = run(args.seconds, args.connections, args.model_dir)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
