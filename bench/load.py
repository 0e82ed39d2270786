"""Load: wrk at each connection level against every verified server, in alternation, rotated each round.

Each point gets a warm-up, a wait for the server to go idle, the measured run, and a drain; memory of the process
tree is sampled during the highest connection level.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from bench import metrics, wrk
from bench.config import Config
from bench.servers import MemorySampler, Server

log = logging.getLogger("bench")

#: Per configuration: peak_rss_mb, hwm_mb, pss_mb (MB) and processes, from the highest connection level.
Memory = dict[str, dict[str, float | None]]


def load_rounds(
    servers: dict[str, Server], configs: list[Config], args: argparse.Namespace, body_file: Path
) -> tuple[list[dict[str, Any]], Memory]:
    """One row per round, configuration and connection level; the memory peaks per configuration."""
    rows: list[dict[str, Any]] = []
    memory: Memory = {}
    names = [c.name for c in configs if c.name in servers]
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
                inside0 = scrape(server) if server.spec.kind == "service" and server.spec.workers == 1 else None
                others = [s for n, s in servers.items() if n != name]
                cpu0, idle0 = server.cpu_seconds(), sum(s.cpu_seconds() for s in others)
                try:
                    if conns == top:
                        with MemorySampler(server) as sampler:
                            res = wrk.run(url, duration_s=args.duration, **common)
                        memory[name] = record_memory(memory.get(name, {}), sampler, server.memory())
                    else:
                        res = wrk.run(url, duration_s=args.duration, **common)
                except wrk.WrkError as e:
                    log.error("%s: wrk failed (%s); it is not measured further", name, e)
                    dead.add(name)
                    continue
                cpu1, idle1 = server.cpu_seconds(), sum(s.cpu_seconds() for s in others)
                # The backlog of requests wrk dropped at the end must not overlap the next point.
                drain_s = server.wait_idle()
                inside1 = scrape(server) if inside0 is not None else None
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


def record_memory(
    previous: dict[str, float | None], sampler: MemorySampler, after: dict[str, float]
) -> dict[str, float | None]:
    """The peaks over every round so far: the sampler's during the run, the tree's reading after it."""
    return {
        "peak_rss_mb": max(previous.get("peak_rss_mb") or 0.0, sampler.peak_rss_mb, after["rss_mb"]),
        "hwm_mb": max(previous.get("hwm_mb") or 0.0, after["hwm_mb"]),
        "pss_mb": sampler.pss_mb if sampler.pss_mb is not None else previous.get("pss_mb"),
        "processes": after["processes"],
    }


def scrape(server: Server) -> dict[str, dict[str, Any]] | None:
    """The server's histograms, or None (logged) when /metrics cannot be read: the load figures still stand."""
    try:
        return metrics.scrape_histograms(server.port)
    except (OSError, RuntimeError) as e:
        log.warning("%s: /metrics not read (%s); no inside-the-server figures for this point", server.spec.name, e)
        return None
