"""Start, probe, measure and stop the servers under test.

Every server runs in its own session (process group), so stopping it reaches uvicorn's worker processes too.
Memory and CPU are read from /proc for the whole process tree, so multi-worker configurations are charged
for every worker.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("bench.servers")

REPO_ROOT = Path(__file__).resolve().parent.parent
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port free on loopback right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerSpec:
    """How to start one configuration. ``ready_path`` must answer 200 only once the model is loaded."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/ready"
    kind: str = "service"  # "service", "seed" or "http" (the HTTP floor: no validation, no model)
    precision: str = "int8"
    workers: int = 1


def service_spec(
    name: str,
    *,
    port: int,
    model_dir: str,
    precision: str,
    workers: int,
    api_key: str,
    env: dict[str, str] | None = None,
    extra: Sequence[str] = (),
) -> ServerSpec:
    argv = [
        sys.executable,
        "-m",
        "runtime",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--precision",
        precision,
    ]
    if "EDGE_MODEL_DIR" not in (env or {}):  # a variant may serve another model directory
        argv += ["--model-dir", model_dir]
    if workers != 1:
        argv += ["--workers", str(workers)]
    argv += list(extra)
    return ServerSpec(
        name=name,
        argv=argv,
        env={"EDGE_API_KEYS": api_key, **(env or {})},
        kind="service",
        precision=precision,
        workers=workers,
    )


def seed_spec(name: str, *, port: int, model_dir: str, threads: int | None) -> ServerSpec:
    argv = [
        sys.executable,
        "-m",
        "bench.seed_server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model-dir",
        model_dir,
    ]
    if threads is not None:
        argv += ["--threads", str(threads)]
    return ServerSpec(name=name, argv=argv, ready_path="/health", kind="seed", precision="fp32")


def http_floor_spec(name: str, *, port: int) -> ServerSpec:
    argv = [sys.executable, "-m", "bench.http_floor", "--host", "127.0.0.1", "--port", str(port)]
    return ServerSpec(name=name, argv=argv, kind="http", precision="none")


class Server:
    """A running server: its process group, its port, and /proc readings of its process tree."""

    def __init__(self, spec: ServerSpec, port: int, log_dir: Path) -> None:
        self.spec = spec
        self.port = port
        self.log_path = log_dir / f"{spec.name}.{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, **self.spec.env}
        env.setdefault("PYTHONUNBUFFERED", "1")
        # Both servers import from the repository (runtime/, training/, bench/), wherever bench is run from.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = self.log_path.open("wb")
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            self.spec.argv,
            cwd=REPO_ROOT,
            env=env,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        logf.close()

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float = 60.0, poll_s: float = 0.005) -> float:
        """Seconds from spawn to the first 200 on the ready path; raises if it dies or times out."""
        assert self.proc is not None
        deadline = self.started_at + timeout_s
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.spec.name} exited with {self.proc.returncode} before ready; log tail:\n{self.log_tail()}"
                )
            status, _ = http_request(self.port, "GET", self.spec.ready_path, timeout=1.0, quiet=True)
            if status == 200:
                return time.perf_counter() - self.started_at
            time.sleep(poll_s)
        raise TimeoutError(f"{self.spec.name} not ready within {timeout_s:.0f}s; log tail:\n{self.log_tail()}")

    def wait_idle(self, *, cpu_fraction: float = 0.1, window_s: float = 0.2, timeout_s: float = 60.0) -> float:
        """Wait until the tree uses less than ``cpu_fraction`` of a CPU; seconds waited.

        A server that fell behind keeps computing requests whose clients wrk has already dropped; that backlog
        must not run during the next configuration's measurement.
        """
        t0 = time.perf_counter()
        prev = self.cpu_seconds()
        while time.perf_counter() - t0 < timeout_s:
            time.sleep(window_s)
            cur = self.cpu_seconds()
            if (cur - prev) / window_s < cpu_fraction:
                break
            prev = cur
        return time.perf_counter() - t0

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left."""
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the leader's pid is the group id
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM for %.0fs; killing", self.spec.name, grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)  # stragglers (workers) even after the leader exited
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.proc = None

    # -- /proc readings of the process tree ------------------------------------------------------------------

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid) if self.proc is not None else []

    def memory(self, *, pss: bool = False) -> dict[str, float]:
        """Sum over the tree, in MB (1e6 bytes): VmRSS, VmHWM and optionally PSS (shared pages split)."""
        out = {"rss_mb": 0.0, "hwm_mb": 0.0, "processes": 0.0}
        if pss:
            out["pss_mb"] = 0.0
        for pid in self.pids():
            st = read_status_kb(pid)
            if not st:
                continue
            out["processes"] += 1
            out["rss_mb"] += st.get("VmRSS", 0) * 1024 / 1e6
            out["hwm_mb"] += st.get("VmHWM", 0) * 1024 / 1e6
            if pss:
                out["pss_mb"] += read_pss_kb(pid) * 1024 / 1e6
        return out

    def cpu_seconds(self) -> float:
        return sum(read_cpu_seconds(pid) for pid in self.pids())


def process_tree(root: int) -> list[int]:
    """root and all its descendants (scanning /proc for parent ids; no psutil needed)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def read_status_kb(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(rest.split()[0])
    except OSError:
        return {}
    return out


def read_pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def read_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (threads included), in seconds."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # fields 14 and 15 of proc(5)


class MemorySampler:
    """Samples a server's tree memory every ``interval_s`` while a load run is in progress."""

    def __init__(self, server: Server, interval_s: float = 0.25) -> None:
        self.server = server
        self.interval_s = interval_s
        self.peak_rss_mb = 0.0
        self.pss_mb: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.interval_s):
            n += 1
            m = self.server.memory(pss=(n == 8))  # one PSS reading ~2 s into the run (smaps_rollup is costly)
            self.peak_rss_mb = max(self.peak_rss_mb, m["rss_mb"])
            if "pss_mb" in m:
                self.pss_mb = m["pss_mb"]

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    quiet: bool = False,
) -> tuple[int, bytes]:
    """One HTTP/1.1 request on loopback; ``(0, b'')`` when nothing listens yet and ``quiet`` is set."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    except OSError:
        if quiet:
            return 0, b""
        raise
    finally:
        conn.close()


def post_predict(port: int, body: bytes, api_key: str) -> tuple[int, dict[str, Any] | None, bytes]:
    status, raw = http_request(
        port, "POST", "/predict", body, {"Content-Type": "application/json", "X-API-Key": api_key}
    )
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    return status, parsed, raw


@contextlib.contextmanager
def running(servers: Sequence[Server]) -> Iterator[Sequence[Server]]:
    """Stop every server on the way out, whatever happened (Ctrl-C and SIGTERM included)."""
    previous = signal.getsignal(signal.SIGTERM)

    def _on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _on_term)
    try:
        yield servers
    finally:
        for s in servers:
            try:
                s.stop()
            except Exception:  # keep stopping the others
                log.exception("could not stop %s", s.spec.name)
        signal.signal(signal.SIGTERM, previous)
