"""Hostile and broken clients against the real process (loopback only; every loop bounded in count and time).

Each test runs one attack while a normal client sends `/predict` on its own keep-alive connection and checks
that the server stays ready, answers that client within `NORMAL_P99_S`, and that memory and threads stay bounded.
The figures these tests were written against are in SECURITY.md ("Hostile clients").
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_server import KEY, _in_flight, _predict_body, _request, server

AUTH = {"content-type": "application/json", "x-api-key": KEY}
#: The normal client's p99 while an attack runs. The issue's bar is 50 ms on 2 idle CPUs; these tests share their
#: CPUs with whatever else runs, so they allow twice that.
NORMAL_P99_S = 0.100
RSS_BOUND_KB = 50 * 1024


def _status(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "Threads"):
            fields[name] = int(value.split()[0])
    return fields


def _cpu_s(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(stat[11]) + int(stat[12])) / 100  # utime + stime, in clock ticks of 1/100 s


class NormalClient:
    """POST /predict back to back on one keep-alive connection (reconnecting if closed) until stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.results: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._body = _predict_body(seed=3)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            while not self._stop.is_set() and len(self.results) < 5000:
                start = time.perf_counter()
                conn.request("POST", "/predict", body=self._body, headers=AUTH)
                response = conn.getresponse()
                response.read()
                self.results.append((response.status, time.perf_counter() - start))
                time.sleep(0.01)
        finally:
            conn.close()

    def __enter__(self) -> NormalClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        deadline = time.monotonic() + 5
        while len(self.results) < 20 and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.05)  # an attack that ends at once still leaves the client a sample to judge
        self._stop.set()
        self._thread.join(15)

    def p99(self) -> float:
        latencies = sorted(t for _, t in self.results)
        return latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]

    def summary(self) -> str:
        statuses = sorted({s for s, _ in self.results})
        return f"normal client: {len(self.results)} requests, statuses {statuses}, p99 {self.p99() * 1000:.1f} ms"

    def check(self, p99_bound: float = NORMAL_P99_S) -> None:
        print(self.summary())  # the figures SECURITY.md quotes (pytest -s)
        assert len(self.results) >= 20, self.results
        statuses = {s for s, _ in self.results}
        assert statuses == {200}, statuses
        assert self.p99() < p99_bound, f"p99 {self.p99() * 1000:.1f} ms"


@contextmanager
def _sockets(port: int, n: int) -> Iterator[list[socket.socket]]:
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]
    try:
        yield socks
    finally:
        for s in socks:
            s.close()


