"""``/stream`` beside ``/predict`` and bare onnxruntime, in one run against one server (issue 16's figures).

    python -m bench.stream                  # ~40 s: 5 s per point
    python -m bench.stream --seconds 2      # smoke

Measures, in this order, on one ``python -m runtime`` (default settings, INT8, batch-invariant):

- the floor: one bare ``onnxruntime`` INT8 run at batch 1 (`bench.floor`, the plain INT8 graph), p50;
- the transport floors (`bench.http_floor`: the service's uvicorn stack doing no work): the same ``/predict`` body
  and the same one-candle message answered with a fixed body of a prediction's size, p50/p99 at one connection.
  A path's p50 minus its transport floor minus the model floor is the service's own work per request; the
  WebSocket floor plus the model floor is the lowest ``/stream`` p50 this stack allows (zero work per message);
- ``POST /predict`` at one keep-alive connection: round-trip p50/p99 (a 60-candle body, ~6 KB);
- ``/stream`` at one connection, one candle per message: round-trip p50/p99 per candle (each answer a signal);
- 64 connections closed-loop: ``/predict`` requests/s and ``/stream`` candles/s (one symbol per connection).

Every client is Python asyncio on the same machine as the server (uvloop when installed), so the 64-connection
figures include the client's own CPU; wrk would push ``/predict`` harder. Numbers are for comparing the paths
with each other in one run, not absolute capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench.floor import load_session, percentile, time_runs
from bench.servers import REPO_ROOT, Server, free_port, http_floor_spec, service_spec
from bench.wsclient import WebSocket

KEY = "bench-stream-key-0123456789"
START = datetime(2020, 1, 1, tzinfo=UTC)


def _bars() -> np.ndarray:
    """Daily S&P 500 OHLCV rows (float64 [n, 5]) from `arch`; a seeded random walk without it."""
    try:
        from arch.data import sp500

        return sp500.load()[["Open", "High", "Low", "Close", "Volume"]].to_numpy(dtype=np.float64)
    except ImportError:
        rng = np.random.default_rng(0)
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 5000)))
        return np.stack([close, close * 1.003, close * 0.997, close, rng.uniform(1e6, 2e6, 5000)], axis=1)


class Feed:
    """Candle i of a market (rows cycled, one minute apart), as the API's dict or as prebuilt JSON text."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows.tolist()
        # The price and volume part of each row's JSON, serialized once: a load client must not spend more CPU
        # building a one-candle message than the /predict client spends resending its prebuilt body.
        self._tails = [
            json.dumps(dict(zip(("open", "high", "low", "close", "volume"), r, strict=True)))[1:] for r in self.rows
        ]

    def candle(self, i: int) -> dict[str, Any]:
        o, h, lo, c, v = self.rows[i % len(self.rows)]
        ts = (START + timedelta(minutes=i)).isoformat()
        return {"timestamp": ts, "open": o, "high": h, "low": lo, "close": c, "volume": v}

    def message(self, symbol: str, first: int, last: int) -> str:
        tails = self._tails
        candles = ", ".join(
            f'{{"timestamp": "{(START + timedelta(minutes=i)).isoformat()}", {tails[i % len(tails)]}'
            for i in range(first, last + 1)
        )
        return f'{{"symbol": "{symbol}", "exchange": "binance", "candles": [{candles}]}}'

    def predict_body(self, last: int) -> bytes:
        candles = [self.candle(i) for i in range(last - 59, last + 1)]
        return json.dumps({"symbol": "SPX/USD", "exchange": "binance", "sequence": candles}).encode()


