"""The real process: uvicorn + the committed model, driven over loopback."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conftest import market_windows, versioned_model_dir, window_to_payload

REPO = Path(__file__).resolve().parents[2]
KEY = "test-key-0123456789"

BLOCK_TORCH = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "onnx", "training"):
            raise ImportError(f"{name} is blocked: the runtime must not import it")
sys.meta_path.insert(0, _Block())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


@contextmanager
def server(tmp_path: Path, *args: str, block_torch: bool = False) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = _free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "EDGE_API_KEYS": KEY}
    if block_torch:
        (tmp_path / "sitecustomize.py").write_text(BLOCK_TORCH)
        env["PYTHONPATH"] = str(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime", "--port", str(port), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                output = proc.stdout.read() if proc.stdout else ""
                raise AssertionError(f"server exited with {proc.returncode}:\n{output}")
            try:
                if _request(port, "GET", "/ready", timeout=1)[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise AssertionError("server did not become ready in 30 s")
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _predict_body(seed: int = 0) -> bytes:
    return json.dumps(window_to_payload(market_windows(1, seed)[0], "BTC/USDT")).encode()


AUTH = {"content-type": "application/json", "x-api-key": KEY}


def test_serves_the_committed_model_without_torch(tmp_path: Path) -> None:
    with server(tmp_path, block_torch=True) as (_, port):
        status, body = _request(port, "POST", "/predict", _predict_body(), AUTH)
        assert status == 200, body
        assert body["prediction"]["signal"] in ("sell", "hold", "buy")
        status, ready = _request(port, "GET", "/ready")
        assert ready["precision"] == "int8" and ready["provider"] == "cpu"


def test_a_response_leaves_in_one_write(tmp_path: Path) -> None:
    """Headers and body of a /predict answer arrive together: one recv() on loopback gets the whole response."""
    body = _predict_body()
    request = (
        f"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-api-key: {KEY}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
    with server(tmp_path) as (_, port), socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        first = s.recv(65536)
    head, _, payload = first.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:"))
    assert lines[0] == b"HTTP/1.1 200 OK"
    assert len(payload) == length, "the body did not come with the headers"
    assert json.loads(payload)["prediction"]["signal"] in ("sell", "hold", "buy")


def test_interim_and_bodiless_responses_are_not_held(tmp_path: Path) -> None:
    """Through the coalescing transport: a 100 Continue arrives before the body is sent, and HEAD gets headers."""
    body = _predict_body()
    head = (
        f"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-api-key: {KEY}\r\n"
        f"expect: 100-continue\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()
    with server(tmp_path) as (_, port), socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        assert s.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body)
        answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 OK"), answer[:200]
        s.sendall(b"HEAD /health HTTP/1.1\r\nhost: x\r\n\r\n")  # the same keep-alive connection
        headers = s.recv(65536)
    assert headers.startswith(b"HTTP/1.1 200 OK") and headers.endswith(b"\r\n\r\n"), headers


def test_malformed_requests_leave_the_server_ready(tmp_path: Path) -> None:
    bad = [b"{", b"[]", b'{"symbol": "X", "exchange": "okx", "sequence": [1e400]}', b"\x00" * 100, b'{"symbol":' * 5000]
    with server(tmp_path) as (proc, port):
        for raw in bad:
            status, body = _request(port, "POST", "/predict", raw, AUTH)
            assert 400 <= status < 500 and body["code"], (raw[:20], status, body)
        status, _ = _request(port, "POST", "/predict", _predict_body(), {"content-type": "application/json"})
        assert status == 401
        assert _request(port, "GET", "/ready")[0] == 200
        assert proc.poll() is None


def _in_flight(port: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    line = next(ln for ln in text.splitlines() if ln.startswith("edge_requests_in_flight "))
    return float(line.split()[1]) - 1  # minus this /metrics request itself


def test_sigterm_drains_accepted_requests_and_exits_cleanly(tmp_path: Path) -> None:
    batch = json.dumps(
        {"requests": [window_to_payload(w) for w in market_windows(100, seed=4)]}, separators=(",", ":")
    ).encode()
    clients = 6
    results: list[Any] = []
    ready_during_drain: list[int] = []
    # A queue for every window the clients can have in flight: a 503 here would be shedding, not draining.
    with server(tmp_path, "--graceful-timeout", "20", "--drain-delay-s", "0.5", "--max-queue", "1000") as (proc, port):

        def client() -> None:
            # Each client sends several batches back to back, so work is in flight when the signal lands.
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                for _ in range(20):
                    conn.request("POST", "/predict/batch", body=batch, headers=AUTH)
                    response = conn.getresponse()
                    response.read()
                    results.append(response.status)
                    if response.getheader("connection") == "close":
                        return
            except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
                return  # the server closed an idle keep-alive connection between requests: nothing was lost
            finally:
                conn.close()

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while _in_flight(port) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        ready_during_drain.append(_request(port, "GET", "/ready")[0])  # still listening during the drain delay
        for t in threads:
            t.join(60)
        code = proc.wait(30)
    output = proc.stdout.read() if proc.stdout else ""
    assert code in (0, -signal.SIGTERM, 128 + signal.SIGTERM), output
    assert ready_during_drain == [503]
    assert results and all(r == 200 for r in results), results  # every request the server took was answered
    assert "Traceback" not in output


def test_reload_under_load_drops_no_request(tmp_path: Path, committed_model_dir: Path) -> None:
    root = versioned_model_dir(tmp_path, committed_model_dir)
    body = _predict_body(seed=1)
    statuses: list[int] = []
    versions: set[str] = set()
    stop = threading.Event()
    with server(tmp_path, "--model-dir", str(root), "--model-version", "v1") as (_, port):

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                while not stop.is_set():
                    conn.request("POST", "/predict", body=body, headers=AUTH)
                    response = conn.getresponse()
                    payload = json.loads(response.read())
                    statuses.append(response.status)
                    if response.status == 200:
                        versions.add(payload["prediction"]["model_version"])
            finally:
                conn.close()

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        reloads = []
        for target in ("v2", "v1", "v2"):
            time.sleep(0.3)
            reloads.append(_request(port, "POST", "/admin/reload", json.dumps({"version": target}).encode(), AUTH))
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(30)
    assert [status for status, _ in reloads] == [200, 200, 200], reloads
    assert [body["model_version"] for _, body in reloads] == ["v2", "v1", "v2"]
    assert len(statuses) > 50 and set(statuses) == {200}, sorted(set(statuses))
    assert versions == {"v1", "v2"}


def test_stock_uvicorn_paths_serve_the_same_answers(tmp_path: Path) -> None:
    """Every uvicorn-internal tweak off (runtime/server/): stock httptools writes, no backlog reading, no signal
    chaining. The answers are the same and a SIGTERM still stops the server cleanly."""
    body = _predict_body(seed=5)
    with server(tmp_path) as (_, port):
        tuned = _request(port, "POST", "/predict", body, AUTH)
    stock_flags = (
        "--no-coalesce-writes",
        "--no-inline-when-idle",
        "--drain-delay-s",
        "0",
        "--header-timeout-s",
        "0",
        "--body-timeout-s",
        "0",
        "--max-pipelined",
        "0",
        "--no-header-limit-while-reading",
    )
    with server(tmp_path, *stock_flags) as (proc, port):
        stock = _request(port, "POST", "/predict", body, AUTH)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert tuned[0] == stock[0] == 200
    assert stock[1]["prediction"]["probabilities"] == tuned[1]["prediction"]["probabilities"]
    assert stock[1]["audit"] == tuned[1]["audit"]
    assert code in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
