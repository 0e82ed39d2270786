"""Soak test: hold closed-loop load on the service and watch throughput, latency and memory over time.

    python scripts/soak.py --duration 300 --connections 16 --out bench/results/soak
    python scripts/soak.py --url http://127.0.0.1:8000 --pid 1234 --api-key KEY --duration 600

Without ``--url`` it starts ``python -m runtime`` on a free loopback port (extra server flags after ``--``) and
samples that process's RSS. Each of ``--connections`` keep-alive HTTP/1.1 connections (raw asyncio streams, no
client library) sends a ``/predict`` as soon as its previous answer arrives. Every ``--interval`` seconds it prints
throughput, p50/p99 latency, non-200 answers and the server's VmRSS; at the end it writes ``OUT.json`` and
``OUT.md`` with the per-interval table and the RSS growth from the first interval to the last.

Loopback only: it refuses any other target, since it is a load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import os
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
DEFAULT_KEY = "soak-key-0123456789"


# -- payloads -----------------------------------------------------------------------------------------------------
def make_bodies(n: int, seed: int = 0) -> list[bytes]:
    """n distinct valid /predict bodies: 60-candle random walks at different price scales."""
    rng = random.Random(seed)
    bodies = []
    for k in range(n):
        price = 10 ** rng.uniform(-2, 5)
        start = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=k)
        candles = []
        for i in range(60):
            open_ = price
            price *= math.exp(rng.gauss(0, 0.01))
            high, low = max(open_, price) * (1 + rng.uniform(0, 0.004)), min(open_, price) * (1 - rng.uniform(0, 0.004))
            candles.append(
                {
                    "timestamp": (start + timedelta(minutes=i)).isoformat(),
                    "open": open_,
                    "high": high,
                    "low": low,
                    "close": price,
                    "volume": rng.uniform(0, 1e6),
                }
            )
        bodies.append(
            json.dumps(
                {"symbol": "BTC/USDT", "exchange": "binance", "sequence": candles}, separators=(",", ":")
            ).encode()
        )
    return bodies


# -- target -------------------------------------------------------------------------------------------------------
def require_loopback(host: str) -> None:
    """Raise SystemExit unless every address `host` resolves to is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as e:
        raise SystemExit(f"soak: cannot resolve '{host}': {e}") from e
    addresses = {str(info[4][0]).split("%")[0] for info in infos}
    bad = sorted(a for a in addresses if not ipaddress.ip_address(a).is_loopback)
    if bad:
        raise SystemExit(f"soak: refusing non-loopback target '{host}' ({', '.join(bad)}); it is a load generator")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int, key: str, extra: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "EDGE_API_KEYS": key}
    cmd = [sys.executable, "-m", "runtime", "--host", "127.0.0.1", "--port", str(port), *extra]
    print(f"soak: starting {' '.join(cmd)} (log: {log})", file=sys.stderr)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as sink:  # a file, not a pipe: nobody drains a pipe during the run
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"soak: server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /ready HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return proc
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("soak: server did not become ready in 60 s")


def rss_kib(pid: int) -> int | None:
    """VmRSS of `pid` plus its children (uvicorn workers), in KiB; None once it is gone."""
    total, found = 0, False
    pids = [pid]
    try:
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    found = True
        except OSError:
            continue
    return total if found else None


# -- load ---------------------------------------------------------------------------------------------------------
@dataclass
class Interval:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: int = 0


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, keep-alive) of one HTTP/1.1 response with a Content-Length body, which is then discarded."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    await reader.readexactly(length)
    return status, not close


