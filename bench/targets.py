"""Targets and the median-of-rounds summary they are judged on.

Everything here is a pure function of the collected figures, so tests can check the PASS/FAIL logic on
hand-made numbers.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Targets of issue 4 (ratios measured in one run, servers in alternation) plus the service's budgets.
P50_VS_SEED_MAX = 0.30
P50_VS_FLOOR_MAX = 2.0
RPS_VS_SEED_MIN = 5.0
INT8_SPEEDUP_MIN = 1.8
COLD_START_MAX_S = 1.0
RSS_MAX_MB = 150.0


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None  # None: not measured
    op: str  # "<=" or ">="
    threshold: float
    unit: str = "x"
    #: Why the value is missing or invalid (errors under load, a server that never verified, …).
    note: str = ""

    @property
    def status(self) -> str:
        if self.value is None or math.isnan(self.value):
            return "N/A"
        if self.note.startswith("INVALID"):
            return "FAIL"
        ok = self.value <= self.threshold if self.op == "<=" else self.value >= self.threshold
        return "PASS" if ok else "FAIL"

    def line(self) -> str:
        value = "—" if self.value is None else f"{self.value:.3g}{self.unit}"
        note = f"  ({self.note})" if self.note else ""
        return f"[{self.status:4}] {self.name}: {value} (target {self.op} {self.threshold:g}{self.unit}){note}"

    def to_dict(self) -> dict[str, Any]:
        """Its entry in results.json: the fields, a NaN value as null, and the status."""
        return {
            "name": self.name,
            "value": None if self.value is None or math.isnan(self.value) else self.value,
            "op": self.op,
            "threshold": self.threshold,
            "unit": self.unit,
            "note": self.note,
            "status": self.status,
        }


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def summarise_rounds(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    """Per configuration and connection count: the median of the rounds, and whether every round was clean.

    A round with any non-2xx response or socket error makes the point invalid: its figures are kept for the
    record but it is not reported as throughput.
    """
    grouped: dict[str, dict[int, list[Mapping[str, Any]]]] = {}
    for r in rows:
        grouped.setdefault(r["config"], {}).setdefault(int(r["connections"]), []).append(r)
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for config, by_conn in grouped.items():
        out[config] = {}
        for conns, rs in sorted(by_conn.items()):
            errors = sum(int(r["errors"]) for r in rs)
            cpu_per_req = [
                r["server_cpu_s"] / r["requests"] * 1e3
                for r in rs
                if r.get("server_cpu_s") is not None and r["requests"]
            ]
            out[config][conns] = {
                "rounds": len(rs),
                "rps": statistics.median(float(r["rps"]) for r in rs),
                "p50_ms": statistics.median(float(r["p50_ms"]) for r in rs),
                "p99_ms": statistics.median(float(r["p99_ms"]) for r in rs),
                "requests": sum(int(r["requests"]) for r in rs),
                "errors": errors,
                "non2xx": sum(int(r["non2xx"]) for r in rs),
                "ok": errors == 0 and all(int(r["requests"]) > 0 for r in rs),
                "server_cpu_ms_per_req": statistics.median(cpu_per_req) if cpu_per_req else None,
                "wrk_cpu_pct": statistics.median(
                    100 * r["wrk_cpu_s"] / r["duration_s"] for r in rs if r.get("wrk_cpu_s") is not None
                )
                if any(r.get("wrk_cpu_s") is not None for r in rs)
                else None,
                "mean_ms": statistics.median(means) if (means := _finite(r.get("mean_ms") for r in rs)) else None,
                "inside_server": _median_fields([r["inside_server"] for r in rs if r.get("inside_server")]),
            }
    return out


def _finite(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _median_fields(points: list[Mapping[str, Any]]) -> dict[str, float] | None:
    """Field-wise median over rounds of the inside-the-server means (None where no round has the field)."""
    if not points:
        return None
    keys = {k for p in points for k in p}
    return {
        k: statistics.median(vals)
        for k in sorted(keys)
        if (vals := [float(p[k]) for p in points if p.get(k) is not None])
    }


def _point(
    summary: Mapping[str, Mapping[int, Mapping[str, Any]]], config: str, conns: int, key: str
) -> tuple[float | None, str]:
    p = summary.get(config, {}).get(conns)
    if p is None:
        return None, f"{config} not measured at {conns} connection(s)"
    if not p["ok"]:
        what = f"{p['errors']} failed request(s)" if p["errors"] else "no completed request"
        return float(p[key]), f"INVALID: {config} had {what} at {conns} connection(s)"
    return float(p[key]), ""


def evaluate(
    summary: Mapping[str, Mapping[int, Mapping[str, Any]]],
    *,
    service: str,
    seed: str,
    floor: Mapping[str, Any] | None,
    cold_start_s: float | None,
    rss_mb: float | None,
    precision: str = "int8",
    low_conns: int = 1,
    high_conns: int = 64,
) -> list[Target]:
    """The headline ratios of one service configuration against the seed and the floor."""
    floor_points = (floor or {}).get("points", {})

    def floor_p50(key: str) -> float | None:
        p = floor_points.get(key)
        return float(p["p50_ms"]) if p else None

    s_p50, s_note = _point(summary, service, low_conns, "p50_ms")
    seed_p50, seed_note = _point(summary, seed, low_conns, "p50_ms")
    s_rps, s_rps_note = _point(summary, service, high_conns, "rps")
    seed_rps, seed_rps_note = _point(summary, seed, high_conns, "rps")
    floor_key = f"{precision}@1"

    return [
        Target(
            f"{service} p50 @{low_conns} conn / seed p50",
            ratio(s_p50, seed_p50),
            "<=",
            P50_VS_SEED_MAX,
            note=s_note or seed_note,
        ),
        Target(
            f"{service} p50 @{low_conns} conn / bare ORT {precision.upper()} p50 (floor)",
            ratio(s_p50, floor_p50(floor_key)),
            "<=",
            P50_VS_FLOOR_MAX,
            note=s_note or ("" if floor_p50(floor_key) else "floor not measured"),
        ),
        Target(
            f"{service} req/s @{high_conns} conn / seed req/s",
            ratio(s_rps, seed_rps),
            ">=",
            RPS_VS_SEED_MIN,
            note=s_rps_note or seed_rps_note,
        ),
        Target(
            "bare ORT INT8 speedup over FP32 @batch 1 (p50)",
            ratio(floor_p50("fp32@1"), floor_p50("int8@1")),
            ">=",
            INT8_SPEEDUP_MIN,
        ),
        Target(f"{service} cold start to /ready (median)", cold_start_s, "<=", COLD_START_MAX_S, unit=" s"),
        Target(f"{service} peak RSS under {high_conns}-conn load", rss_mb, "<=", RSS_MAX_MB, unit=" MB"),
    ]


def headline_lines(targets: Sequence[Target]) -> list[str]:
    return [t.line() for t in targets]
