"""The configurations a run measures: one `Config` per server, built from the command line."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from bench.servers import ServerSpec, http_floor_spec, seed_spec, service_spec

log = logging.getLogger("bench")

SEED = "seed"
HTTP = "http"

Kind = Literal["service", "seed", "http"]


@dataclass(frozen=True)
class Config:
    """One server configuration under test; `dataclasses.asdict` of it is its entry in results.json."""

    #: Unique label in logs, tables and results.json (e.g. "int8", "seed-t2", "int8-w2").
    name: str
    #: "service" (python -m runtime), "seed" (bench/seed_server.py) or "http" (bench/http_floor.py: no model).
    kind: Kind
    #: Model precision served: "int8" or "fp32"; "none" for the HTTP floor.
    precision: str = "int8"
    #: uvicorn worker processes.
    workers: int = 1
    #: torch intra-op threads of the seed peer; None for the others (the service's own rule applies).
    threads: int | None = None
    #: Extra EDGE_ settings the service is started with (``--variant``).
    env: Mapping[str, str] = field(default_factory=dict)
    #: One line for RESULTS.md: what runs and how.
    description: str = ""


def configurations(args: argparse.Namespace) -> list[Config]:
    out: list[Config] = []
    for name in args.configs:
        if name == SEED:
            for i, threads in enumerate(args.seed_threads):
                out.append(
                    Config(
                        name=SEED if i == 0 else f"{SEED}-t{threads}",
                        kind="seed",
                        precision="fp32",
                        threads=threads,
                        description=(
                            "bench/seed_server.py: FastAPI + PyTorch eager FP32, one forward per request, "
                            f"uvicorn 1 worker, torch {threads} thread(s)"
                        ),
                    )
                )
        elif name == HTTP:
            out.append(
                Config(
                    name=HTTP,
                    kind="http",
                    precision="none",
                    description=(
                        "bench/http_floor.py: the service's uvicorn stack answering a fixed 700-byte JSON body "
                        "after reading the request, no validation and no model (what HTTP alone costs)"
                    ),
                )
            )
        else:
            out.append(
                Config(
                    name=name,
                    kind="service",
                    precision=name,
                    description=f"python -m runtime --precision {name} (1 worker, defaults otherwise)",
                )
            )
    for n in args.workers:
        out.append(
            Config(
                name=f"int8-w{n}",
                kind="service",
                precision="int8",
                workers=n,
                description=f"python -m runtime --precision int8 --workers {n}",
            )
        )
    for v in args.variant:
        name, _, rest = v.partition("=")
        precision, *pairs = rest.split(",")
        if not name or precision not in ("int8", "fp32") or any("=" not in kv for kv in pairs):
            raise SystemExit(f"--variant {v!r}: expected NAME=int8|fp32[,EDGE_X=V...]")
        env = dict(kv.split("=", 1) for kv in pairs)
        out.append(
            Config(
                name=name,
                kind="service",
                precision=precision,
                env=env,
                description=f"python -m runtime --precision {precision} with "
                + (" ".join(f"{k}={v}" for k, v in env.items()) or "defaults"),
            )
        )
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise SystemExit(f"configuration names must be unique: {names}")
    return out


def spec_for(config: Config, port: int, args: argparse.Namespace) -> ServerSpec:
    if config.kind == "seed":
        return seed_spec(config.name, port=port, model_dir=args.model_dir, threads=config.threads)
    if config.kind == "http":
        return http_floor_spec(config.name, port=port)
    return service_spec(
        config.name,
        port=port,
        model_dir=args.model_dir,
        precision=config.precision,
        workers=config.workers,
        api_key=args.api_key,
        env=dict(config.env),
    )


def service_threads(configured: int = 0, workers: int = 1) -> int:
    """The intra-op threads one service worker uses (the service's own rule); 0 configured: its default."""
    try:
        from runtime.session import threads_per_worker
        from runtime.settings import Settings

        env_default = Settings().intra_op_threads
        return threads_per_worker(configured or env_default, workers)
    except Exception as e:  # the runtime changed shape: fall back to its documented default
        log.warning("could not read the service's thread rule (%s); assuming CPUs / workers", e)
        return configured or max(1, len(os.sched_getaffinity(0)) // workers)


def config_threads(config: Config) -> int:
    """The intra-op threads one worker of a service configuration will use."""
    return service_threads(int(config.env.get("EDGE_INTRA_OP_THREADS", 0)), config.workers)