async def connection(
    host: str, port: int, requests: list[bytes], stop: float, stats: list[Interval], index: int
) -> None:
    """One keep-alive connection sending requests back to back until `stop`; reconnects after a close or error."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    i = index
    while time.perf_counter() < stop:
        request = requests[i % len(requests)]
        i += 1
        start = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            writer.write(request)
            status, keep = await asyncio.wait_for(_read_response(reader), timeout=30)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as e:
            stats[-1].errors += 1
            stats[-1].statuses[type(e).__name__] = stats[-1].statuses.get(type(e).__name__, 0) + 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.05)
            continue
        bucket = stats[-1]
        bucket.statuses[str(status)] = bucket.statuses.get(str(status), 0) + 1
        if status == 200:
            bucket.latencies_ms.append((time.perf_counter() - start) * 1000)
        if not keep:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def run(args: argparse.Namespace, host: str, port: int, pid: int | None) -> dict[str, Any]:
    bodies = make_bodies(64)
    requests = [
        b"POST /predict HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\nX-API-Key: %s\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (host.encode(), port, args.api_key.encode(), len(b), b)
        for b in bodies
    ]
    stats: list[Interval] = [Interval()]
    rows: list[dict[str, Any]] = []
    started = datetime.now(UTC).isoformat(timespec="seconds")
    began = time.perf_counter()
    stop = began + args.duration
    tasks = [asyncio.create_task(connection(host, port, requests, stop, stats, k)) for k in range(args.connections)]
    tick = began
    print(f"{'t_s':>6} {'req/s':>8} {'p50_ms':>8} {'p99_ms':>8} {'non200':>7} {'errors':>6} {'rss_mib':>8}")
    while tick < stop:
        tick = min(tick + args.interval, stop)
        await asyncio.sleep(max(0.0, tick - time.perf_counter()))
        done, stats[-1] = stats[-1], Interval()
        lat = sorted(done.latencies_ms)
        rss = rss_kib(pid) if pid is not None else None
        row = {
            "t_s": round(tick - began, 1),
            "requests": sum(done.statuses.values()),
            "ok": len(lat),
            "rps": round(len(lat) / args.interval, 1),
            "p50_ms": round(_percentile(lat, 0.50), 3),
            "p99_ms": round(_percentile(lat, 0.99), 3),
            "max_ms": round(lat[-1], 3) if lat else None,
            "non_200": {k: v for k, v in done.statuses.items() if k != "200"},
            "errors": done.errors,
            "rss_mib": round(rss / 1024, 1) if rss is not None else None,
        }
        rows.append(row)
        print(
            f"{row['t_s']:>6} {row['rps']:>8} {row['p50_ms']:>8} {row['p99_ms']:>8} "
            f"{sum(row['non_200'].values()):>7} {row['errors']:>6} {row['rss_mib']!s:>8}",
            flush=True,
        )
    await asyncio.gather(*tasks)
    return summarise(args, rows, time.perf_counter() - began, started)


def summarise(args: argparse.Namespace, rows: list[dict[str, Any]], elapsed: float, started: str) -> dict[str, Any]:
    ok = sum(r["ok"] for r in rows)
    non_200: dict[str, int] = {}
    for r in rows:
        for k, v in r["non_200"].items():
            non_200[k] = non_200.get(k, 0) + v
    rss = [r["rss_mib"] for r in rows if r["rss_mib"] is not None]
    p99s = [r["p99_ms"] for r in rows if not math.isnan(r["p99_ms"])]
    return {
        "started": started,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "api_key"},
        "host": {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg()},
        "elapsed_s": round(elapsed, 1),
        "ok_requests": ok,
        "throughput_rps": round(ok / elapsed, 1),
        "non_200": non_200,
        "errors": sum(r["errors"] for r in rows),
        "p99_ms_min_max": [min(p99s), max(p99s)] if p99s else None,
        "rss_mib_first": rss[0] if rss else None,
        "rss_mib_last": rss[-1] if rss else None,
        "rss_mib_max": max(rss) if rss else None,
        "rss_growth_mib": round(rss[-1] - rss[0], 1) if rss else None,
        "rss_growth_pct": round(100 * (rss[-1] - rss[0]) / rss[0], 2) if rss else None,
        "intervals": rows,
    }


def markdown(summary: dict[str, Any]) -> str:
    c = summary["config"]
    lines = [
        f"# Soak: {summary['elapsed_s']} s, {c['connections']} keep-alive connections, /predict",
        "",
        f"- started {summary['started']}; {summary['host']['cpus']} CPUs, load average at end "
        f"{', '.join(f'{x:.2f}' for x in summary['host']['loadavg_at_end'])}",
        f"- {summary['ok_requests']} OK requests, {summary['throughput_rps']} req/s; non-200 {summary['non_200']}; "
        f"connection errors {summary['errors']}",
        f"- p99 per interval: {summary['p99_ms_min_max']} ms (min, max)",
        f"- server RSS: first interval {summary['rss_mib_first']} MiB, last {summary['rss_mib_last']} MiB, max "
        f"{summary['rss_mib_max']} MiB; growth {summary['rss_growth_mib']} MiB ({summary['rss_growth_pct']} %)",
        "",
        "| t (s) | req/s | p50 (ms) | p99 (ms) | max (ms) | non-200 | errors | RSS (MiB) |",
        "|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in summary["intervals"]:
        lines.append(
            f"| {r['t_s']} | {r['rps']} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | "
            f"{r['non_200'] or ''} | {r['errors']} | {r['rss_mib']} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300, help="Seconds of load (default 300).")
    parser.add_argument("--connections", type=int, default=16, help="Concurrent keep-alive connections (16).")
    parser.add_argument("--interval", type=float, default=10, help="Seconds per reported interval (10).")
    parser.add_argument("--url", help="A running server (loopback only); default: start one.")
    parser.add_argument("--pid", type=int, help="With --url: the server's PID, for RSS.")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("EDGE_SOAK_API_KEY", DEFAULT_KEY),
        help="X-API-Key to send (env EDGE_SOAK_API_KEY); a started server is given this key.",
    )
    parser.add_argument("--out", type=Path, default=Path("soak"), help="Writes OUT.json and OUT.md ('soak').")
    parser.add_argument("server_args", nargs="*", help="After '--': extra flags for the started server.")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.connections < 1 or args.interval <= 0:
        parser.error("--duration, --connections and --interval must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    proc = None
    if args.url:
        parts = urlsplit(args.url)
        if parts.scheme != "http" or not parts.hostname:
            raise SystemExit("soak: --url must be http://HOST:PORT")
        host, port, pid = parts.hostname, parts.port or 80, args.pid
        require_loopback(host)
    else:
        host, port = "127.0.0.1", free_port()
        proc = start_server(port, args.api_key, args.server_args, args.out.with_suffix(".server.log"))
        pid = proc.pid
    try:
        summary = asyncio.run(run(args, host, port, pid))
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(summary))
    print(markdown(summary))
    return 0 if summary["errors"] == 0 and set(summary["non_200"]) <= {"503"} else 1


if __name__ == "__main__":
    sys.exit(main())
