"""Model instances vs intra-op threads vs workers, side by side in one run: ``python -m bench.instances``.

On the CPUs this process may use, it measures:

* the server (POST /predict through wrk, the last 60 S&P 500 candles) with ``--instances`` 1 and 2 (one thread
  each), one instance of 2 intra-op threads, and ``--workers 2``: p50 at 1 connection and requests/s at 64,
  rounds interleaved (every configuration once per round), medians reported;
* the server's CPU use at rest for 3 s after the load, with spinning off (the default) and with
  ``--allow-spinning --intra-op-threads 2`` (what a spinning pool costs);
* in-process `Model.run` at batch 1 and 64 with 1 vs 2 intra-op threads (where more threads per session could
  pay: large batches without CUDA), interleaved calls, median ms per call.

Writes ``bench/results/instances.md`` and ``instances.json``. The machine is shared and noisy: only the ratios
of one run mean anything, and wrk shares the CPUs with the server.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/instances.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import wrk
from bench.machine import cpu_model, git_commit
from bench.scaling import API_KEY, body_file, drive, scratch
from bench.servers import REPO_ROOT, Server, free_port, running, service_spec
from bench.synthetic import synthetic_windows

log = logging.getLogger("bench.instances")

#: name -> (extra flags, workers)
CONFIGS: dict[str, tuple[list[str], int]] = {
    "instances=1": (["--instances", "1", "--intra-op-threads", "1"], 1),
    "instances=2": (["--instances", "2", "--intra-op-threads", "1"], 1),
    "instances=1, intra-op=2": (["--instances", "1", "--intra-op-threads", "2"], 1),
    "workers=2": (["--instances", "1", "--intra-op-threads", "1"], 2),
    "instances=1, intra-op=2, spinning": (["--instances", "1", "--intra-op-threads", "2", "--allow-spinning"], 1),
}


def idle_cpu(server: Server, seconds: float) -> float:
    before, t0 = server.cpu_seconds(), time.perf_counter()
    time.sleep(seconds)
    return (server.cpu_seconds() - before) / (time.perf_counter() - t0)


def serve_round(args: argparse.Namespace, body: Path, name: str) -> dict[str, Any]:
    flags, workers = CONFIGS[name]
    port = free_port()
    spec = service_spec(
        name.replace(" ", "").replace(",", "_").replace("=", ""),
        port=port,
        model_dir=args.model_dir,
        precision="auto",
        workers=workers,
        api_key=API_KEY,
        extra=flags,
    )
    server = Server(spec, port, body.parent)
    with running([server]):
        server.start()
        server.wait_ready(120)
        time.sleep(1.0)  # the drift reference loads in the background after /ready
        cpu0, t0 = server.cpu_seconds(), time.perf_counter()
        one = drive(server, body, 1, args.seconds, [])
        busy_at_1 = (server.cpu_seconds() - cpu0) / (time.perf_counter() - t0)
        many = drive(server, body, 64, args.seconds, [])
        rest = idle_cpu(server, 3.0)
    return {
        "config": name,
        "p50_ms_at_1": one["p50_ms"],
        "p99_ms_at_1": one["p99_ms"],
        "cpu_s_per_s_at_1": busy_at_1,
        "rps_at_64": many["rps"],
        "p99_ms_at_64": many["p99_ms"],
        "errors": one["errors"] + many["errors"],
        "idle_cpu_s_per_s": rest,
    }


def in_process(model_dir: Path, seconds: float) -> list[dict[str, Any]]:
    from runtime.session import Model

    windows = synthetic_windows(64, seed=0)
    models = {t: Model.load(model_dir, intra_op_threads=t) for t in (1, 2)}
    out = []
    for batch in (1, 64):
        x = windows[:batch]
        samples: dict[int, list[float]] = {1: [], 2: []}
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            for t, model in models.items():  # interleaved calls: drift hits both alike
                t0 = time.perf_counter()
                model.run(x)
                samples[t].append((time.perf_counter() - t0) * 1000)
        med = {t: statistics.median(v) for t, v in samples.items()}
        out.append({"batch": batch, "ms_1_thread": med[1], "ms_2_threads": med[2], "calls": len(samples[1])})
    return out


def markdown(table: list[dict[str, Any]], calls: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"### Instances, intra-op threads, workers: {meta['cpus']} CPUs ({meta['cpu_model']}), commit {meta['commit']}",
        "",
        f"`{meta['command']}`; wrk POST /predict, {meta['seconds']:g} s per level, median of {meta['rounds']} "
        "interleaved rounds; server CPU @1 = CPU-seconds per second of the server's process tree during the "
        "1-connection level (a spinning pool shows here); idle = the same over 3 s at rest right after the load. "
        "Shared, noisy machine, wrk on the same CPUs: compare rows of this run only.",
        "",
        "| configuration | p50 ms @1 | p99 ms @1 | server CPU-s/s @1 | req/s @64 | p99 ms @64 | idle CPU-s/s "
        "| errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        lines.append(
            f"| {r['config']} | {r['p50_ms_at_1']:.2f} | {r['p99_ms_at_1']:.2f} | {r['cpu_s_per_s_at_1']:.2f} | "
            f"{r['rps_at_64']:.0f} | "
            f"{r['p99_ms_at_64']:.1f} | {r['idle_cpu_s_per_s']:.4f} | {r['errors']} |"
        )
    base = next(r for r in table if r["config"] == "instances=1")
    two = next(r for r in table if r["config"] == "instances=2")
    lines += [
        "",
        f"instances=2 ÷ instances=1: p50 @1 {two['p50_ms_at_1'] / base['p50_ms_at_1']:.2f}x, "
        f"req/s @64 {two['rps_at_64'] / base['rps_at_64']:.2f}x.",
        "",
        "In-process `Model.run` (row-wise INT8), median ms per call, 1 vs 2 intra-op threads, interleaved:",
        "",
        "| batch | 1 thread | 2 threads | 2 ÷ 1 |",
        "|---:|---:|---:|---:|",
    ]
    for c in calls:
        lines.append(
            f"| {c['batch']} | {c['ms_1_thread']:.3f} | {c['ms_2_threads']:.3f} | "
            f"{c['ms_2_threads'] / c['ms_1_thread']:.2f}x |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.instances", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--model-dir", default="models")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    wrk.wrk_binary()
    args.out.mkdir(parents=True, exist_ok=True)
    body = body_file(scratch())
    rows = []
    for round_ in range(args.rounds):
        for name in CONFIGS:
            row = {"round": round_, **serve_round(args, body, name)}
            log.info("%s", json.dumps(row))
            rows.append(row)
    keys = ("p50_ms_at_1", "p99_ms_at_1", "cpu_s_per_s_at_1", "rps_at_64", "p99_ms_at_64", "idle_cpu_s_per_s")
    table = []
    for name in CONFIGS:
        sel = [r for r in rows if r["config"] == name]
        table.append(
            {
                "config": name,
                **{k: statistics.median(r[k] for r in sel) for k in keys},
                "errors": sum(r["errors"] for r in sel),
            }
        )
    calls = in_process(REPO_ROOT / args.model_dir, min(args.seconds, 5.0))
    meta = {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "commit": git_commit(),
        "seconds": args.seconds,
        "rounds": args.rounds,
        "command": "python -m bench.instances " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    md = markdown(table, calls, meta)
    (args.out / "instances.json").write_text(
        json.dumps({"meta": meta, "table": table, "in_process": calls, "rows": rows}, indent=2, default=float) + "\n"
    )
    (args.out / "instances.md").write_text(md + "\n")
    print(md)
    return 1 if any(r["errors"] for r in table) else 0


if __name__ == "__main__":
    sys.exit(main())