async def _http_client(port: int, body: bytes, seconds: float, latencies: list[float] | None) -> int:
    """Closed-loop POST /predict on one keep-alive connection; requests answered 200."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST /predict HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\nx-api-key: {KEY}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    request = head + body
    done = 0
    end = time.perf_counter() + seconds
    try:
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            writer.write(request)
            headers = await reader.readuntil(b"\r\n\r\n")
            length = int(next(h for h in headers.split(b"\r\n") if h.lower().startswith(b"content-length:"))[15:])
            await reader.readexactly(length)
            if latencies is not None:
                latencies.append((time.perf_counter() - t0) * 1e3)
            done += headers.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
    return done


async def _stream_client(
    port: int, feed: Feed, symbol: str, seconds: float, latencies: list[float] | None, offset: int
) -> int:
    """One connection, one symbol: fill the window, then one candle per message; signals answered.

    The lean client (`bench.wsclient`), so that the round trip is the server's and the transport's, as for the raw
    `/predict` client above."""
    ws = await WebSocket.connect("127.0.0.1", port, "/stream", {"X-API-Key": KEY})
    try:
        await ws.send(feed.message(symbol, offset, offset + 59))
        await ws.recv()
        i = offset + 60
        done = 0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            message = feed.message(symbol, i, i)
            t0 = time.perf_counter()
            await ws.send(message)
            answer = await ws.recv()
            if latencies is not None:
                latencies.append((time.perf_counter() - t0) * 1e3)
            done += '"prediction"' in answer
            i += 1
    finally:
        await ws.close()
    return done


async def _library_client(port: int, feed: Feed, symbol: str, seconds: float, latencies: list[float]) -> int:
    """The same loop through the `websockets` library's client, for comparison: what a typical bot would use."""
    from websockets.asyncio.client import connect

    async with connect(f"ws://127.0.0.1:{port}/stream", additional_headers={"X-API-Key": KEY}, compression=None) as ws:
        await ws.send(feed.message(symbol, 0, 59))
        await ws.recv()
        i, done = 60, 0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            message = feed.message(symbol, i, i)
            t0 = time.perf_counter()
            await ws.send(message)
            answer = await ws.recv()
            latencies.append((time.perf_counter() - t0) * 1e3)
            done += '"prediction"' in answer
            i += 1
    return done


async def _gather(clients: list[Any]) -> list[int]:
    return list(await asyncio.gather(*clients))


def _summary(samples: list[float]) -> dict[str, float]:
    return {"n": len(samples), "p50_ms": statistics.median(samples), "p99_ms": percentile(samples, 99)}


def _loop_run() -> Any:
    try:
        import uvloop

        return uvloop.run
    except ImportError:  # pragma: no cover
        return asyncio.run


def _transport_floors(feed: Feed, body: bytes, seconds: float) -> dict[str, Any]:
    """``/predict`` and ``/stream`` round trips at one connection on `bench.http_floor` (same stack, no work)."""
    loop_run = _loop_run()
    port = free_port()
    server = Server(
        http_floor_spec("transport-floor", port=port), port, REPO_ROOT / "bench" / "results" / "raw" / "stream"
    )
    server.start()
    try:
        server.wait_ready()
        loop_run(_http_client(port, body, min(seconds, 1.0), None))  # warm both paths
        loop_run(_stream_client(port, feed, "WARM", min(seconds, 1.0), None, 0))
        http: list[float] = []
        loop_run(_http_client(port, body, seconds, http))
        ws: list[float] = []
        loop_run(_stream_client(port, feed, "SPX/USD", seconds, ws, 0))
    finally:
        server.stop()
    return {"http_floor_1": _summary(http), "ws_floor_1": _summary(ws)}


