"""Targets, headline ratios and the written results (markdown table, JSON, PNG plot).

Everything here is a pure function of the collected figures, so tests can check the PASS/FAIL logic on
hand-made numbers.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
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


def _in_proportion(results: Mapping[str, Any]) -> list[str]:
    """One sentence putting the one-connection p50 against the HTTP floor and the model floor, when both ran."""
    conns = min(results["meta"].get("connections") or [1])

    def at(config: str) -> Mapping[str, Any] | None:  # keys are ints in-process, strings after a JSON round trip
        return {int(c): p for c, p in results["summary"].get(config, {}).items()}.get(conns)

    http, int8 = at("http"), at("int8")
    model = (results.get("floor") or {}).get("points", {}).get("int8@1")
    if not (http and int8 and model and http["ok"] and int8["ok"]):
        return []
    work = int8["p50_ms"] - http["p50_ms"]
    return [
        "",
        f"In proportion, at {conns} connection(s): the HTTP floor (`http`: the same uvicorn stack, no validation, "
        f"no model) answers in p50 {_f(http['p50_ms'])} ms, the INT8 service in {_f(int8['p50_ms'])} ms; the "
        f"difference, {_f(work)} ms, is {_f(work / model['p50_ms'], 2)}x the bare model's {_f(model['p50_ms'])} ms.",
    ]


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


# -- writing -------------------------------------------------------------------------------------------------
def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"
    return str(x)


def markdown(results: Mapping[str, Any]) -> str:
    meta = results["meta"]
    lines = ["# Benchmark results", ""]
    if meta.get("quick"):
        lines += ["> **QUICK RUN** (short points, one round): smoke figures, noisy; not for quoting.", ""]
    lines += [
        f"- When: {meta['started_utc']} (took {meta['elapsed_s']:.0f} s); git `{meta['git_commit']}`",
        f"- Machine: {meta['cpu_model']}, {meta['cpus']} CPUs available; load average at start {meta['loadavg']}",
        f"- Load: wrk -t{meta['wrk_threads']}, {meta['duration_s']:g} s per point "
        f"after {meta['warmup_s']:g} s warm-up, "
        f"{meta['rounds']} round(s), configurations in rotating alternation per connection level; "
        "figures are the median over rounds",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}",
        "",
        "## Headline",
        "",
        "| target | measured | threshold | result |",
        "|---|---|---|---|",
    ]
    if not results["targets"]:
        lines.append("| (no service configuration measured) | — | — | N/A |")
    for t in results["targets"]:
        value = "—" if t["value"] is None else f"{t['value']:.3g}{t['unit']}"
        note = f" — {t['note']}" if t["note"] else ""
        lines.append(f"| {t['name']} | {value} | {t['op']} {t['threshold']:g}{t['unit']} | **{t['status']}**{note} |")
    lines += _in_proportion(results)
    for name, targets in results.get("other_targets", {}).items():
        lines += [
            "",
            f"Same ratios for `{name}`:",
            "",
            "| target | measured | threshold | result |",
            "|---|---|---|---|",
        ]
        for t in targets:
            value = "—" if t["value"] is None else f"{t['value']:.3g}{t['unit']}"
            note = f" — {t['note']}" if t["note"] else ""
            lines.append(f"| {t['name']} | {value} | {t['op']} {t['threshold']:g}{t['unit']} | {t['status']}{note} |")

    lines += [
        "",
        "## Load (HTTP `POST /predict`, one real S&P 500 window)",
        "",
        "| configuration | conns | req/s | p50 ms | p99 ms | failed req | server CPU ms/req | wrk CPU % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    configs = {c["name"]: c for c in results["configs"]}
    for name, by_conn in results["summary"].items():
        for conns, p in sorted(by_conn.items(), key=lambda kv: int(kv[0])):
            flag = "" if p["ok"] else " ⚠ errors: not throughput"
            lines.append(
                f"| {name} | {conns} | {_f(p['rps'])}{flag} | {_f(p['p50_ms'])} | {_f(p['p99_ms'])} "
                f"| {p['errors']} "
                f"| {_f(p['server_cpu_ms_per_req'])} | {_f(p['wrk_cpu_pct'], 2)} |"
            )
    peaks = []
    for name, by_conn in results["summary"].items():
        clean = [(int(c), p) for c, p in by_conn.items() if p["ok"]]
        if clean:
            conns, best = max(clean, key=lambda cp: cp[1]["rps"])
            peaks.append(f"`{name}` {_f(best['rps'])} ({conns} conns)")
    if peaks:
        lines += ["", "Peak req/s (clean points only): " + ", ".join(peaks) + "."]
    inside_rows = [
        (name, conns, p, p["inside_server"])
        for name, by_conn in results["summary"].items()
        for conns, p in sorted(by_conn.items(), key=lambda kv: int(kv[0]))
        if p.get("inside_server")
    ]
    if inside_rows:
        lines += [
            "",
            "### Where the time goes (the service's own /metrics over each measured point, means)",
            "",
            "`in server` runs from the ASGI call to the end of the response; `outside` is wrk's mean latency minus "
            "it (loopback, kernel, HTTP parsing, wrk). `model` is onnxruntime's run time (per run, and per request "
            "when runs are shared); `rest in server` is validation, risk scoring, JSON and queueing. The server's "
            "means also count requests it finished after wrk stopped, so under load `outside` is approximate.",
            "",
            "| configuration | conns | wrk mean ms | in server ms | outside ms | model ms/run | windows/run "
            "| model ms/request | rest in server ms/request |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, conns, p, ins in inside_rows:
            server_ms, per_req = ins.get("server_ms"), ins.get("model_ms_per_request")
            outside = None if p.get("mean_ms") is None or server_ms is None else p["mean_ms"] - server_ms
            rest = None if server_ms is None or per_req is None else server_ms - per_req
            lines.append(
                f"| {name} | {conns} | {_f(p.get('mean_ms'))} | {_f(server_ms)} | {_f(outside)} "
                f"| {_f(ins.get('model_ms_per_run'))} | {_f(ins.get('windows_per_run'), 2)} | {_f(per_req)} "
                f"| {_f(rest)} |"
            )
    lines += ["", "Configurations:", ""]
    verification = results.get("verification", {})
    for name, c in configs.items():
        ready = (verification.get(name) or {}).get("ready") or {}
        says = ""
        if ready:
            says = f" — /ready says: {', '.join(f'{k} {v}' for k, v in ready.items() if k != 'status')}"
        lines.append(f"- `{name}`: {c['description']}{says}")

    floor = results.get("floor")
    if floor:
        by_threads = floor.get("by_threads") or {str(floor["intra_op_threads"]): floor["points"]}
        lines += [
            "",
            "## Floor: bare onnxruntime `session.run` in-process, same session options as the service",
            "",
            "| precision | intra-op threads | batch | p50 ms | p99 ms | p50 µs per window | runs |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for threads, points in by_threads.items():
            for p in points.values():
                lines.append(
                    f"| {p['precision']} | {threads} | {p['batch']} | {_f(p['p50_ms'])} | {_f(p['p99_ms'])} "
                    f"| {_f(1000 * p['p50_ms'] / p['batch'])} | {p['runs']} |"
                )
        lines += [
            "",
            f"Each service configuration is compared with the floor at its own intra-op thread count; the default "
            f"service uses {floor['intra_op_threads']}.",
        ]
        gap = floor.get("idle_gap")
        if gap:
            lines += [
                "",
                f"For context (not the floor the targets use): the same INT8 batch-1 run after sleeping "
                f"{gap['gap_us']:.0f} µs before each call, as a server at one connection idles between requests, "
                f"takes p50 {_f(gap['p50_ms'])} ms (p99 {_f(gap['p99_ms'])} ms, {gap['runs']} runs). The difference "
                "from the back-to-back floor is the cost of waking an idle CPU, which every one-connection "
                "server pays and a back-to-back loop never does.",
            ]

    if results.get("batch_invariance"):
        from bench.invariance import markdown as invariance_markdown

        lines += ["", *invariance_markdown(results["batch_invariance"])]

    lines += [
        "",
        "## Start-up and memory",
        "",
        "| configuration | cold start to ready, median s (runs) "
        "| peak RSS MB under max-conn load | VmHWM MB | PSS MB |",
        "|---|---|---:|---:|---:|",
    ]
    for name in configs:
        cs = results.get("cold_start", {}).get(name)
        mem = results.get("memory", {}).get(name, {})
        cs_txt = (
            "—"
            if not cs or cs.get("median_s") is None
            else f"{cs['median_s']:.3f} ({', '.join(f'{x:.2f}' for x in cs['runs_s'])})"
        )
        lines.append(
            f"| {name} | {cs_txt} | {_f(mem.get('peak_rss_mb'))} | {_f(mem.get('hwm_mb'))} | {_f(mem.get('pss_mb'))} |"
        )

    lines += [
        "",
        "## Answer checks (before and after load)",
        "",
        "| configuration | verified | max abs Δp vs bare ORT | detail |",
        "|---|---|---:|---|",
    ]
    for name, v in results.get("verification", {}).items():
        lines.append(
            f"| {name} | {'yes' if v['ok'] else '**NO**'} | {_f(v.get('max_abs_dp'))} | {v.get('detail', '')} |"
        )
    notes = results.get("notes", [])
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    lines.append("")
    return "\n".join(lines)


def write_json(path: Path, results: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(results, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def plot(
    path: Path,
    summary: Mapping[str, Mapping[Any, Mapping[str, Any]]],
    floor: Mapping[str, Any] | None,
    title: str,
) -> None:
    """p50 latency against requests/s, one line per configuration, one marker per connection level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for name, by_conn in summary.items():
        pts = sorted(((int(c), p) for c, p in by_conn.items()), key=lambda cp: cp[0])
        xs = [p["rps"] for _, p in pts]
        ys = [p["p50_ms"] for _, p in pts]
        (line,) = ax.plot(xs, ys, marker="o", label=name)
        for (conns, p), x, y in zip(pts, xs, ys, strict=True):
            label = f"{conns}c" + ("" if p["ok"] else " ERR")
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8, color=line.get_color())
            if not p["ok"]:
                ax.plot([x], [y], marker="x", color="red", markersize=10)
    for key, style in (("int8@1", ":"), ("fp32@1", "--")):
        p = (floor or {}).get("points", {}).get(key)
        if p:
            ax.axhline(
                p["p50_ms"],
                linestyle=style,
                color="grey",
                linewidth=1,
                label=f"bare ORT {key.split('@')[0].upper()} batch 1 (floor)",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    ax.set_xlabel("requests/s (log)")
    ax.set_ylabel("p50 latency, ms (log)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def headline_lines(targets: Sequence[Target]) -> list[str]:
    return [t.line() for t in targets]
