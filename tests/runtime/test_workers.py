"""The real process under `--workers N` and at rest: metrics that add up across workers, readiness of the whole
server, and an idle server that uses ~0 CPU (onnxruntime's spinning thread pools would show)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import market_windows, window_to_payload

from runtime.workers import WorkerGroup

REPO = Path(__file__).resolve().parents[2]
KEY = "test-key-0123456789"
AUTH = {"content-type": "application/json", "x-api-key": KEY}
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str, timeout: float = 10) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextmanager
def _server(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime", "serve", "--port", str(port), *args],
        cwd=REPO,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "EDGE_API_KEYS": KEY, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(
                    f"server exited with {proc.returncode}:\n{proc.stdout.read() if proc.stdout else ''}"
                )
            try:
                if _get(port, "/ready", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        else:
            raise AssertionError("server did not become ready in 60 s")
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: uvicorn's supervisor stops the workers, which clean up after themselves
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(10)


def _send(port: int, bodies: list[bytes], connections: int) -> list[int]:
    """Each body once, over `connections` keep-alive connections in parallel; the statuses."""
    statuses: list[int] = []
    lock = threading.Lock()

    def client(share: list[bytes]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for body in share:
                conn.request("POST", "/predict", body=body, headers=AUTH)
                response = conn.getresponse()
                response.read()
                with lock:
                    statuses.append(response.status)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(bodies[i::connections],)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return statuses


def _sample(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (Prometheus text format)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


def _bodies(k: int) -> list[bytes]:
    windows = market_windows(16, seed=3)
    return [json.dumps(window_to_payload(windows[i % 16], "BTC/USDT")).encode() for i in range(k)]


@pytest.mark.slow
def test_two_workers_metrics_add_up_to_the_requests_sent(tmp_path: Path) -> None:
    shared = tmp_path / "metrics"
    k = 120
    with _server("--workers", "2", env={"PROMETHEUS_MULTIPROC_DIR": str(shared)}) as (proc, port):
        statuses = _send(port, _bodies(k), connections=6)
        assert statuses == [200] * k
        pids = {int(p.name.split("-")[1]) for p in shared.glob("ready-*")}
        assert len(pids) == 2 and proc.pid not in pids, "each of the 2 workers marks itself ready"
        # Several scrapes: each lands on whichever worker accepts it, and every one reports the whole server.
        for _ in range(6):
            status, text = _get(port, "/metrics")
            assert status == 200
            body = text.decode()
            assert _sample(body, "edge_requests_total", route="/predict", status="200") == k
            assert _sample(body, "edge_model_info", precision="int8") == 1
        # In flight, summed over live workers: this scrape itself once the last responses' bookkeeping is done
        # (a client can read a response a moment before its worker decrements the gauge).
        in_flight = [_sample(_get(port, "/metrics")[1].decode(), "edge_requests_in_flight") for _ in range(20)]
        assert 1 in in_flight and min(in_flight) >= 1, in_flight
        files = {p.name.split("_")[0] for p in shared.glob("*.db")}
        assert "counter" in files and "histogram" in files

        # A worker dies (SIGKILL: no clean exit): uvicorn starts another; the dead one's requests still count,
        # its marker goes, and /ready is 200 again once the replacement is warm.
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            markers = {int(p.name.split("-")[1]) for p in shared.glob("ready-*")}
            if _get(port, "/ready")[0] == 200 and victim not in markers and len(markers) == 2:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"no replacement worker became ready; markers {markers}")
        body = _get(port, "/metrics")[1].decode()
        assert _sample(body, "edge_requests_total", route="/predict", status="200") == k
        assert not (shared / f"gauge_livesum_{victim}.db").exists(), "the dead worker's live gauges still count"
    assert not list(shared.glob("*.db")) and not list(shared.glob("ready-*")), "left over after exit"


def test_ready_needs_every_worker_alive_and_ready(tmp_path: Path) -> None:
    me = WorkerGroup(tmp_path, workers=2)
    me.mark_ready()
    assert me.ready_workers() == 1 and not me.all_ready()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        WorkerGroup(tmp_path, workers=2, pid=other.pid).mark_ready()
        assert me.all_ready()
    finally:
        other.kill()
        other.wait(10)
    assert not me.all_ready(), "a dead worker's marker still counted"
    assert not (tmp_path / f"ready-{other.pid}").exists()
    me.mark_not_ready()
    assert me.ready_workers() == 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime + stime


def _idle_rate(pid: int, seconds: float) -> float:
    before, started = _cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (_cpu_seconds(pid) - before) / (time.monotonic() - started)


#: CPU-seconds per second an idle server may use. uvicorn's once-a-second date-header timer and the drift
#: monitor's sleep cost ~0.1-0.5 % of a CPU; a spinning onnxruntime pool costs ~1 CPU per spinning thread.
IDLE_CPU_BOUND = 0.05


@pytest.mark.slow
def test_an_idle_server_uses_about_no_cpu_also_after_a_burst() -> None:
    with _server("--instances", "2") as (proc, port):
        time.sleep(1.0)  # the drift monitor's FP32 reference loads in the background after /ready
        idle = _idle_rate(proc.pid, 3.0)
        assert _send(port, _bodies(200), connections=8) == [200] * 200
        after = _idle_rate(proc.pid, 3.0)
    print(f"idle server: {idle:.4f} CPU-s/s at rest, {after:.4f} after a burst of 200 requests")
    assert idle < IDLE_CPU_BOUND, f"idle server used {idle:.3f} CPU-seconds per second"
    assert after < IDLE_CPU_BOUND, f"after a burst the server used {after:.3f} CPU-seconds per second"