def _read_until_closed(s: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes (or `limit` seconds pass), and when it closed."""
    start = time.monotonic()
    s.settimeout(0.2)
    received = b""
    while time.monotonic() - start < limit:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return received, time.monotonic() - start


def _assert_json_error(raw: bytes, status: int, code: str) -> None:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), raw[:200]
    assert b"connection: close" in head.lower() and b"content-type: application/json" in head.lower()
    assert json.loads(body)["code"] == code


def test_slowloris_connections_are_closed_after_the_header_timeout(tmp_path: Path) -> None:
    """40 connections dribbling an unfinished header block and 20 that send nothing: all closed at ~1 s (408 to
    those that sent something), while the normal client is served."""
    with server(tmp_path, "--header-timeout-s", "1") as (_, port), NormalClient(port) as normal:
        with _sockets(port, 40) as dribblers, _sockets(port, 20) as silent:
            opened = time.monotonic()
            for s in dribblers:
                s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n")
            for _ in range(3):  # a header line every 0.3 s: never a complete block
                time.sleep(0.3)
                for s in dribblers:
                    s.sendall(b"x-a: b\r\n")
            answers = [_read_until_closed(s, 5) for s in dribblers]
            closed = [_read_until_closed(s, 5) for s in silent]
            elapsed = time.monotonic() - opened
        assert _request(port, "GET", "/ready")[0] == 200
    normal.check()
    print(f"slowloris: 40 dribblers answered 408 and 20 silent connections closed, all by {elapsed:.2f} s")
    for raw, _ in answers:
        _assert_json_error(raw, 408, "REQUEST_TIMEOUT")
    assert all(raw == b"" for raw, _ in closed), closed[:3]
    assert elapsed < 2.5  # a 1 s timeout, then the answers


def test_slow_bodies_release_their_admission_slots(tmp_path: Path) -> None:
    """4 slow bodies (a byte every 0.5 s) hold all 4 admission slots until the 1 s body timeout: then 408, the
    slots are free and /predict is a 200 again."""
    body = _predict_body(seed=2)
    head = (
        f"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-api-key: {KEY}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    flags = ("--body-timeout-s", "1", "--max-pending-requests", "4")
    with server(tmp_path, *flags) as (_, port), _sockets(port, 4) as slow:
        started = time.monotonic()
        for s in slow:
            s.sendall(head + body[:1])
        time.sleep(0.3)
        held = _request(port, "POST", "/predict", body, AUTH)[0]
        ready_while_held = _request(port, "GET", "/ready")
        for i in range(1, 3):
            time.sleep(0.5)
            for s in slow:
                try:
                    s.sendall(body[i : i + 1])
                except OSError:
                    pass  # already answered and closed
        answers = [_read_until_closed(s, 5) for s in slow]
        elapsed = time.monotonic() - started
        assert _in_flight(port) == 0
        with NormalClient(port) as normal:
            time.sleep(1)
        assert _request(port, "GET", "/ready")[0] == 200
    print(f"slow bodies: /predict during the attack {held}; all four 408 and closed after {elapsed:.2f} s")
    assert held == 503  # every slot was taken by a slow body while it was arriving
    assert ready_while_held == (503, {**ready_while_held[1], "error": "not ready: saturated"}), ready_while_held
    for raw, _ in answers:
        _assert_json_error(raw, 408, "REQUEST_TIMEOUT")
    assert elapsed < 4
    normal.check()


#: The pipelining attacker runs in its own process: a sender looping in this one would hold the GIL from the normal
#: client's thread and show up as server latency.
_PIPELINER = """
import socket, sys, time
request = b"GET /health HTTP/1.1\\r\\nhost: x\\r\\n\\r\\n"
payload = request * (5 * 1024 * 1024 // len(request))
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.setblocking(False)
sent, deadline = 0, time.monotonic() + 4
while sent < len(payload) and time.monotonic() < deadline:
    try:
        sent += s.send(payload[sent : sent + 65536])
    except BlockingIOError:
        time.sleep(0.01)  # the server stopped reading: the socket buffers are full
print(sent, flush=True)
sys.stdin.read()  # hold the connection open, never reading, until told to go
"""


def test_pipelined_requests_never_read_keep_memory_bounded(tmp_path: Path) -> None:
    """5 MB of pipelined GET /health on one connection that never reads: the server stops reading at 8 queued
    requests, so RSS stays within 50 MB and other clients are served."""
    with server(tmp_path) as (proc, port):
        before = _status(proc.pid)
        with NormalClient(port) as normal:
            attacker = subprocess.Popen(
                [sys.executable, "-c", _PIPELINER, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            try:
                assert attacker.stdout is not None
                sent = int(attacker.stdout.readline() or 0)
                time.sleep(0.5)
                during = _status(proc.pid)
                assert _request(port, "GET", "/ready")[0] == 200
            finally:
                attacker.communicate("", timeout=10)
        time.sleep(0.5)
        after = _status(proc.pid)
    print(f"pipelining: {sent >> 10} KiB sent; RSS {before}, during {during}, after {after}")
    normal.check()
    assert during["VmRSS"] - before["VmRSS"] < RSS_BOUND_KB, (before, during)
    assert after["VmRSS"] - before["VmRSS"] < RSS_BOUND_KB, (before, after)


def test_an_unfinished_huge_header_is_refused_at_the_budget(tmp_path: Path) -> None:
    """Past the 16 KiB header budget: 431 and close, before the parser buffers more; 8 MB of header costs the
    server next to no CPU or memory."""
    with server(tmp_path) as (proc, port):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nx-big: " + b"a" * (20 << 10))
            raw, _ = _read_until_closed(s, 5)
        _assert_json_error(raw, 431, "HEADERS_TOO_LARGE")
        before, cpu = _status(proc.pid), _cpu_s(proc.pid)
        with NormalClient(port) as normal:
            for _ in range(8):
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(b"GET /health HTTP/1.1\r\nx-big: ")
                    try:
                        for _ in range(128):  # 8 MB in 64 KiB writes
                            s.sendall(b"a" * 65536)
                    except OSError:
                        pass  # refused and closed: the rest is never read
        cpu = _cpu_s(proc.pid) - cpu
        after = _status(proc.pid)
        assert _request(port, "GET", "/ready")[0] == 200
    print(f"huge headers: 8 x 8 MB; server CPU {cpu:.2f} s; RSS {before} -> {after}")
    normal.check()
    assert after["VmRSS"] - before["VmRSS"] < RSS_BOUND_KB, (before, after)
    assert cpu < 1.5, f"{cpu:.2f} s of server CPU (the normal client's requests included)"


@pytest.mark.parametrize("concurrent", [50])
def test_a_reload_burst_leaves_threads_and_memory_at_baseline(tmp_path: Path, concurrent: int) -> None:
    """50 concurrent /admin/reload: one runs, the others get 409 RELOAD_IN_PROGRESS; one drift monitor remains,
    so threads return to the baseline and RSS stays within 50 MB of it."""

    def settled(pid: int) -> dict[str, int]:
        # The drift reference loads in the background after each reload: wait until the thread count is steady.
        last, stable_since = _status(pid), time.monotonic()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and time.monotonic() - stable_since < 1.5:
            time.sleep(0.25)
            now = _status(pid)
            if now["Threads"] != last["Threads"]:
                stable_since = time.monotonic()
            last = now
        return last

    with server(tmp_path) as (proc, port):
        # One reload first: it starts the thread-pool worker that reloads run on (kept for the next one).
        assert _request(port, "POST", "/admin/reload", None, AUTH)[0] == 200
        baseline = settled(proc.pid)
        statuses: list[tuple[int, str]] = []
        gate = threading.Barrier(concurrent)

        def reload() -> None:
            gate.wait()
            status, body = _request(port, "POST", "/admin/reload", None, AUTH)
            statuses.append((status, body.get("code", body.get("status", ""))))

        with NormalClient(port) as normal:
            threads = [threading.Thread(target=reload) for _ in range(concurrent)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        after = settled(proc.pid)
        assert _request(port, "GET", "/ready")[0] == 200
    print(f"reload burst: {sorted(set(statuses))} x{len(statuses)}; {baseline} -> {after}")
    normal.check()
    assert len(statuses) == concurrent
    assert {s for s in statuses} <= {(200, "reloaded"), (409, "RELOAD_IN_PROGRESS")}, statuses
    assert (409, "RELOAD_IN_PROGRESS") in statuses and (200, "reloaded") in statuses
    assert after["Threads"] == baseline["Threads"], (baseline, after)
    assert after["VmRSS"] - baseline["VmRSS"] < RSS_BOUND_KB, (baseline, after)


def _read_responses(s: socket.socket, n: int, limit: float = 10) -> list[tuple[bytes, bytes]]:
    """`n` responses (status line, body) read off a keep-alive connection, in order."""
    buf, out, deadline = b"", [], time.monotonic() + limit
    s.settimeout(1)
    while len(out) < n and time.monotonic() < deadline:
        head, sep, rest = buf.partition(b"\r\n\r\n")
        if sep:
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
            )
            if len(rest) >= length:
                out.append((head.split(b"\r\n")[0], rest[:length]))
                buf = rest[length:]
                continue
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return out


def test_the_protocol_still_parses_every_framing(tmp_path: Path) -> None:
    """What the read shaping must not break: 40 pipelined requests past the limit of 8 (bodies mixed in) answered
    in order; a head and a body split one byte per read; a chunked body; an end-of-head split across reads."""
    body = _predict_body(seed=4)
    post = (
        f"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-api-key: {KEY}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
    get = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"
    with server(tmp_path) as (_, port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"".join(post if i % 5 == 0 else get for i in range(40)))
            answers = _read_responses(s, 40)
        assert [status for status, _ in answers] == [b"HTTP/1.1 200 OK"] * 40
        assert all(("prediction" in json.loads(b)) == (i % 5 == 0) for i, (_, b) in enumerate(answers))

        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(len(post[:400])):
                s.sendall(post[i : i + 1])
                if i % 50 == 0:
                    time.sleep(0.005)  # separate reads on the server
            s.sendall(post[400:])
            for cut in (len(get) - 3, len(get) - 2, len(get) - 1):  # "\r\n\r\n" split at each place
                s.sendall(get[:cut])
                time.sleep(0.02)
                s.sendall(get[cut:])
            answers = _read_responses(s, 4)
        assert [status for status, _ in answers] == [b"HTTP/1.1 200 OK"] * 4

        chunked = (
            f"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-api-key: {KEY}\r\n"
            "transfer-encoding: chunked\r\n\r\n"
        ).encode()
        half = len(body) // 2
        for part in (body[:half], body[half:]):
            chunked += b"%x\r\n" % len(part) + part + b"\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(chunked + b"0\r\n\r\n" + get)
            answers = _read_responses(s, 2)
        assert [status for status, _ in answers] == [b"HTTP/1.1 200 OK"] * 2
        assert "prediction" in json.loads(answers[0][1])


def test_past_the_connection_cap_new_connections_get_only_the_probes(tmp_path: Path) -> None:
    """24 idle connections against a cap of 16: a new connection gets a JSON 503 for /predict but its probes
    answered; a connection opened before the cap was reached is served as usual."""
    body = _predict_body(seed=6)
    with server(tmp_path, "--max-connections", "16") as (_, port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as first, _sockets(port, 24):
            time.sleep(0.3)  # let the server accept them all
            status, answer = _request(port, "POST", "/predict", body, AUTH)
            probes = [_request(port, "GET", path)[0] for path in ("/health", "/ready", "/v2/health/ready")]
            post = (
                f"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-api-key: {KEY}\r\n"
                f"content-length: {len(body)}\r\n\r\n"
            ).encode() + body
            first.sendall(post)
            [(existing, _)] = _read_responses(first, 1)
    assert (status, answer["code"]) == (503, "OVERLOADED"), answer
    assert probes == [200, 200, 200]
    assert existing == b"HTTP/1.1 200 OK"
