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
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench import floor as floor_mod
from bench import invariance, metrics, payload, report, wrk
from bench.servers import (
    REPO_ROOT,
    MemorySampler,
    Server,
    ServerSpec,
    free_port,
    http_floor_spec,
    post_predict,
    running,
    seed_spec,
    service_spec,
)

log = logging.getLogger("bench")

SEED = "seed"
HTTP = "http"
CLASSES = ("sell", "hold", "buy")
#: |Δp| between a server's answer and bare onnxruntime on the same window above which it is wrong, not noise.
VERIFY_ATOL = 1e-3


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
def configurations(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for name in args.configs:
        if name == SEED:
            for i, threads in enumerate(args.seed_threads):
                out.append(
                    {
                        "name": SEED if i == 0 else f"{SEED}-t{threads}",
                        "kind": "seed",
                        "precision": "fp32",
                        "workers": 1,
                        "threads": threads,
                        "description": (
                            "bench/seed_server.py: FastAPI + PyTorch eager FP32, one forward per request, "
                            f"uvicorn 1 worker, torch {threads} thread(s)"
                        ),
                    }
                )
        elif name == HTTP:
            out.append(
                {
                    "name": HTTP,
                    "kind": "http",
                    "precision": "none",
                    "workers": 1,
                    "description": (
                        "bench/http_floor.py: the service's uvicorn stack answering a fixed 700-byte JSON body "
                        "after reading the request, no validation and no model (what HTTP alone costs)"
                    ),
                }
            )
        else:
            out.append(
                {
                    "name": name,
                    "kind": "service",
                    "precision": name,
                    "workers": 1,
                    "description": f"python -m runtime --precision {name} (1 worker, defaults otherwise)",
                }
            )
    for n in args.workers:
        out.append(
            {
                "name": f"int8-w{n}",
                "kind": "service",
                "precision": "int8",
                "workers": n,
                "description": f"python -m runtime --precision int8 --workers {n}",
            }
        )
    for v in args.variant:
        name, _, rest = v.partition("=")
        precision, *pairs = rest.split(",")
        if not name or precision not in ("int8", "fp32") or any("=" not in kv for kv in pairs):
            raise SystemExit(f"--variant {v!r}: expected NAME=int8|fp32[,EDGE_X=V...]")
        env = dict(kv.split("=", 1) for kv in pairs)
        out.append(
            {
                "name": name,
                "kind": "service",
                "precision": precision,
                "workers": 1,
                "env": env,
                "description": f"python -m runtime --precision {precision} with "
                + (" ".join(f"{k}={v}" for k, v in env.items()) or "defaults"),
            }
        )
    names = [c["name"] for c in out]
    if len(set(names)) != len(names):
        raise SystemExit(f"configuration names must be unique: {names}")
    return out


def spec_for(config: dict[str, Any], port: int, args: argparse.Namespace) -> ServerSpec:
    if config["kind"] == "seed":
        return seed_spec(config["name"], port=port, model_dir=args.model_dir, threads=config["threads"])
    if config["kind"] == "http":
        return http_floor_spec(config["name"], port=port)
    return service_spec(
        config["name"],
        port=port,
        model_dir=args.model_dir,
        precision=config["precision"],
        workers=config["workers"],
        api_key=args.api_key,
        env=config.get("env"),
    )


# -- steps ---------------------------------------------------------------------------------------------------
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


def config_threads(config: dict[str, Any]) -> int:
    """The intra-op threads one worker of a service configuration will use (the service's own rule)."""
    configured = int((config.get("env") or {}).get("EDGE_INTRA_OP_THREADS", 0))
    workers = int(config.get("workers", 1))
    try:
        from runtime.session import threads_per_worker
        from runtime.settings import Settings

        env_default = Settings().intra_op_threads
        return threads_per_worker(configured or env_default, workers)
    except Exception as e:  # the runtime changed shape: fall back to its documented default
        log.warning("could not read the service's thread rule (%s); assuming CPUs / workers", e)
        return configured or max(1, len(os.sched_getaffinity(0)) // workers)


def measure_floor(
    model_dir: Path, window: np.ndarray[Any, Any], configs: list[dict[str, Any]], seconds: float
) -> dict[str, Any]:
    """Bare onnxruntime at the default service's thread count (batch 1, 8, 64), and at batch 1 for every other
    thread count a measured configuration uses, so each is compared with a floor of its own threading."""
    default = config_threads({"workers": 1})
    floor = floor_mod.measure(model_dir, window, intra_op_threads=default, seconds=seconds)
    floor["by_threads"] = {str(default): floor["points"]}
    others = sorted({config_threads(c) for c in configs if c["kind"] == "service"} - {default})
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


def cold_starts(configs: list[dict[str, Any]], args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    runs: dict[str, list[float]] = {c["name"]: [] for c in configs}
    errors: dict[str, str] = {}
    for i in range(args.cold_start_runs):
        for c in configs:
            if c["name"] in errors:
                continue
            port = free_port()
            server = Server(spec_for(c, port, args), port, log_dir)
            with running([server]):
                server.start()
                try:
                    runs[c["name"]].append(server.wait_ready(timeout_s=120))
                except (RuntimeError, TimeoutError) as e:
                    errors[c["name"]] = str(e)
                    log.error("cold start of %s failed: %s", c["name"], e)
            log.info(
                "cold start %s #%d: %s",
                c["name"],
                i + 1,
                f"{runs[c['name']][-1]:.3f} s" if runs[c["name"]] else "failed",
            )
    return {
        name: {
            "runs_s": [round(x, 4) for x in xs],
            "median_s": statistics.median(xs) if xs else None,
            "error": errors.get(name),
        }
        for name, xs in runs.items()
    }


def verify(server: Server, body: bytes, expected: dict[str, list[float]], api_key: str) -> dict[str, Any]:
    """A 200 with a signal and three probabilities summing to 1 that match bare ORT on the same window."""
    precision = server.spec.precision
    try:
        status, parsed, raw = post_predict(server.port, body, api_key)
    except OSError as e:
        return {"ok": False, "detail": f"no answer: {e}"}
    if status != 200 or not isinstance(parsed, dict):
        return {"ok": False, "status": status, "detail": f"HTTP {status}: {raw[:300]!r}"}
    if server.spec.kind == "http":  # the HTTP floor has no model: a JSON 200 is all it promises
        return {"ok": True, "status": status, "max_abs_dp": None, "detail": "200, fixed body (no model)"}
    try:
        pred = parsed["prediction"]
        probs = [float(pred["probabilities"][k]) for k in CLASSES]
        signal = pred["signal"]
    except (KeyError, TypeError, ValueError) as e:
        return {"ok": False, "status": status, "detail": f"malformed body ({e}): {raw[:300]!r}"}
    problems = []
    if signal != CLASSES[int(np.argmax(probs))]:
        problems.append(f"signal {signal!r} is not the arg-max of {probs}")
    if abs(sum(probs) - 1) > 1e-4:
        problems.append(f"probabilities sum to {sum(probs)}")
    ref = expected.get(precision)
    max_dp = max(abs(a - b) for a, b in zip(probs, ref, strict=True)) if ref else None
    if max_dp is not None and max_dp > VERIFY_ATOL:
        problems.append(f"probabilities {probs} differ from bare ORT {precision.upper()} {ref} by {max_dp:.2e}")
    return {
        "ok": not problems,
        "status": status,
        "signal": signal,
        "probabilities": probs,
        "max_abs_dp": max_dp,
        "detail": "; ".join(problems) or f"200, signal {signal}, vs bare ORT {precision.upper()}",
    }


def load_rounds(
    servers: dict[str, Server], configs: list[dict[str, Any]], args: argparse.Namespace, body_file: Path
) -> tuple[list[dict[str, Any]], dict[str, dict[str, float | None]]]:
    rows: list[dict[str, Any]] = []
    memory: dict[str, dict[str, float | None]] = {}
    names = [c["name"] for c in configs if c["name"] in servers]
    top = max(args.connections)
    dead: set[str] = set()
    for rnd in range(args.rounds):
        order = names[rnd % len(names) :] + names[: rnd % len(names)]  # rotate who goes first each round
        for conns in args.connections:
            for name in order:
                server = servers[name]
                if name in dead:
                    continue
                if server.proc is None or server.proc.poll() is not None:
                    log.error("%s has exited; it is not measured further. Log tail:\n%s", name, server.log_tail())
                    dead.add(name)
                    continue
                url = f"{server.base_url}/predict"
                common = {
                    "connections": conns,
                    "body_file": body_file,
                    "api_key": args.api_key,
                    "threads": args.wrk_threads,
                }
                try:
                    warm = wrk.run(url, duration_s=args.warmup, **common)
                except wrk.WrkError as e:
                    log.error("%s: wrk failed (%s); it is not measured further", name, e)
                    dead.add(name)
                    continue
                server.wait_idle()
                # One worker only: with several, each scrape reaches whichever worker accepts it.
                inside0 = _scrape(server) if server.spec.kind == "service" and server.spec.workers == 1 else None
                others = [s for n, s in servers.items() if n != name]
                cpu0, idle0 = server.cpu_seconds(), sum(s.cpu_seconds() for s in others)
                try:
                    if conns == top:
                        with MemorySampler(server) as sampler:
                            res = wrk.run(url, duration_s=args.duration, **common)
                        mem = server.memory()
                        prev = memory.get(name, {})
                        memory[name] = {
                            "peak_rss_mb": max(prev.get("peak_rss_mb") or 0.0, sampler.peak_rss_mb, mem["rss_mb"]),
                            "hwm_mb": max(prev.get("hwm_mb") or 0.0, mem["hwm_mb"]),
                            "pss_mb": sampler.pss_mb if sampler.pss_mb is not None else prev.get("pss_mb"),
                            "processes": mem["processes"],
                        }
                    else:
                        res = wrk.run(url, duration_s=args.duration, **common)
                except wrk.WrkError as e:
                    log.error("%s: wrk failed (%s); it is not measured further", name, e)
                    dead.add(name)
                    continue
                cpu1, idle1 = server.cpu_seconds(), sum(s.cpu_seconds() for s in others)
                # The backlog of requests wrk dropped at the end must not overlap the next point.
                drain_s = server.wait_idle()
                inside1 = _scrape(server) if inside0 is not None else None
                inside = metrics.inside_server(inside0, inside1) if inside0 and inside1 else None
                row = {
                    "round": rnd,
                    "config": name,
                    **res.to_dict(),
                    "server_cpu_s": round(cpu1 - cpu0, 3),
                    "idle_servers_cpu_s": round(idle1 - idle0, 3),
                    "warmup_errors": warm.errors,
                    "drain_s": round(drain_s, 2),
                    "inside_server": inside,
                }
                rows.append(row)
                flag = (
                    "" if res.ok else f"  !! {res.errors} failed requests ({res.non2xx} non-2xx, {res.socket_errors})"
                )
                log.info(
                    "round %d  %-8s %3d conn: %8.1f req/s  p50 %7.3f ms  p99 %7.3f ms  "
                    "server CPU %.2f s  wrk CPU %.2f s%s",
                    rnd + 1,
                    name,
                    conns,
                    res.rps,
                    res.p50_ms,
                    res.p99_ms,
                    row["server_cpu_s"],
                    res.wrk_cpu_s or 0,
                    flag,
                )
    return rows, memory


def machine_meta(args: argparse.Namespace) -> dict[str, Any]:
    def version(mod: str) -> str:
        try:
            m = __import__(mod)
            return str(getattr(m, "__version__", "?"))
        except Exception:
            return "missing"

    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            or "unknown"
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "runtime", "models", "bench"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if dirty:
            commit += " (+ uncommitted changes)"
    except OSError:
        commit = "unknown"
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False).stdout.split("\n")[
        0
    ]
    return {
        "quick": args.quick,
        "started_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "git_commit": commit,
        "cpu_model": cpu_model,
        "cpus": len(os.sched_getaffinity(0)),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "versions": {
            "python": platform.python_version(),
            "onnxruntime": version("onnxruntime"),
            "uvicorn": version("uvicorn"),
            "starlette": version("starlette"),
            "fastapi": version("fastapi"),
            "pydantic": version("pydantic"),
            "wrk": wrk_version.replace("wrk ", "").split(" [")[0],
        },
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "connections": args.connections,
        "wrk_threads": args.wrk_threads,
    }


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
    for needed in ("manifest.json", "signal_predictor.int8.onnx", "signal_predictor.onnx"):
        if not (model_dir / needed).exists():
            log.error(
                "%s is missing: the benchmark needs the committed model (python -m training train)",
                model_dir / needed,
            )
            return 2
    out_dir = (REPO_ROOT / args.out) if not Path(args.out).is_absolute() else Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_dir = out_dir / "logs" if "raw" in out_dir.parts else out_dir / "raw" / "logs"
    configs = configurations(args)
    if SEED in args.configs and not (model_dir / "signal_predictor.pt").exists():
        log.error("%s is missing: the seed peer loads the PyTorch state_dict", model_dir / "signal_predictor.pt")
        return 2
    problem = check_artifacts(model_dir, with_torch=SEED in args.configs)
    if problem:
        log.error("%s", problem)
        return 2
    log.info(
        "benchmark of %s at %s connections; about %.0f s",
        ", ".join(c["name"] for c in configs),
        args.connections,
        estimate_s(args, len(configs)),
    )
    meta = machine_meta(args)
    notes: list[str] = []

    # The request: the last 60 real S&P 500 candles, validated by the service's own schema.
    candles = payload.sp500_candles()
    body = payload.encode(payload.request_body(candles))
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    atexit.register(shutil.rmtree, tmp, True)
    body_file = tmp / "body.json"
    body_file.write_bytes(body)
    window = np.asarray(payload.window(candles), dtype=np.float32)

    # 1. floor
    log.info("floor: bare onnxruntime, %.1f s per point", args.floor_seconds)
    floor = measure_floor(model_dir, window, configs, args.floor_seconds)
    expected = floor["probabilities"]
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

    # 2. cold start
    cold = cold_starts(configs, args, log_dir)

    # 3-5. servers under load
    servers: dict[str, Server] = {}
    verification: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    memory: dict[str, dict[str, float | None]] = {}
    all_servers = [Server(spec_for(c, p := free_port(), args), p, log_dir) for c in configs]
    with running(all_servers):
        for s in all_servers:
            s.start()
        for s in all_servers:
            try:
                s.wait_ready(timeout_s=120)
            except (RuntimeError, TimeoutError) as e:
                verification[s.spec.name] = {"ok": False, "detail": f"never ready: {str(e).splitlines()[0]}"}
                log.error("%s", e)
                continue
            v = verify(s, body, expected, args.api_key)
            if s.spec.kind == "service":
                v["ready"] = _ready_info(s)
            verification[s.spec.name] = v
            if v["ok"]:
                servers[s.spec.name] = s
                log.info("verified %s: %s (max |Δp| vs bare ORT %s)", s.spec.name, v["detail"], v.get("max_abs_dp"))
            else:
                log.error("%s answered wrongly, it is NOT measured: %s", s.spec.name, v["detail"])
        for c in configs:
            ready = (verification.get(c["name"]) or {}).get("ready") or {}
            if "intra_op_threads" in ready and int(ready["intra_op_threads"]) != config_threads(c):
                notes.append(
                    f"`{c['name']}` reports {ready['intra_op_threads']} intra-op thread(s) on /ready but its floor "
                    f"was measured with {config_threads(c)}"
                )
        rows, memory = load_rounds(servers, configs, args, body_file)
        for name, s in servers.items():
            s.wait_idle()
            after = verify(s, body, expected, args.api_key)
            if not after["ok"]:
                verification[name] = {**after, "ok": False, "detail": "after load: " + after["detail"]}
                log.error("%s answered wrongly after load: %s", name, after["detail"])

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

    summary = report.summarise_rounds(rows)
    services = [c["name"] for c in configs if c["kind"] == "service"]
    top, low = max(args.connections), min(args.connections)

    def targets_for(name: str) -> list[report.Target]:
        c = next(c for c in configs if c["name"] == name)
        return report.evaluate(
            summary,
            service=name,
            seed=SEED,
            floor={"points": floor["by_threads"].get(str(config_threads(c)), floor["points"])},
            cold_start_s=cold.get(name, {}).get("median_s"),
            rss_mb=memory.get(name, {}).get("peak_rss_mb"),
            precision=c["precision"],
            low_conns=low,
            high_conns=top,
        )

    headline_name = "int8" if "int8" in services else (services[0] if services else None)
    headline = targets_for(headline_name) if headline_name else []
    meta["elapsed_s"] = time.perf_counter() - t_start
    meta["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results = {
        "meta": meta,
        "configs": configs,
        "floor": floor,
        "batch_invariance": batching,
        "cold_start": cold,
        "verification": verification,
        "rows": rows,
        "summary": summary,
        "memory": memory,
        "targets": [_target_dict(t) for t in headline],
        "other_targets": {n: [_target_dict(t) for t in targets_for(n)] for n in services if n != headline_name},
        "notes": notes,
    }
    report.write_json(out_dir / "results.json", results)
    (out_dir / "RESULTS.md").write_text(report.markdown(json.loads(json.dumps(results, default=str))))
    title = f"/predict p50 vs throughput, {meta['cpus']} CPUs, wrk -t{args.wrk_threads}" + (
        " (QUICK)" if args.quick else ""
    )
    report.plot(out_dir / "latency_vs_throughput.png", summary, floor, title)

    print()
    print(
        f"Results: {out_dir / 'RESULTS.md'}  (took {meta['elapsed_s']:.0f} s{', QUICK: noisy' if args.quick else ''})"
    )
    for name, by_conn in summary.items():
        cells = "  ".join(
            f"{c}c {p['rps']:.0f} req/s p50 {p['p50_ms']:.2f} ms{'' if p['ok'] else ' ERRORS'}"
            for c, p in by_conn.items()
        )
        print(f"  {name:9} {cells}")
    print(f"Headline ({headline_name}):" if headline_name else "Headline: no service configuration measured")
    for line in report.headline_lines(headline):
        print("  " + line)
    if not batching["within_atol"]:
        print(f"  [FAIL] batched answers differ from batch 1 by more than {batching['atol']:g} (RESULTS.md)")
    failed_checks = [n for n, v in verification.items() if not v["ok"]]
    if failed_checks:
        print(f"  [FAIL] answer checks failed for: {', '.join(failed_checks)}")
    bad = any(not p["ok"] for by in summary.values() for p in by.values())
    return 1 if failed_checks or bad or not batching["within_atol"] else 0


def _scrape(server: Server) -> dict[str, dict[str, Any]] | None:
    """The server's histograms, or None (logged) when /metrics cannot be read: the load figures still stand."""
    try:
        return metrics.scrape_histograms(server.port)
    except (OSError, RuntimeError) as e:
        log.warning("%s: /metrics not read (%s); no inside-the-server figures for this point", server.spec.name, e)
        return None


def _ready_info(server: Server) -> dict[str, Any] | None:
    """What the service says about itself on /ready (precision, provider, intra-op threads)."""
    from bench.servers import http_request

    status, raw = http_request(server.port, "GET", "/ready", quiet=True)
    try:
        info = json.loads(raw) if status == 200 else None
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def _target_dict(t: report.Target) -> dict[str, Any]:
    return {
        "name": t.name,
        "value": None if t.value is None or math.isnan(t.value) else t.value,
        "op": t.op,
        "threshold": t.threshold,
        "unit": t.unit,
        "note": t.note,
        "status": t.status,
    }


if __name__ == "__main__":
    sys.exit(main())
