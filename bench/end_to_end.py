"""End to end: the real server (``python -m runtime``) on loopback, driven by a closed-loop aiohttp client.

Its cold start to /ready, its first answer against an in-process reference, then each connection level: the client's
latencies and CPU, the server's CPU, and the model runs it made (the histograms of its /metrics before and after).
"""

from __future__ import annotations

import asyncio
import json
import resource
import secrets
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.floor import percentile
from bench.metrics import MODEL_HISTOGRAMS, histogram_delta, scrape_histograms
from bench.servers import Server, free_port, http_request, service_spec

E2E_CONNECTIONS = (1, 64)


async def closed_loop(url: str, body: bytes, api_key: str, connections: int, seconds: float) -> dict[str, Any]:
    """``connections`` clients, each sending its next request when the last is answered, for ``seconds`` after a
    1 s warm-up; latencies in ms, whatever the status (``statuses`` counts them)."""
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
    """Start one service on ``provider``, check its first answer against ``expected``, load it at each level, stop
    it; a failure is recorded with the server's log tail rather than raised."""
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
            res = asyncio.run(closed_loop(f"{server.base_url}/predict", body, api_key, c, seconds))
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
