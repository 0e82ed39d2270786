"""examples/: the request is the seed's contract on real data, and the client and curl line work on a real server."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
KEY = "example-key-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/ready")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@pytest.fixture(scope="module")
def server_port() -> Iterator[int]:
    """`python -m runtime` on the committed model, on a free port, with one API key."""
    port = _free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "EDGE_API_KEYS": KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime", "--port", str(port), "--intra-op-threads", "1"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not _ready(port):
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                raise AssertionError(f"server exited with {proc.returncode}:\n{out}")
            if time.monotonic() > deadline:
                raise AssertionError("server did not become ready in 30 s")
            time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait(10)


def run_client(port: int, *args: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "EDGE_API_KEY": key,
        "EDGE_URL": f"http://127.0.0.1:{port}/predict",
    }
    return subprocess.run(
        [sys.executable, str(EXAMPLES / "client.py"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_example_request_is_the_bench_payload_and_valid() -> None:
    from runtime.schemas import PredictionRequest

    body = json.loads((EXAMPLES / "predict_request.json").read_text())
    request = PredictionRequest.model_validate(body)
    assert (request.symbol, request.exchange, len(request.sequence)) == ("SPX/USD", "binance", 60)
    assert all(c["timestamp"].endswith("Z") for c in body["sequence"])

    payload = pytest.importorskip("bench.payload")
    pytest.importorskip("arch")
    assert body == payload.request_body(payload.sp500_candles())


def test_client_prints_the_signal_and_risk(server_port: int) -> None:
    result = run_client(server_port)
    assert result.returncode == 0, result.stderr
    conn = http.client.HTTPConnection("127.0.0.1", server_port, timeout=30)
    try:
        conn.request(
            "POST",
            "/predict",
            (EXAMPLES / "predict_request.json").read_bytes(),
            {"Content-Type": "application/json", "X-API-Key": KEY},
        )
        answer = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    pred, risk = answer["prediction"], answer["risk"]
    assert result.stdout.splitlines() == [
        f"signal {pred['signal']} (confidence {pred['confidence']:.2f})",
        f"risk {risk['risk_level']} ({risk['risk_score']:g}/10): {risk['recommendation']}",
    ]


def test_client_exits_with_the_server_message_on_errors(server_port: int, tmp_path: Path) -> None:
    result = run_client(server_port, key="wrong-key-0123456789")
    assert result.returncode == 1
    assert result.stderr.startswith("HTTP 401: ")

    body = json.loads((EXAMPLES / "predict_request.json").read_text())
    body["exchange"] = "nyse"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(body))
    result = run_client(server_port, str(bad))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "HTTP 422: Validation Error",
        "  body.exchange: Input should be 'binance', 'coinbase', 'kraken', 'bybit' or 'okx'",
    ]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_curl_line_answers_a_prediction(server_port: int) -> None:
    line = next(x for x in (EXAMPLES / "predict.sh").read_text().splitlines() if x.startswith("curl "))
    assert "http://127.0.0.1:8000/predict" in line
    line = line.replace("127.0.0.1:8000", f"127.0.0.1:{server_port}")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "EDGE_API_KEY": KEY}
    result = subprocess.run(["bash", "-c", line], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["prediction"]["signal"] in ("sell", "hold", "buy")
    assert (answer["prediction"]["symbol"], answer["prediction"]["exchange"]) == ("SPX/USD", "binance")
    assert set(answer["risk"]) >= {"risk_score", "risk_level", "factors", "recommendation"}


def test_stream_client_replays_the_csv_bar_by_bar(server_port: int) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "EDGE_API_KEY": KEY,
        "EDGE_STREAM_URL": f"ws://127.0.0.1:{server_port}/stream",
    }
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "stream_client.py")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    bars = (EXAMPLES / "sp500_daily.csv").read_text().splitlines()[1:]
    assert len(lines) == len(bars) == 80
    assert lines[0] == f"{bars[0].split(',')[0]} warming 1/60"
    assert lines[58].endswith("warming 59/60")
    # The last answer is /predict's on the last 60 bars of the CSV.
    candles = [
        dict(zip(("timestamp", "open", "high", "low", "close", "volume"), (t, *map(float, rest)), strict=True))
        for t, *rest in (bar.split(",") for bar in bars[-60:])
    ]
    conn = http.client.HTTPConnection("127.0.0.1", server_port, timeout=30)
    try:
        body = json.dumps({"symbol": "SPX/USD", "exchange": "binance", "sequence": candles})
        conn.request("POST", "/predict", body, {"Content-Type": "application/json", "X-API-Key": KEY})
        answer = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    pred, risk = answer["prediction"], answer["risk"]
    assert lines[-1] == (
        f"{bars[-1].split(',')[0]} signal {pred['signal']} (confidence {pred['confidence']:.2f}) "
        f"risk {risk['risk_level']} ({risk['risk_score']:g}/10)"
    )


def test_stream_client_reports_a_refused_upgrade(server_port: int) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "EDGE_API_KEY": "wrong-key-0123456789",
        "EDGE_STREAM_URL": f"ws://127.0.0.1:{server_port}/stream",
    }
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "stream_client.py")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("HTTP 401: ") and '"UNAUTHORIZED"' in result.stderr
