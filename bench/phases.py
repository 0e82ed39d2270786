"""The phases of one benchmark run, in the order `bench.run` calls them.

Each takes what the earlier ones produced and returns what it measured; only `servers_under_load` keeps servers
running, and it stops them all on the way out.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import shutil
import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import floor as floor_mod
from bench import invariance, payload, plot, report
from bench.config import SEED, Config, config_threads, service_threads, spec_for
from bench.load import Memory, load_rounds
from bench.servers import Server, free_port, running
from bench.targets import Target, evaluate, headline_lines
from bench.verify import ready_info, verify

log = logging.getLogger("bench")

#: One answer check per configuration (`bench.verify.verify`), "ready" added for services.
Verification = dict[str, dict[str, Any]]
#: Per configuration and connection count, the median of the rounds (`bench.targets.summarise_rounds`).
Summary = dict[str, dict[int, dict[str, Any]]]


@dataclass(frozen=True)
class Request:
    """The one request every server is sent, as bytes, as wrk's body file, and as the model's window."""

    body: bytes
    body_file: Path
    window: np.ndarray[Any, Any]  # (60, 5) float32


def prepare_request() -> Request:
    """The last 60 real S&P 500 candles, validated by the service's own schema."""
    candles = payload.sp500_candles()
    body = payload.encode(payload.request_body(candles))
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    atexit.register(shutil.rmtree, tmp, True)
    body_file = tmp / "body.json"
    body_file.write_bytes(body)
    return Request(body, body_file, np.asarray(payload.window(candles), dtype=np.float32))


# -- 1. with no server running ---------------------------------------------------------------------------------
def measure_floor(
    model_dir: Path, window: np.ndarray[Any, Any], configs: list[Config], seconds: float
) -> dict[str, Any]:
    """Bare onnxruntime at the default service's thread count (batch 1, 8, 64), and at batch 1 for every other
    thread count a measured configuration uses, so each is compared with a floor of its own threading."""
    log.info("floor: bare onnxruntime, %.1f s per point", seconds)
    default = service_threads()
    floor = floor_mod.measure(model_dir, window, intra_op_threads=default, seconds=seconds)
    floor["by_threads"] = {str(default): floor["points"]}
    others = sorted({config_threads(c) for c in configs if c.kind == "service"} - {default})
    for t in others:
        extra = floor_mod.measure(model_dir, window, intra_op_threads=t, seconds=seconds, batch_sizes=(1,))
        floor["by_threads"][str(t)] = extra["points"]
    for t, points in floor["by_threads"].items():
        for key, p in points.items():
            log.info(
                "floor %-8s %s thread(s): p50 %.3f ms  p99 %.3f ms  (%d runs)",
                key,
                t,
                p["p50_ms"],
                p["p99_ms"],
                p["runs"],
            )
    return floor


def measure_invariance(model_dir: Path) -> dict[str, Any]:
    """Real windows alone against the same windows in batches (`bench.invariance`)."""
    batching = invariance.measure(model_dir, invariance.default_markets())
    worst = max(batching["points"], key=lambda p: p["max_abs_dp"])
    log.info(
        "batched vs alone on %s market windows: default exact: %s; opt-out max |Δp| %.2e (%s %s, batch %d), "
        "bound %g: %s",
        sum(batching["windows"].values()),
        batching["invariant_exact"],
        worst["max_abs_dp"],
        worst["precision"],
        worst["market"],
        worst["batch"],
        batching["atol"],
        "within" if batching["within_atol"] else "EXCEEDED",
    )
    return batching


