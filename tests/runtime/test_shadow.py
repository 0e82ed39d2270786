"""Shadow before promotion (EDGE_SHADOW_VERSION): metrics move with traffic, agreement is exact for the same
model, an UNAVAILABLE candidate refuses start-up, and reloads leak neither threads nor memory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import copy_version, market_windows, window_to_payload
from fake_model import write_fake_model_dir

from runtime.constants import INT8_FILE

REPO = Path(__file__).resolve().parents[2]
KEY = "shadow-key-0123456"
AUTH = {"x-api-key": KEY}
LOAD = "/v2/repository/models/signal_predictor/load"


@pytest.fixture
def repo(tmp_path: Path, committed_model_dir: Path) -> Path:
    """models/ = the committed model (1.0.0) + 1.0.1 (a copy) + 2.0.0 (another model) + a tampered copy."""
    root = tmp_path / "models"
    copy_version(committed_model_dir, root)
    for version in ("1.0.1", "tampered"):
        copy_version(committed_model_dir, root / version)
        manifest = json.loads((root / version / "manifest.json").read_text())
        (root / version / "manifest.json").write_text(json.dumps({**manifest, "version": version}))
    corrupt = root / "tampered" / INT8_FILE
    corrupt.write_bytes(corrupt.read_bytes()[:-1])
    write_fake_model_dir(root / "2.0.0", version="2.0.0")
    return root


def _predict(client: Any, n: int, seed: int = 0) -> None:
    for window in market_windows(n, seed):
        response = client.post("/predict", json=window_to_payload(window), headers=AUTH)
        assert response.status_code == 200, response.text


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of `name` with exactly these labels (in any order) in a Prometheus text exposition."""
    for match in re.finditer(rf"^{re.escape(name)}\{{([^}}]*)\}} (\S+)$", text, re.MULTILINE):
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if found == labels:
            return float(match.group(2))
    return None


