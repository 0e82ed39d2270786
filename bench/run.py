"""The whole benchmark in one command: ``python -m bench`` (or ``python bench/run.py``); ``--quick`` smokes.

Order of work, chosen so that each measurement sees a quiet machine:
1. the floor (bare onnxruntime, INT8 and FP32, batch 1, 8 and 64, at each thread count measured), with no
   server running, and batch invariance (512 real windows alone against batches of 2-100, `bench.invariance`);
2. cold start to ready, each configuration a few times, interleaved;
3. every configuration started once on its own free port and verified (a 200 with a well-formed body whose
   probabilities match bare onnxruntime on the same window);
4. load with wrk at each connection level, the configurations in alternation (rotated every round), a warm-up
   before each point; memory of the process tree sampled during the highest connection level;
5. verification again, then every server is stopped (process groups; also on Ctrl-C or SIGTERM);
6. RESULTS.md, results.json and latency_vs_throughput.png, and the headline printed with PASS/FAIL.

Each step is a function of `bench.phases`; `_main` below calls them in this order.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import phases, wrk
from bench.config import HTTP, SEED, configurations
from bench.machine import machine_meta
from bench.servers import REPO_ROOT
from bench.targets import summarise_rounds

log = logging.getLogger("bench")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 3 s per point, 1 round, 1 cold start (noisy)")
    p.add_argument("--duration", type=float, default=None, help="seconds of measured load per point (default 10)")
    p.add_argument("--warmup", type=float, default=None, help="seconds of warm-up load before each point (default 2)")
    p.add_argument("--rounds", type=int, default=None, help="alternation rounds; medians are reported (default 3)")
    p.add_argument("--connections", default="1,8,64", help="comma-separated wrk connection levels (default 1,8,64)")
    p.add_argument(
        "--workers",
        type=int,
        nargs="*",
        default=[],
        help="also measure the INT8 service with --workers N for each N given (e.g. --workers 2)",
    )
    p.add_argument(
        "--configs",
        default="int8,fp32,seed,http",
        help="base configurations to run, comma-separated subset of int8,fp32,seed,http (http: the HTTP floor)",
    )
    p.add_argument("--cold-start-runs", type=int, default=None, help="spawns per configuration (default 3)")
    p.add_argument("--floor-seconds", type=float, default=None, help="seconds per floor point (default 4)")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1: wrk shares the CPUs)")
    p.add_argument("--model-dir", default="models", help="model directory, relative to the repository root")
    p.add_argument(
        "--seed-threads",
        type=int,
        nargs="+",
        default=[1],
        help="torch intra-op threads of the seed (default 1: its fastest setting here, see README); more values "
        "add peers named seed-tN, e.g. --seed-threads 1 2",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=PRECISION[,EDGE_X=V...]",
        help="also measure the service with extra EDGE_ settings, e.g. int8-t1=int8,EDGE_INTRA_OP_THREADS=1",
    )
    p.add_argument("--api-key", default="benchkey", help="API key the service is started with and sent")
    p.add_argument(
        "--out",
        default=None,
        help="results directory (default bench/results; bench/results/raw/quick with --quick)",
    )
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    quick = args.quick
    defaults = {
        "duration": (10.0, 3.0),
        "warmup": (2.0, 1.0),
        "rounds": (3, 1),
        "cold_start_runs": (3, 1),
        "floor_seconds": (4.0, 1.0),
    }
    for name, (full, short) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)
    if args.out is None:
        args.out = "bench/results/raw/quick" if quick else "bench/results"
    args.connections = sorted({int(c) for c in str(args.connections).split(",") if c.strip()})
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = set(args.configs) - {"int8", "fp32", SEED, HTTP}
    if unknown:
        raise SystemExit(f"--configs: unknown {sorted(unknown)}; allowed: int8, fp32, seed, http")
    return args


# -- configurations ------------------------------------------------------------------------------------------


def check_artifacts(model_dir: Path, *, with_torch: bool) -> str | None:
    """Every model file the configurations load must match its manifest hash.

    The servers and the floor must all run the same model; a directory caught mid-retrain (one file new, the others
    old) would otherwise show up as a mysterious probability mismatch or, worse, go unnoticed.
    """
    names = ["signal_predictor.int8.onnx", "signal_predictor.onnx"] + (["signal_predictor.pt"] if with_torch else [])
    try:
        files = json.loads((model_dir / "manifest.json").read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"'{model_dir / 'manifest.json'}' has no readable 'files' table: {e}"
    for name in names:
        entry = files.get(name)
        expected = entry.get("sha256") if isinstance(entry, dict) else None
        if expected is None:
            return f"manifest lists no sha256 for '{name}'; cannot tell whether it is the committed model"
        actual = hashlib.sha256((model_dir / name).read_bytes()).hexdigest()
        if actual != expected:
            return (
                f"'{model_dir / name}' does not match its manifest (sha256 {actual[:12]}… != {expected[:12]}…): "
                "is a training run rewriting models/? Benchmark a consistent model directory"
            )
    return None


def preflight(args: argparse.Namespace, model_dir: Path) -> str | None:
    """What stops the run before it starts (a missing or inconsistent model), or None."""
    for needed in ("manifest.json", "signal_predictor.int8.onnx", "signal_predictor.onnx"):
        if not (model_dir / needed).exists():
            return (
                f"{model_dir / needed} is missing: the benchmark needs the committed model (python -m training train)"
            )
    if SEED in args.configs and not (model_dir / "signal_predictor.pt").exists():
        return f"{model_dir / 'signal_predictor.pt'} is missing: the seed peer loads the PyTorch state_dict"
    return check_artifacts(model_dir, with_torch=SEED in args.configs)


def output_dirs(args: argparse.Namespace) -> tuple[Path, Path]:
    """The results directory (created) and the directory for the servers' logs."""
    out_dir = (REPO_ROOT / args.out) if not Path(args.out).is_absolute() else Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_dir = out_dir / "logs" if "raw" in out_dir.parts else out_dir / "raw" / "logs"
    return out_dir, log_dir