# -- 2. cold start ---------------------------------------------------------------------------------------------
def cold_starts(configs: list[Config], args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """Spawn to first 200 on the ready path, each configuration ``--cold-start-runs`` times, interleaved."""
    runs: dict[str, list[float]] = {c.name: [] for c in configs}
    errors: dict[str, str] = {}
    for i in range(args.cold_start_runs):
        for c in configs:
            if c.name in errors:
                continue
            port = free_port()
            server = Server(spec_for(c, port, args), port, log_dir)
            with running([server]):
                server.start()
                try:
                    runs[c.name].append(server.wait_ready(timeout_s=120))
                except (RuntimeError, TimeoutError) as e:
                    errors[c.name] = str(e)
                    log.error("cold start of %s failed: %s", c.name, e)
            log.info(
                "cold start %s #%d: %s",
                c.name,
                i + 1,
                f"{runs[c.name][-1]:.3f} s" if runs[c.name] else "failed",
            )
    return {
        name: {
            "runs_s": [round(x, 4) for x in xs],
            "median_s": statistics.median(xs) if xs else None,
            "error": errors.get(name),
        }
        for name, xs in runs.items()
    }


# -- 3. servers under load -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Served:
    """What the servers phase found."""

    verification: Verification
    rows: list[dict[str, Any]]
    memory: Memory
    #: Configurations whose /ready thread count differs from the one their floor was measured with.
    notes: list[str]


def servers_under_load(
    configs: list[Config], args: argparse.Namespace, log_dir: Path, request: Request, expected: dict[str, Any]
) -> Served:
    """Every configuration started at once on its own port, verified, loaded in alternation, verified again."""
    all_servers = [Server(spec_for(c, p := free_port(), args), p, log_dir) for c in configs]
    with running(all_servers):
        for s in all_servers:
            s.start()
        servers, verification = verify_started(all_servers, request.body, expected, args.api_key)
        notes = thread_notes(configs, verification)
        rows, memory = load_rounds(servers, configs, args, request.body_file)
        verification = verify_after_load(servers, request.body, expected, args.api_key, verification)
    return Served(verification, rows, memory, notes)


def verify_started(
    all_servers: list[Server], body: bytes, expected: dict[str, Any], api_key: str
) -> tuple[dict[str, Server], Verification]:
    """Wait for each server and check its answer; only those that answer right are measured."""
    servers: dict[str, Server] = {}
    verification: Verification = {}
    for s in all_servers:
        try:
            s.wait_ready(timeout_s=120)
        except (RuntimeError, TimeoutError) as e:
            verification[s.spec.name] = {"ok": False, "detail": f"never ready: {str(e).splitlines()[0]}"}
            log.error("%s", e)
            continue
        v = verify(s, body, expected, api_key)
        if s.spec.kind == "service":
            v["ready"] = ready_info(s)
        verification[s.spec.name] = v
        if v["ok"]:
            servers[s.spec.name] = s
            log.info("verified %s: %s (max |Δp| vs bare ORT %s)", s.spec.name, v["detail"], v.get("max_abs_dp"))
        else:
            log.error("%s answered wrongly, it is NOT measured: %s", s.spec.name, v["detail"])
    return servers, verification


def thread_notes(configs: list[Config], verification: Verification) -> list[str]:
    notes = []
    for c in configs:
        ready = (verification.get(c.name) or {}).get("ready") or {}
        if "intra_op_threads" in ready and int(ready["intra_op_threads"]) != config_threads(c):
            notes.append(
                f"`{c.name}` reports {ready['intra_op_threads']} intra-op thread(s) on /ready but its floor "
                f"was measured with {config_threads(c)}"
            )
    return notes


def verify_after_load(
    servers: dict[str, Server], body: bytes, expected: dict[str, Any], api_key: str, verification: Verification
) -> Verification:
    """The checks again once each server is idle: a server that went wrong under load fails its check."""
    out = dict(verification)
    for name, s in servers.items():
        s.wait_idle()
        after = verify(s, body, expected, api_key)
        if not after["ok"]:
            out[name] = {**after, "ok": False, "detail": "after load: " + after["detail"]}
            log.error("%s answered wrongly after load: %s", name, after["detail"])
    return out


# -- 4. summary, notes and targets -----------------------------------------------------------------------------
def run_notes(rows: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    """What a reader must know to weigh the figures: idle servers' CPU, the machine's load, wrk's share."""
    notes = []
    idle = [r["idle_servers_cpu_s"] / r["duration_s"] for r in rows if r["duration_s"]]
    if idle and max(idle) > 0.05:
        notes.append(f"idle servers used up to {100 * max(idle):.0f}% of a CPU while another was measured")
    load_start = float(meta["loadavg"].split()[0])
    if load_start > 0.5:
        notes.append(
            f"the machine was not quiet: 1-minute load average {load_start:.2f} at the start (other work was "
            "running); absolute figures are noisy, ratios less so since configurations alternate"
        )
    notes.append(
        f"wrk runs on the same {meta['cpus']} CPUs as the server under test (its CPU share is in the table): absolute "
        "figures are a floor on what the server alone would do; the ratios compare like with like."
    )
    notes.append(
        "Latency is wrk's, from send to last byte on loopback, including HTTP parsing, validation, "
        "inference and JSON encoding."
    )
    return notes


@dataclass(frozen=True)
class Verdict:
    """The targets of the headline service configuration, and the same ratios for every other one."""

    headline_name: str | None  # "int8" when measured, else the first service; None without one
    headline: list[Target]
    others: dict[str, list[Target]]


def evaluate_targets(
    summary: Summary,
    configs: list[Config],
    floor: dict[str, Any],
    cold: dict[str, Any],
    memory: Memory,
    connections: list[int],
) -> Verdict:
    """Each service against the seed and against the floor measured at its own thread count."""
    services = [c for c in configs if c.kind == "service"]
    top, low = max(connections), min(connections)

    def targets_for(c: Config) -> list[Target]:
        return evaluate(
            summary,
            service=c.name,
            seed=SEED,
            floor={"points": floor["by_threads"].get(str(config_threads(c)), floor["points"])},
            cold_start_s=cold.get(c.name, {}).get("median_s"),
            rss_mb=memory.get(c.name, {}).get("peak_rss_mb"),
            precision=c.precision,
            low_conns=low,
            high_conns=top,
        )

    names = [c.name for c in services]
    headline_name = "int8" if "int8" in names else (names[0] if names else None)
    return Verdict(
        headline_name=headline_name,
        headline=next((targets_for(c) for c in services if c.name == headline_name), []),
        others={c.name: targets_for(c) for c in services if c.name != headline_name},
    )


# -- 5. written results ----------------------------------------------------------------------------------------
def results_json(
    *,
    meta: dict[str, Any],
    configs: list[Config],
    floor: dict[str, Any],
    batching: dict[str, Any],
    cold: dict[str, Any],
    served: Served,
    summary: Summary,
    verdict: Verdict,
    notes: list[str],
) -> dict[str, Any]:
    """results.json, in its key order."""
    return {
        "meta": meta,
        "configs": [asdict(c) for c in configs],
        "floor": floor,
        "batch_invariance": batching,
        "cold_start": cold,
        "verification": served.verification,
        "rows": served.rows,
        "summary": summary,
        "memory": served.memory,
        "targets": [t.to_dict() for t in verdict.headline],
        "other_targets": {n: [t.to_dict() for t in ts] for n, ts in verdict.others.items()},
        "notes": notes,
    }


def write_results(out_dir: Path, results: dict[str, Any], args: argparse.Namespace) -> None:
    """results.json, RESULTS.md (rendered from the JSON form) and latency_vs_throughput.png."""
    report.write_json(out_dir / "results.json", results)
    (out_dir / "RESULTS.md").write_text(report.markdown(json.loads(json.dumps(results, default=str))))
    title = f"/predict p50 vs throughput, {results['meta']['cpus']} CPUs, wrk -t{args.wrk_threads}" + (
        " (QUICK)" if args.quick else ""
    )
    plot.plot(out_dir / "latency_vs_throughput.png", results["summary"], results["floor"], title)


def print_headline(out_dir: Path, results: dict[str, Any], verdict: Verdict, *, quick: bool) -> int:
    """The per-configuration figures and the headline with PASS/FAIL; the exit status (1: a check failed)."""
    meta, summary, batching = results["meta"], results["summary"], results["batch_invariance"]
    print()
    print(f"Results: {out_dir / 'RESULTS.md'}  (took {meta['elapsed_s']:.0f} s{', QUICK: noisy' if quick else ''})")
    for name, by_conn in summary.items():
        cells = "  ".join(
            f"{c}c {p['rps']:.0f} req/s p50 {p['p50_ms']:.2f} ms{'' if p['ok'] else ' ERRORS'}"
            for c, p in by_conn.items()
        )
        print(f"  {name:9} {cells}")
    name = verdict.headline_name
    print(f"Headline ({name}):" if name else "Headline: no service configuration measured")
    for line in headline_lines(verdict.headline):
        print("  " + line)
    if not batching["within_atol"]:
        print(f"  [FAIL] batched answers differ from batch 1 by more than {batching['atol']:g} (RESULTS.md)")
    failed_checks = [n for n, v in results["verification"].items() if not v["ok"]]
    if failed_checks:
        print(f"  [FAIL] answer checks failed for: {', '.join(failed_checks)}")
    bad = any(not p["ok"] for by in summary.values() for p in by.values())
    return 1 if failed_checks or bad or not batching["within_atol"] else 0


def stamp_end(meta: dict[str, Any], elapsed_s: float) -> None:
    """Record in ``meta`` how long the run took and the load average at its end."""
    meta["elapsed_s"] = elapsed_s
    meta["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
