"""The written results: RESULTS.md and gpu.md (one function per section), results.json and the PNG plot.

Everything here renders figures already collected; `bench.targets` judges them, `bench.run` and `bench.gpu`
measure them. The markdown functions take the JSON form of the results, so a stored results.json or gpu.json
renders the same as a fresh run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

Results = Mapping[str, Any]


# -- RESULTS.md ------------------------------------------------------------------------------------------------
def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"
    return str(x)


def markdown(results: Results) -> str:
    """RESULTS.md, from the JSON form of the results (`bench.run`)."""
    lines = [
        *_header(results["meta"]),
        *_headline(results),
        *_load(results),
        *_where_the_time_goes(results),
        *_configurations(results),
        *_floor(results),
        *_batch_invariance(results),
        *_start_up_and_memory(results),
        *_answer_checks(results),
        *_notes(results),
        "",
    ]
    return "\n".join(lines)


def _header(meta: Mapping[str, Any]) -> list[str]:
    lines = ["# Benchmark results", ""]
    if meta.get("quick"):
        lines += ["> **QUICK RUN** (short points, one round): smoke figures, noisy; not for quoting.", ""]
    return [
        *lines,
        f"- When: {meta['started_utc']} (took {meta['elapsed_s']:.0f} s); git `{meta['git_commit']}`",
        f"- Machine: {meta['cpu_model']}, {meta['cpus']} CPUs available; load average at start {meta['loadavg']}",
        f"- Load: wrk -t{meta['wrk_threads']}, {meta['duration_s']:g} s per point "
        f"after {meta['warmup_s']:g} s warm-up, "
        f"{meta['rounds']} round(s), configurations in rotating alternation per connection level; "
        "figures are the median over rounds",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}",
    ]


_TARGETS_TABLE = ["| target | measured | threshold | result |", "|---|---|---|---|"]


def _target_row(t: Mapping[str, Any], *, bold: bool) -> str:
    value = "—" if t["value"] is None else f"{t['value']:.3g}{t['unit']}"
    note = f" — {t['note']}" if t["note"] else ""
    status = f"**{t['status']}**" if bold else t["status"]
    return f"| {t['name']} | {value} | {t['op']} {t['threshold']:g}{t['unit']} | {status}{note} |"


def _headline(results: Results) -> list[str]:
    """The headline service's targets, the HTTP floor in proportion, then the same ratios for the others."""
    lines = ["", "## Headline", "", *_TARGETS_TABLE]
    if not results["targets"]:
        lines.append("| (no service configuration measured) | — | — | N/A |")
    lines += [_target_row(t, bold=True) for t in results["targets"]]
    lines += _in_proportion(results)
    for name, targets in results.get("other_targets", {}).items():
        lines += ["", f"Same ratios for `{name}`:", "", *_TARGETS_TABLE]
        lines += [_target_row(t, bold=False) for t in targets]
    return lines


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


def _by_conns(by_conn: Mapping[Any, Mapping[str, Any]]) -> list[tuple[Any, Mapping[str, Any]]]:
    """A configuration's points by connection count (keys are ints in-process, strings after a JSON round trip)."""
    return sorted(by_conn.items(), key=lambda kv: int(kv[0]))


