"""Triton's model configuration and statistics extensions: tritonclient.http and tritonclient.grpc against the real
process (``python -m runtime --grpc-port``), and the HTTP routes' rules through TestClient."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from conftest import market_windows
from google.protobuf import json_format
from starlette.testclient import TestClient

from runtime.constants import INPUT_NAME, MODEL_NAME, OUTPUT_NAME

REPO = Path(__file__).resolve().parents[2]
KEY = "triton-key-0123456789"
READY_TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/v2/health/ready")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@pytest.fixture(scope="module")
def ports(committed_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """``python -m runtime`` serving HTTP and gRPC from one process and one event loop."""
    port, grpc_port = _free_port(), _free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "EDGE_API_KEYS": KEY, "EDGE_INTRA_OP_THREADS": "1"}
    log_path = tmp_path_factory.mktemp("triton_server") / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runtime", "--port", str(port), "--grpc-port", str(grpc_port),
             "--model-dir", str(committed_model_dir), "--drift-sample-rate", "0"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _ready(port):
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"server not ready in {READY_TIMEOUT_S} s:\n{log_path.read_text()}")
            time.sleep(0.05)
        yield port, grpc_port
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.fixture(scope="module")
def clients(ports: tuple[int, int]) -> Iterator[tuple[thttp.InferenceServerClient, tgrpc.InferenceServerClient]]:
    h = thttp.InferenceServerClient(url=f"127.0.0.1:{ports[0]}", network_timeout=30)
    g = tgrpc.InferenceServerClient(url=f"127.0.0.1:{ports[1]}")
    yield h, g
    h.close()
    g.close()


def _stats_both(
    h: thttp.InferenceServerClient, g: tgrpc.InferenceServerClient
) -> tuple[dict[str, Any], dict[str, Any]]:
    over_http = h.get_inference_statistics(MODEL_NAME)["model_stats"][0]
    over_grpc = json_format.MessageToDict(
        g.get_inference_statistics(MODEL_NAME),
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )["model_stats"][0]
    return over_http, over_grpc


def _ints(stats: dict[str, Any]) -> dict[str, int]:
    """The counters of one model_stats entry, as ints (protobuf's JSON writes uint64 as strings)."""
    s = stats["inference_stats"]
    return {
        "inference_count": int(stats["inference_count"]),
        "execution_count": int(stats["execution_count"]),
        **{f"{k}.count": int(s[k]["count"]) for k in ("success", "fail", "queue", "compute_infer")},
    }


def test_both_clients_see_the_same_metadata_and_config(
    clients: tuple[thttp.InferenceServerClient, tgrpc.InferenceServerClient],
) -> None:
    h, g = clients
    assert h.is_server_ready() and g.is_server_ready() and g.is_model_ready(MODEL_NAME)
    assert json_format.MessageToDict(g.get_server_metadata()) == h.get_server_metadata()
    config_http = h.get_model_config(MODEL_NAME)
    config_grpc = json_format.MessageToDict(g.get_model_config(MODEL_NAME).config, preserving_proto_field_name=True)
    assert config_http["platform"] == config_grpc["platform"] == "onnxruntime_onnx"
    assert config_http["input"] == [{"name": INPUT_NAME, "data_type": "TYPE_FP32", "dims": [60, 5]}]
    assert config_grpc["input"] == [{"name": INPUT_NAME, "data_type": "TYPE_FP32", "dims": ["60", "5"]}]
    assert config_http["output"][0]["dims"] == [3] and config_http["max_batch_size"] == 256
    assert config_http["instance_group"] == [{"name": MODEL_NAME, "kind": "KIND_CPU", "count": 1}]
    assert config_http["dynamic_batching"]["preferred_batch_size"] == [8]  # the CPU default of EDGE_MAX_BATCH_SIZE
    assert config_http["parameters"]["precision"] == {"string_value": "int8"}


def test_infer_over_both_equal_and_the_statistics_move_by_exactly_what_was_sent(
    clients: tuple[thttp.InferenceServerClient, tgrpc.InferenceServerClient],
) -> None:
    h, g = clients
    before_http, before_grpc = _stats_both(h, g)
    assert _ints(before_http) == _ints(before_grpc)
    sent_requests = sent_windows = 0
    for seed, n in ((1, 1), (2, 3), (3, 7)):
        windows = market_windows(n, seed=seed)
        hin = thttp.InferInput(INPUT_NAME, list(windows.shape), "FP32")
        hin.set_data_from_numpy(windows, binary_data=True)
        gin = tgrpc.InferInput(INPUT_NAME, list(windows.shape), "FP32")
        gin.set_data_from_numpy(windows)
        over_http = h.infer(MODEL_NAME, [hin], headers={"X-API-Key": KEY}).as_numpy(OUTPUT_NAME)
        over_grpc = g.infer(MODEL_NAME, [gin], headers={"x-api-key": KEY}).as_numpy(OUTPUT_NAME)
        assert over_grpc.dtype == np.float32 and np.array_equal(over_http, over_grpc)
        sent_requests += 2
        sent_windows += 2 * n
    after_http, after_grpc = _stats_both(h, g)
    assert _ints(after_http) == _ints(after_grpc)
    delta = {k: v - _ints(before_http)[k] for k, v in _ints(after_http).items()}
    # One request at a time: each is its own model run (inline when idle) and nothing fails.
    assert delta == {
        "inference_count": sent_windows,
        "execution_count": sent_requests,
        "success.count": sent_requests,
        "fail.count": 0,
        "queue.count": sent_requests,
        "compute_infer.count": sent_requests,
    }
    assert int(after_http["last_inference"]) >= int(time.time() * 1000) - 60_000


# -- the HTTP routes' rules (TestClient) --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "status", "match"),
    [
        ("/v2/models/other/config", 404, "unknown model 'other'"),
        ("/v2/models/signal_predictor/versions/9/config", 404, "has no version '9'"),
        ("/v2/models/other/stats", 404, "unknown model 'other'"),
        ("/v2/models/signal_predictor/versions/9/stats", 404, "has no version '9'"),
    ],
)
def test_config_and_stats_of_unknown_models_are_404(
    make_client: Callable[..., TestClient], path: str, status: int, match: str
) -> None:
    response = make_client(drift_sample_rate=0).get(path)
    assert response.status_code == status and match in response.json()["error"]


def test_config_follows_the_settings_and_the_versioned_paths_answer(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_batch_size=16, max_batch_delay_us=250, max_queue=64, drift_sample_rate=0)
    config = client.get("/v2/models/signal_predictor/config").json()
    version = config["parameters"]["version"]["string_value"]
    assert client.get(f"/v2/models/signal_predictor/versions/{version}/config").json() == config
    assert config["max_batch_size"] == 64  # a request may carry no more windows than the queue holds
    assert config["dynamic_batching"]["preferred_batch_size"] == [16]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 250
    assert config["dynamic_batching"]["default_queue_policy"]["max_queue_size"] == 64
    stats = [
        client.get(p).json()
        for p in (
            "/v2/models/stats",
            "/v2/models/signal_predictor/stats",
            f"/v2/models/signal_predictor/versions/{version}/stats",
        )
    ]
    assert stats[0] == stats[1] == stats[2] and stats[0]["model_stats"][0]["name"] == MODEL_NAME


def test_stats_need_the_key_when_metrics_do(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_keys=[KEY], metrics_require_key=True, drift_sample_rate=0)
    assert client.get("/v2/models/stats").status_code == 401
    assert client.get("/v2/models/stats", headers={"X-API-Key": KEY}).status_code == 200
    assert client.get("/v2/models/signal_predictor/config").status_code == 200  # open, as model metadata
