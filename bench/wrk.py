"""Drive `wrk` and turn its output into numbers.

Two sources are parsed: the ``BENCHJSON`` line that ``bench/predict.lua``'s ``done()`` prints (exact
percentiles in microseconds, preferred) and wrk's ``--latency`` text report (two significant digits, the
fallback and a cross-check). Both are pure functions of the text so that tests can feed them fixtures.
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LUA_SCRIPT = Path(__file__).with_name("predict.lua")
JSON_MARKER = "BENCHJSON "

_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_DURATION_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed something this parser does not understand."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run. Latencies in milliseconds; ``errors`` counts every failed request of any kind."""

    connections: int
    threads: int
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    non2xx: int
    socket_errors: dict[str, int] = field(default_factory=dict)
    source: str = "json"
    #: CPU seconds wrk itself used (user + system); it shares the 2 cores with the server.
    wrk_cpu_s: float | None = None

    @property
    def errors(self) -> int:
        return self.non2xx + sum(self.socket_errors.values())

    @property
    def ok(self) -> bool:
        """A run counts as throughput only if every request got a 2xx and no socket failed."""
        return self.errors == 0 and self.requests > 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["errors"] = self.errors
        d["ok"] = self.ok
        return d


def parse_time_ms(token: str) -> float:
    """``'1.23ms'`` → 1.23, ``'850.00us'`` → 0.85, ``'2.01s'`` → 2010.0."""
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", token.strip())
    if not m:
        raise WrkError(f"unrecognised wrk time {token!r}; expected a number followed by one of us, ms, s, m, h")
    return float(m.group(1)) * _TIME_UNITS_MS[m.group(2)]


def parse_duration_s(token: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", token.strip())
    if not m:
        raise WrkError(f"unrecognised wrk duration {token!r}")
    return float(m.group(1)) * _DURATION_UNITS_S[m.group(2)]


def parse_json_line(text: str, *, connections: int, threads: int) -> WrkResult | None:
    """The ``BENCHJSON {...}`` line printed by predict.lua's ``done()``, or None when absent."""
    for line in text.splitlines():
        if line.startswith(JSON_MARKER):
            d = json.loads(line[len(JSON_MARKER) :])
            duration_s = d["duration_us"] / 1e6
            requests = int(d["requests"])
            return WrkResult(
                connections=connections,
                threads=threads,
                requests=requests,
                duration_s=duration_s,
                rps=requests / duration_s if duration_s > 0 else 0.0,
                p50_ms=d["p50_us"] / 1e3,
                p75_ms=d["p75_us"] / 1e3,
                p90_ms=d["p90_us"] / 1e3,
                p99_ms=d["p99_us"] / 1e3,
                mean_ms=d["lat_mean_us"] / 1e3,
                max_ms=d["lat_max_us"] / 1e3,
                non2xx=int(d["status_errors"]),
                socket_errors={k: int(d[f"{k}_errors"]) for k in ("connect", "read", "write", "timeout")},
                source="json",
            )
    return None


def parse_text(text: str) -> WrkResult:
    """wrk's human report (run with ``--latency``) → numbers."""
    m = re.search(r"(\d+) threads and (\d+) connections", text)
    if not m:
        raise WrkError("wrk output has no 'N threads and M connections' line:\n" + text[-2000:])
    threads, connections = int(m.group(1)), int(m.group(2))

    pct: dict[str, float] = {}
    for p, tok in re.findall(r"^\s+(50|75|90|99)(?:\.\d+)?%\s+(\S+)\s*$", text, flags=re.M):
        pct[p] = parse_time_ms(tok)
    if set(pct) != {"50", "75", "90", "99"}:
        raise WrkError("wrk output has no complete 'Latency Distribution' (was --latency given?)")

    lat = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", text, flags=re.M)
    mean_ms = parse_time_ms(lat.group(1)) if lat else float("nan")
    max_ms = parse_time_ms(lat.group(3)) if lat else float("nan")

    m = re.search(r"(\d+) requests in ([0-9.]+\w+),", text)
    if not m:
        raise WrkError("wrk output has no 'N requests in T' line")
    requests, duration_s = int(m.group(1)), parse_duration_s(m.group(2))

    m = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    rps = float(m.group(1)) if m else (requests / duration_s if duration_s else 0.0)

    socket_errors = {k: 0 for k in ("connect", "read", "write", "timeout")}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    non2xx = int(m.group(1)) if m else 0

    return WrkResult(
        connections=connections,
        threads=threads,
        requests=requests,
        duration_s=duration_s,
        rps=rps,
        p50_ms=pct["50"],
        p75_ms=pct["75"],
        p90_ms=pct["90"],
        p99_ms=pct["99"],
        mean_ms=mean_ms,
        max_ms=max_ms,
        non2xx=non2xx,
        socket_errors=socket_errors,
        source="text",
    )


def parse_output(text: str, *, connections: int, threads: int) -> WrkResult:
    """Prefer the exact JSON line; fall back to the text report.

    wrk's ``summary.errors.status`` counts only statuses > 399, while the text's "Non-2xx or 3xx" line also
    counts 3xx: take the larger so that no redirect passes as a success.
    """
    from_json = parse_json_line(text, connections=connections, threads=threads)
    if from_json is None:
        return parse_text(text)
    try:
        from_text = parse_text(text)
    except WrkError:
        return from_json
    if from_text.non2xx > from_json.non2xx:
        from_json = WrkResult(**{**asdict(from_json), "non2xx": from_text.non2xx})
    return from_json


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkError("wrk is not installed: run `apt-get install -y wrk` (Debian/Ubuntu) and retry")
    return path


def build_command(
    url: str,
    *,
    connections: int,
    duration_s: float,
    threads: int,
    body_file: Path,
    api_key: str,
    timeout_s: float,
) -> list[str]:
    threads = max(1, min(threads, connections))  # wrk refuses fewer connections than threads
    return [
        wrk_binary(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        str(body_file),
        api_key,
    ]


def run(
    url: str,
    *,
    connections: int,
    duration_s: float,
    body_file: Path,
    api_key: str,
    threads: int = 1,
    timeout_s: float = 10.0,
) -> WrkResult:
    """Run wrk once and parse it; the CPU wrk used comes from the children's rusage around the run."""
    cmd = build_command(
        url,
        connections=connections,
        duration_s=duration_s,
        threads=threads,
        body_file=body_file,
        api_key=api_key,
        timeout_s=timeout_s,
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + timeout_s + 30)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise WrkError(f"wrk exited {proc.returncode} after {wall:.1f}s: {proc.stderr.strip()[-1000:]}")
    result = parse_output(proc.stdout, connections=connections, threads=max(1, min(threads, connections)))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return WrkResult(**{**asdict(result), "wrk_cpu_s": round(cpu, 3)})