def _wait_for(client: Any, name: str, value: float, timeout: float = 20.0, **labels: str) -> str:
    """The /metrics text once `name{labels}` reaches `value` (the shadow thread computes in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        text: str = client.get("/metrics").text
        seen = _sample(text, name, **labels)
        if seen == value:
            return text
        if time.monotonic() > deadline:
            pytest.fail(f"{name}{labels} stayed at {seen}, expected {value}")
        time.sleep(0.05)


def _shadow_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "edge-shadow")


def test_shadowing_the_same_model_agrees_exactly(make_client: Any, repo: Path) -> None:
    client = make_client(
        model_dir=repo, api_keys=[KEY], shadow_version="1.0.0", shadow_sample_rate=1.0, drift_sample_rate=0
    )
    pair = {"serving_version": "1.0.0", "shadow_version": "1.0.0"}
    assert _sample(client.get("/metrics").text, "edge_shadow_active", shadow_version="1.0.0") == 1.0
    _predict(client, 20)
    text = _wait_for(client, "edge_shadow_windows_total", 20.0, **pair)
    assert _sample(text, "edge_shadow_argmax_agreements_total", **pair) == 20.0
    assert _sample(text, "edge_shadow_agreement_ratio", **pair) == 1.0
    assert _sample(text, "edge_shadow_abs_diff_count", **pair) == 20.0
    assert _sample(text, "edge_shadow_abs_diff_bucket", **pair, le="1e-05") == 20.0  # bit-identical answers
    assert _sample(text, "edge_shadow_abs_diff_sum", **pair) == 0.0


def test_shadow_metrics_move_with_traffic_and_follow_the_served_version(make_client: Any, repo: Path) -> None:
    client = make_client(
        model_dir=repo, api_keys=[KEY], shadow_version="2.0.0", shadow_sample_rate=1.0, drift_sample_rate=0
    )
    pair = {"serving_version": "1.0.0", "shadow_version": "2.0.0"}
    assert _sample(client.get("/metrics").text, "edge_shadow_windows_total", **pair) is None  # no traffic yet
    _predict(client, 10)
    text = _wait_for(client, "edge_shadow_windows_total", 10.0, **pair)
    assert (_sample(text, "edge_shadow_abs_diff_sum", **pair) or 0.0) > 0.01  # another model: it differs
    ratio = _sample(text, "edge_shadow_agreement_ratio", **pair)
    agreements = _sample(text, "edge_shadow_argmax_agreements_total", **pair)
    assert ratio is not None and agreements is not None and ratio == agreements / 10
    _predict(client, 5, seed=1)
    _wait_for(client, "edge_shadow_windows_total", 15.0, **pair)

    # After a reload the served version's figures are a new series: two models' numbers never mix.
    assert client.post(LOAD, json={"parameters": {"version": "1.0.1"}}, headers=AUTH).status_code == 200
    _predict(client, 4, seed=2)
    text = _wait_for(client, "edge_shadow_windows_total", 4.0, serving_version="1.0.1", shadow_version="2.0.0")
    assert _sample(text, "edge_shadow_windows_total", **pair) == 15.0


@pytest.mark.parametrize(
    ("version", "message"),
    [
        pytest.param(
            "tampered", "EDGE_SHADOW_VERSION 'tampered' is UNAVAILABLE: 'signal_predictor.int8.onnx'", id="tampered"
        ),
        pytest.param("7.7.7", "EDGE_SHADOW_VERSION '7.7.7' is not in the model repository", id="absent"),
    ],
)
def test_an_unavailable_shadow_refuses_start(repo: Path, version: str, message: str) -> None:
    from starlette.testclient import TestClient

    from runtime.errors import ConfigurationError
    from runtime.http.app import create_app
    from runtime.settings import Settings

    before = threading.active_count()
    app = create_app(Settings(model_dir=repo, intra_op_threads=1, shadow_version=version, drift_sample_rate=0))
    with pytest.raises(ConfigurationError, match=re.escape(message)), TestClient(app):
        pass
    assert _shadow_threads() == 0 and threading.active_count() <= before


def test_the_cli_refuses_an_unavailable_shadow_before_binding(repo: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "runtime", "--model-dir", str(repo), "--port", "0", "--shadow-version", "tampered"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "cannot start: EDGE_SHADOW_VERSION 'tampered' is UNAVAILABLE" in result.stderr
    assert "does not match its manifest" in result.stderr


_EXECUTOR_THREAD = re.compile(r"asyncio_\d+")


def _non_executor_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if not _EXECUTOR_THREAD.fullmatch(t.name))


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_reloads_with_a_shadow_leak_no_thread_and_no_memory(make_client: Any, repo: Path) -> None:
    baseline = threading.active_count()
    client = make_client(
        model_dir=repo, api_keys=[KEY], shadow_version="2.0.0", shadow_sample_rate=1.0, drift_sample_rate=0
    )
    assert _shadow_threads() == 1

    def cycle() -> None:
        for version in ("1.0.1", "1.0.0"):
            response = client.post(LOAD, json={"parameters": {"version": version}}, headers=AUTH)
            assert response.status_code == 200, response.text
            _predict(client, 2)

    for _ in range(3):  # warm-up: allocator pools and onnxruntime's arenas reach their steady size
        cycle()
    warm = _rss_kib()
    # Counted after the warm-up. The loop's default executor (asyncio.to_thread: `asyncio_N` threads) keeps the
    # threads it started and may start another whenever a call comes while its workers are busy; it is bounded by
    # its max_workers, so those are counted against that bound, everything else by name.
    running = _non_executor_threads()
    for _ in range(10):
        cycle()
    grown_mib = (_rss_kib() - warm) / 1024
    print(f"RSS after warm-up {warm / 1024:.1f} MiB, grown {grown_mib:.2f} MiB over 20 reloads")
    assert _shadow_threads() == 1 and _non_executor_threads() == running
    executor = [t for t in threading.enumerate() if _EXECUTOR_THREAD.fullmatch(t.name)]
    assert len(executor) <= min(32, (os.cpu_count() or 1) + 4), sorted(t.name for t in executor)
    # 20 more model loads of ~1 MB graphs: a leak of one session per load would be tens of MB.
    assert grown_mib < 20, f"RSS grew {grown_mib:.1f} MiB over 20 reloads"

    # Loading the shadow version promotes it: its thread stops and the gauge says so.
    assert client.post(LOAD, json={"parameters": {"version": "2.0.0"}}, headers=AUTH).status_code == 200
    assert _shadow_threads() == 0
    assert _sample(client.get("/metrics").text, "edge_shadow_active", shadow_version="2.0.0") == 0.0
    client.__exit__(None, None, None)
    assert threading.active_count() <= baseline