def estimate_s(args: argparse.Namespace, n_configs: int) -> float:
    load = args.rounds * len(args.connections) * n_configs * (args.duration + args.warmup + 0.3)
    return float(load + 10 * args.floor_seconds + args.cold_start_runs * n_configs * 3 + 15)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: `running()` has already stopped every server
        log.error("interrupted (%s); all servers stopped, no results written", e or "Ctrl-C")
        return 130


def _main(argv: list[str] | None) -> int:
    args = resolve(build_parser().parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    t_start = time.perf_counter()
    wrk.wrk_binary()  # fail fast with the install command
    model_dir = (REPO_ROOT / args.model_dir).resolve()
    problem = preflight(args, model_dir)
    if problem:
        log.error("%s", problem)
        return 2
    out_dir, log_dir = output_dirs(args)
    configs = configurations(args)
    log.info(
        "benchmark of %s at %s connections; about %.0f s",
        ", ".join(c.name for c in configs),
        args.connections,
        estimate_s(args, len(configs)),
    )
    meta = machine_meta(args)
    request = phases.prepare_request()

    floor = phases.measure_floor(model_dir, request.window, configs, args.floor_seconds)
    batching = phases.measure_invariance(model_dir)
    cold = phases.cold_starts(configs, args, log_dir)
    served = phases.servers_under_load(configs, args, log_dir, request, floor["probabilities"])

    summary = summarise_rounds(served.rows)
    notes = served.notes + phases.run_notes(served.rows, meta)
    verdict = phases.evaluate_targets(summary, configs, floor, cold, served.memory, args.connections)
    phases.stamp_end(meta, time.perf_counter() - t_start)
    results = phases.results_json(
        meta=meta,
        configs=configs,
        floor=floor,
        batching=batching,
        cold=cold,
        served=served,
        summary=summary,
        verdict=verdict,
        notes=notes,
    )
    phases.write_results(out_dir, results, args)
    return phases.print_headline(out_dir, results, verdict, quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())
