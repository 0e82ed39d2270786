"""Scaling curve: the service and the seed peer pinned to 1, 2, ... CPUs, requests/s and p50/p99 at each.

``python -m bench.scaling`` starts each server under ``taskset -c`` on the first k CPUs this process may use (so
the service's own sizing, `available_cpus` → instances, sees k CPUs, exactly as under a cgroup cpuset), drives
POST /predict with wrk at each connection level, and writes ``bench/results/scaling.md`` and ``scaling.json``.
The seed peer (`bench.seed_server`: the seed design on FastAPI + PyTorch) gets the same CPUs and torch threads
= k. wrk runs on the CPUs the server was not given when there are any; at k = all CPUs it shares them with the
server (said in the table). The service runs at its defaults (EDGE_INSTANCES=0: sized from the CPUs it sees).

Rounds are interleaved (every server at every k once per round) and the table gives the median over rounds, so
slow drift of a shared, noisy machine lands on every configuration alike rather than on one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/scaling.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import wrk
from bench.machine import cpu_model, git_commit
from bench.servers import REPO_ROOT, Server, ServerSpec, free_port, running, seed_spec, service_spec

log = logging.getLogger("bench.scaling")

API_KEY = "bench-key-0123456789"


@dataclass(frozen=True)
class Point:
    server: str
    cpus: int
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    wrk_cpus: str


def affinity() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def pinned(spec: ServerSpec, cpus: Sequence[int]) -> ServerSpec:
    """The same server under ``taskset -c`` (its children, uvicorn's workers, inherit the mask)."""
    mask = ",".join(str(c) for c in cpus)
    return ServerSpec(
        name=f"{spec.name}-cpus{len(cpus)}",
        argv=["taskset", "-c", mask, *spec.argv],
        env=spec.env,
        ready_path=spec.ready_path,
        kind=spec.kind,
        precision=spec.precision,
        workers=spec.workers,
    )


def scratch() -> Path:
    """A temporary folder for the request body and the servers' logs (not the results folder)."""
    return Path(tempfile.mkdtemp(prefix="bench-scaling-"))


def body_file(out: Path) -> Path:
    from bench import payload

    path = out / "body.json"
    path.write_bytes(payload.encode(payload.request_body(payload.sp500_candles())))
    return path


def drive(server: Server, body: Path, connections: int, seconds: float, wrk_cpus: Sequence[int]) -> dict[str, Any]:
    """One wrk run against `server`, wrk pinned to `wrk_cpus` (all CPUs when empty)."""
    previous = os.sched_getaffinity(0)
    if wrk_cpus:
        os.sched_setaffinity(0, set(wrk_cpus))  # wrk (a child) inherits this process's mask
    try:
        result = wrk.run(
            f"{server.base_url}/predict",
            connections=connections,
            duration_s=seconds,
            body_file=body,
            api_key=API_KEY,
            threads=1 if connections == 1 else 2,
        )
    finally:
        os.sched_setaffinity(0, previous)
    server.wait_idle()
    return {"rps": result.rps, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms, "errors": result.errors}


def specs(model_dir: str, with_seed: bool, extra: Sequence[str] = ()) -> list[tuple[str, Any]]:
    """(name, spec factory taking (port, cpus)) for every server compared."""

    def service(port: int, k: int) -> ServerSpec:
        return service_spec(
            "service", port=port, model_dir=model_dir, precision="auto", workers=1, api_key=API_KEY, extra=extra
        )

    out: list[tuple[str, Any]] = [("service", service)]
    if with_seed:

        def seed(port: int, k: int) -> ServerSpec:
            return seed_spec("seed", port=port, model_dir=model_dir, threads=k)

        out.append(("seed", seed))
    return out


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    cpus_all = affinity()
    counts = args.cpus or list(range(1, len(cpus_all) + 1))
    tmp = scratch()
    body = body_file(tmp)
    rows: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        for k in counts:
            given = cpus_all[:k]
            rest = cpus_all[k:]
            for name, factory in specs(args.model_dir, not args.no_seed):
                port = free_port()
                server = Server(pinned(factory(port, k), given), port, tmp)
                with running([server]):
                    server.start()
                    server.wait_ready(120)
                    ready = _ready_info(server)
                    for c in args.connections:
                        point = drive(server, body, c, args.seconds, rest)
                        row = {
                            "round": round_,
                            "server": name,
                            "cpus": k,
                            "connections": c,
                            "wrk_cpus": ",".join(map(str, rest)) or "shared",
                            **ready,
                            **point,
                        }
                        log.info("%s", json.dumps(row))
                        rows.append(row)
    return rows


def _ready_info(server: Server) -> dict[str, Any]:
    from bench.servers import http_request

    if server.spec.kind != "service":
        return {}
    _, body = http_request(server.port, "GET", "/ready", timeout=5)
    info = json.loads(body or b"{}")
    return {"instances": info.get("instances"), "intra_op_threads": info.get("intra_op_threads")}


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median over rounds of every (server, cpus, connections)."""
    keys = sorted({(r["server"], r["cpus"], r["connections"]) for r in rows}, key=lambda t: (t[1], t[2], t[0]))
    table = []
    for server, k, c in keys:
        sel = [r for r in rows if (r["server"], r["cpus"], r["connections"]) == (server, k, c)]
        table.append(
            {
                "server": server,
                "cpus": k,
                "connections": c,
                "rounds": len(sel),
                "rps": statistics.median(r["rps"] for r in sel),
                "p50_ms": statistics.median(r["p50_ms"] for r in sel),
                "p99_ms": statistics.median(r["p99_ms"] for r in sel),
                "errors": sum(r["errors"] for r in sel),
                "instances": sel[0].get("instances"),
                "wrk_cpus": sel[0]["wrk_cpus"],
            }
        )
    return table


def markdown(table: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"### Scaling curve: {meta['cpus_available']} CPUs ({meta['cpu_model']}), commit {meta['commit']}",
        "",
        f"`{meta['command']}`; wrk, POST /predict (the last 60 S&P 500 candles), {meta['seconds']:g} s per point, "
        f"median of {meta['rounds']} interleaved round(s). A shared, noisy machine: compare rows of one run only.",
        "",
        "| CPUs | connections | server | instances | req/s | p50 ms | p99 ms | errors | wrk on |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in table:
        inst = "" if r["instances"] is None else str(r["instances"])
        lines.append(
            f"| {r['cpus']} | {r['connections']} | {r['server']} | {inst} | {r['rps']:.0f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['errors']} | {r['wrk_cpus']} |"
        )
    ratios = []
    for r in table:
        if r["server"] != "service":
            continue
        peer = next(
            (
                p
                for p in table
                if p["server"] == "seed" and (p["cpus"], p["connections"]) == (r["cpus"], r["connections"])
            ),
            None,
        )
        if peer and peer["rps"] > 0:
            ratios.append(f"{r['cpus']} CPU(s) @ {r['connections']}: {r['rps'] / peer['rps']:.1f}x")
    if ratios:
        lines += ["", "Service req/s ÷ seed req/s, same CPUs: " + "; ".join(ratios) + "."]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n\n")[0])
    p.add_argument("--cpus", type=lambda s: [int(x) for x in s.split(",")], default=None, help="e.g. 1,2,4,8,16")
    p.add_argument("--connections", type=lambda s: [int(x) for x in s.split(",")], default=[1, 64])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--model-dir", default="models")
    p.add_argument("--no-seed", action="store_true", help="leave the seed peer out (it needs torch: the train extra)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    wrk.wrk_binary()
    available = affinity()
    if args.cpus and max(args.cpus) > len(available):
        log.error("asked for %d CPUs, this process may use %d", max(args.cpus), len(available))
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = measure(args)
    table = summarise(rows)
    meta = {
        "cpus_available": len(available),
        "cpu_model": cpu_model(),
        "commit": git_commit(),
        "seconds": args.seconds,
        "rounds": args.rounds,
        "command": "python -m bench.scaling " + " ".join(argv if argv is not None else sys.argv[1:]),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    md = markdown(table, meta)
    (args.out / "scaling.json").write_text(json.dumps({"meta": meta, "table": table, "rows": rows}, indent=2) + "\n")
    (args.out / "scaling.md").write_text(md + "\n")
    print(md)
    return 1 if any(r["errors"] for r in table) else 0


if __name__ == "__main__":
    sys.exit(main())