def run(seconds: float, connections: int, model_dir: Path) -> dict[str, Any]:
    loop_run = _loop_run()
    feed = Feed(_bars())
    out: dict[str, Any] = {"seconds_per_point": seconds, "connections": connections}

    session = load_session(model_dir, "int8", 1)
    x = np.asarray(feed.rows[:60], dtype=np.float32)[None]  # (1, 60, 5)
    floor = time_runs(session, x, seconds=min(seconds, 3.0))
    out["floor_int8_p50_ms"] = statistics.median(floor)
    del session

    body = feed.predict_body(59)
    out.update(_transport_floors(feed, body, seconds))

    port = free_port()
    spec = service_spec("stream", port=port, model_dir=str(model_dir), precision="int8", workers=1, api_key=KEY)
    server = Server(spec, port, REPO_ROOT / "bench" / "results" / "raw" / "stream")
    server.start()
    try:
        server.wait_ready()
        loop_run(_http_client(port, body, 1.0, None))  # warm both paths
        loop_run(_stream_client(port, feed, "WARM", 1.0, None, 0))

        predict_lat: list[float] = []
        loop_run(_http_client(port, body, seconds, predict_lat))
        out["predict_1"] = _summary(predict_lat)
        stream_lat: list[float] = []
        loop_run(_stream_client(port, feed, "SPX/USD", seconds, stream_lat, 0))
        out["stream_1"] = _summary(stream_lat)
        library_lat: list[float] = []
        loop_run(_library_client(port, feed, "LIB/USD", seconds, library_lat))
        out["stream_1_library"] = _summary(library_lat)

        t0 = time.perf_counter()
        answered = loop_run(_gather([_http_client(port, body, seconds, None) for _ in range(connections)]))
        out["predict_n_rps"] = sum(answered) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        clients = [_stream_client(port, feed, f"S{c}", seconds, None, 97 * c) for c in range(connections)]
        answered = loop_run(_gather(clients))
        out["stream_n_candles_s"] = sum(answered) / (time.perf_counter() - t0)
        out["server_rss_mb"] = server.memory()["rss_mb"]
    finally:
        server.stop()
    return out


def report(r: dict[str, Any]) -> str:
    floor = r["floor_int8_p50_ms"]
    p1, s1, lib = r["predict_1"], r["stream_1"], r["stream_1_library"]
    hf, wf = r["http_floor_1"], r["ws_floor_1"]
    n = r["connections"]
    best = wf["p50_ms"] + floor  # /stream with zero work per message
    work_predict = (p1["p50_ms"] - hf["p50_ms"] - floor) * 1e3
    work_stream = (s1["p50_ms"] - wf["p50_ms"] - floor) * 1e3
    lines = [
        f"| path | 1 connection p50 (ms) | p99 (ms) | {n} connections |",
        "|---|---|---|---|",
        f"| bare onnxruntime INT8, batch 1 | {floor:.3f} | | |",
        f"| transport floor: the /predict body answered with no work | {hf['p50_ms']:.3f} | {hf['p99_ms']:.3f} | |",
        f"| transport floor: a /stream message answered with no work | {wf['p50_ms']:.3f} | {wf['p99_ms']:.3f} | |",
        f"| POST /predict (60 candles) | {p1['p50_ms']:.3f} | {p1['p99_ms']:.3f} | "
        f"{r['predict_n_rps']:.0f} requests/s |",
        f"| /stream (1 candle per message) | {s1['p50_ms']:.3f} | {s1['p99_ms']:.3f} | "
        f"{r['stream_n_candles_s']:.0f} candles/s |",
        f"| /stream through the `websockets` client library | {lib['p50_ms']:.3f} | {lib['p99_ms']:.3f} | |",
        "",
        f"/stream p50 = {s1['p50_ms'] / floor:.2f}x the floor, {s1['p50_ms'] / p1['p50_ms']:.2f}x /predict's; "
        f"at {n} connections {r['stream_n_candles_s'] / r['predict_n_rps']:.2f}x /predict's throughput "
        f"({r['seconds_per_point']:g} s per point; server RSS {r['server_rss_mb']:.0f} MB at the end).",
        "",
        f"Service work per request (p50 - transport floor - model floor): /predict {work_predict:.0f} µs, "
        f"/stream {work_stream:.0f} µs.",
        f"Lowest /stream p50 this stack allows (WebSocket floor + model floor, zero work): {best:.3f} ms = "
        f"{best / floor:.2f}x the floor, {best / p1['p50_ms']:.2f}x /predict's p50.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stream", description=__doc__.splitlines()[0])
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