def _load(results: Results) -> list[str]:
    lines = [
        "",
        "## Load (HTTP `POST /predict`, one real S&P 500 window)",
        "",
        "| configuration | conns | req/s | p50 ms | p99 ms | failed req | server CPU ms/req | wrk CPU % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, by_conn in results["summary"].items():
        for conns, p in _by_conns(by_conn):
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
    return lines


def _where_the_time_goes(results: Results) -> list[str]:
    """The service's own /metrics over each measured point, against wrk's latency (single-worker services)."""
    inside_rows = [
        (name, conns, p, p["inside_server"])
        for name, by_conn in results["summary"].items()
        for conns, p in _by_conns(by_conn)
        if p.get("inside_server")
    ]
    if not inside_rows:
        return []
    lines = [
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
    return lines


def _configurations(results: Results) -> list[str]:
    """What each configuration runs, and what the service said about itself on /ready."""
    lines = ["", "Configurations:", ""]
    verification = results.get("verification", {})
    for c in results["configs"]:
        ready = (verification.get(c["name"]) or {}).get("ready") or {}
        says = ""
        if ready:
            says = f" — /ready says: {', '.join(f'{k} {v}' for k, v in ready.items() if k != 'status')}"
        lines.append(f"- `{c['name']}`: {c['description']}{says}")
    return lines


def _floor(results: Results) -> list[str]:
    floor = results.get("floor")
    if not floor:
        return []
    by_threads = floor.get("by_threads") or {str(floor["intra_op_threads"]): floor["points"]}
    lines = [
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
    return lines


def _batch_invariance(results: Results) -> list[str]:
    if not results.get("batch_invariance"):
        return []
    from bench.invariance import markdown as invariance_markdown

    return ["", *invariance_markdown(results["batch_invariance"])]


def _start_up_and_memory(results: Results) -> list[str]:
    lines = [
        "",
        "## Start-up and memory",
        "",
        "| configuration | cold start to ready, median s (runs) "
        "| peak RSS MB under max-conn load | VmHWM MB | PSS MB |",
        "|---|---|---:|---:|---:|",
    ]
    for c in results["configs"]:
        name = c["name"]
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
    return lines


def _answer_checks(results: Results) -> list[str]:
    lines = [
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
    return lines


def _notes(results: Results) -> list[str]:
    notes = results.get("notes", [])
    return ["", "## Notes", "", *(f"- {n}" for n in notes)] if notes else []


# -- gpu.md ----------------------------------------------------------------------------------------------------
def _fixed(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}" if abs(x) < 1e4 else f"{x:,.0f}"
    return str(x)


def gpu_markdown(r: Results) -> str:
    """gpu.md, from the JSON form of `bench.gpu`'s results."""
    lines = [
        *_gpu_kernel(r),
        *_gpu_cpu(r),
        *_gpu_parity(r),
        *_gpu_cold_shapes(r),
        *_gpu_placement(r),
        *(line for e in r["end_to_end"] for line in _gpu_end_to_end(e)),
        f"Total bench time {r['elapsed_s']:.0f} s.",
    ]
    return "\n".join(lines)


def _gpu_kernel(r: Results) -> list[str]:
    """The machine, then `Model.run` against plain `session.run` on the accelerated session, per batch size."""
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
    for n in [v["batch"] for v in k.values() if v["method"] == "model_run"]:
        a, b = k[f"model_run@{n}"], k[f"session_run@{n}"]
        lines.append(
            f"| {n} | {_fixed(a['p50_ms'])} | {_fixed(a['p99_ms'])} | {_fixed(a['windows_per_s'], 0)} "
            f"| {_fixed(b['p50_ms'])} | {_fixed(b['p99_ms'])} | {_fixed(b['windows_per_s'], 0)} |"
        )
    return lines


def _gpu_cpu(r: Results) -> list[str]:
    lines = [
        "",
        "**CPU provider on the same machine (ms)**",
        "",
        "| precision | threads | batch | p50 | p99 | windows/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for v in r["cpu"].values():
        lines.append(
            f"| {v['precision']} | {v['threads']} | {v['batch']} | {_fixed(v['p50_ms'])} | {_fixed(v['p99_ms'])} "
            f"| {_fixed(v['windows_per_s'], 0)} |"
        )
    return lines


def _gpu_parity(r: Results) -> list[str]:
    p, acc = r["parity"], r["provider"].upper()
    return [
        "",
        f"**Parity** {acc} FP32 vs CPU FP32 on {p['windows']} windows: max |Δp| = {p['max_abs_dp']:.2e} "
        f"(mean {p['mean_abs_dp']:.2e}), argmax agreement {p['argmax_agreement'] * 100:.2f} % "
        f"({p['argmax_disagreements']} differ); {acc} batch-1 vs batch-512 max |Δp| = "
        f"{p['batch_invariance_max_abs_dp']:.2e}. CPU classes sell/hold/buy: {p['class_counts_cpu']}.",
    ]


def _gpu_cold_shapes(r: Results) -> list[str]:
    lines = [
        "",
        "**First call at a batch size the warm-up did not run** (fresh model, warmed at 1 and 8)",
        "",
        "| batch | first call ms | steady p50 ms |",
        "| ---: | ---: | ---: |",
    ]
    for n, v in r["cold_shapes"]["shapes"].items():
        lines.append(f"| {n} | {_fixed(v['first_ms'])} | {_fixed(v['steady_p50_ms'])} |")
    return lines


def _gpu_placement(r: Results) -> list[str]:
    return [
        "",
        "**Node placement** (onnxruntime's verbose log):",
        "",
        "```",
        *(r["placement"].get("lines", [])[:30] or ["(nothing reported)"]),
        "```",
        "",
    ]


def _ms(histogram: Mapping[str, Any] | None) -> float | None:
    """A seconds histogram's mean in ms (None when empty)."""
    return None if not histogram or histogram["mean"] is None else float(histogram["mean"]) * 1e3


def _gpu_end_to_end(e: Mapping[str, Any]) -> list[str]:
    """One server: its start-up and first answer, load per level, and the model runs it made per level."""
    lines = [f"**End to end: {e['name']}** (`python -m runtime {' '.join(e['argv_tail'])}`)", ""]
    if "error" in e:
        return [*lines, f"failed: {e['error']}", "", "```", e.get("log_tail", ""), "```", ""]
    ready = e["ready"]
    lines += [
        f"cold start to /ready {e['cold_start_to_ready_s']:.2f} s; /ready: provider={ready.get('provider')}, "
        f"precision={ready.get('precision')}, intra_op_threads={ready.get('intra_op_threads')}; first /predict "
        f"vs in-process CPU FP32 max |Δp| = {e['first_predict_vs_cpu_fp32_max_abs_dp']:.2e}; RSS "
        f"{e['rss_mb']:.0f} MB",
        "",
        "| connections | req/s | p50 ms | p99 ms | statuses | client CPU | server CPU |",
        "| ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for c, v in e["load"].items():
        lines.append(
            f"| {c} | {_fixed(v['req_per_s'], 0)} | {_fixed(v['p50_ms'])} | {_fixed(v['p99_ms'])} | {v['statuses']} "
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
        lines.append(
            f"| {c} | {b['count']} | {_fixed(b['mean'], 1)} | {_fixed(_ms(comp))} | {_fixed(_ms(q))} "
            f"| {', '.join(f'{k}: {n}' for k, n in b['buckets'].items())} |"
        )
    lines.append("")
    return lines


# -- results.json ----------------------------------------------------------------------------------------------


def write_json(path: Path, results: Results) -> None:
    path.write_text(json.dumps(results, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
