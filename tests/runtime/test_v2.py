"""Open Inference Protocol v2: NVIDIA's tritonclient against the real process, and every refusal via TestClient."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from conftest import market_windows
from starlette.testclient import TestClient
from tritonclient.utils import InferenceServerException

from runtime.constants import INPUT_NAME, INT8_FILE, MANIFEST_FILE, MODEL_NAME, OUTPUT_NAME
from runtime.http.app import create_app
from runtime.settings import Settings

REPO = Path(__file__).resolve().parents[2]
KEY = "test-key-0123456789"
AUTH = {"X-API-Key": KEY}  # tritonclient adds its own headers to the dict it is given: pass copies
READY_TIMEOUT_S = 60  # two shared cores: start-up (load, hash, warm-up) can be slow under load


# -- fixtures ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def served_version(committed_model_dir: Path) -> str:
    return str(json.loads((committed_model_dir / MANIFEST_FILE).read_text())["version"])


@pytest.fixture(scope="session")
def reference(committed_model_dir: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The INT8 artifact run directly by onnxruntime, one window per call: what the batch-invariant service
    must answer, exactly, for every window of a batch."""
    # One intra-op thread, as the service under test runs: the INT8 kernels split work by thread count.
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(committed_model_dir / INT8_FILE), options, providers=["CPUExecutionProvider"])

    def run(windows: np.ndarray) -> np.ndarray:
        rows = [session.run([OUTPUT_NAME], {INPUT_NAME: windows[i : i + 1]})[0] for i in range(len(windows))]
        return np.concatenate(rows)

    return run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture(scope="module")
def server_port(committed_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """``python -m runtime`` in a subprocess, with an API key, serving the committed model on a free port."""
    port = _free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "EDGE_API_KEYS": KEY, "EDGE_INTRA_OP_THREADS": "1"}
    # Logs go to a file, not a pipe nobody reads while the tests run: a full pipe would block the server.
    log_path = tmp_path_factory.mktemp("v2_server") / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runtime", "--port", str(port), "--model-dir", str(committed_model_dir)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if _status(port, "/v2/health/ready") == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not become ready in {READY_TIMEOUT_S} s:\n{log_path.read_text()}")
            time.sleep(0.05)
        yield port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@pytest.fixture
def client(server_port: int) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=f"127.0.0.1:{server_port}", network_timeout=30)
    yield c
    c.close()


@pytest.fixture(scope="module")
def shared_client(committed_model_dir: Path) -> Iterator[TestClient]:
    """One app for the many refusal cases: none of them may change its state."""
    settings = Settings(
        model_dir=committed_model_dir, intra_op_threads=1, drift_sample_rate=0, max_body_bytes=64 * 1024
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


# -- tritonclient against the running process -------------------------------------------------------------------
def test_tritonclient_sees_a_live_ready_server_and_the_models_metadata(
    client: triton.InferenceServerClient, served_version: str
) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL_NAME)
    assert client.is_model_ready(MODEL_NAME, served_version)
    assert not client.is_model_ready(MODEL_NAME, "no-such-version")
    assert not client.is_model_ready("resnet50")
    server = client.get_server_metadata()
    assert server["name"] == "neuraltrade-edge" and "binary_tensor_data" in server["extensions"]
    expected = {
        "name": MODEL_NAME,
        "versions": [served_version],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "ohlcv_sequence", "datatype": "FP32", "shape": [-1, 60, 5]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}],
    }
    assert client.get_model_metadata(MODEL_NAME) == expected
    assert client.get_model_metadata(MODEL_NAME, served_version) == expected
    with pytest.raises(InferenceServerException, match="no version 'v0'") as e:
        client.get_model_metadata(MODEL_NAME, "v0")
    assert e.value.status() == "404"


@pytest.mark.parametrize(
    ("binary_input", "binary_output", "compression"),
    [
        pytest.param(False, False, None, id="json-in-json-out"),
        pytest.param(False, True, None, id="json-in-binary-out"),
        pytest.param(True, False, None, id="binary-in-json-out"),
        pytest.param(True, True, None, id="binary-in-binary-out"),
        # No outputs named: tritonclient asks for binary_data_output, its default.
        pytest.param(True, None, None, id="client-default"),
        pytest.param(True, None, "gzip", id="gzip-request"),
        pytest.param(False, None, "deflate", id="deflate-request"),
    ],
)
def test_tritonclient_infer_matches_onnxruntime(
    client: triton.InferenceServerClient,
    reference: Callable[[np.ndarray], np.ndarray],
    served_version: str,
    binary_input: bool,
    binary_output: bool | None,
    compression: str | None,
) -> None:
    window = market_windows(1, seed=11)
    tensor = triton.InferInput(INPUT_NAME, list(window.shape), "FP32")
    tensor.set_data_from_numpy(window, binary_data=binary_input)
    outputs = None if binary_output is None else [triton.InferRequestedOutput(OUTPUT_NAME, binary_data=binary_output)]

    result = client.infer(
        MODEL_NAME,
        [tensor],
        outputs=outputs,
        request_id="req-7",
        headers={**AUTH},
        request_compression_algorithm=compression,
    )

    probs = result.as_numpy(OUTPUT_NAME)
    assert probs is not None and probs.dtype == np.float32 and probs.shape == (1, 3)
    np.testing.assert_allclose(probs, reference(window), atol=1e-5)
    response = result.get_response()
    assert response["model_name"] == MODEL_NAME and response["model_version"] == served_version
    assert response["id"] == "req-7"
    [output] = response["outputs"]
    assert output["name"] == OUTPUT_NAME and output["datatype"] == "FP32" and output["shape"] == [1, 3]
    sent_binary = binary_output is not False
    assert ("parameters" in output and output["parameters"]["binary_data_size"] == 12) is sent_binary
    assert ("data" in output) is not sent_binary


def test_tritonclient_batched_infer_on_a_named_version(
    client: triton.InferenceServerClient, reference: Callable[[np.ndarray], np.ndarray], served_version: str
) -> None:
    windows = market_windows(16, seed=5)
    tensor = triton.InferInput(INPUT_NAME, list(windows.shape), "FP32").set_data_from_numpy(windows)

    probs = client.infer(MODEL_NAME, [tensor], model_version=served_version, headers={**AUTH}).as_numpy(OUTPUT_NAME)

    assert probs is not None and probs.shape == (16, 3)
    # Nothing else is in flight, so the batch is exactly this request: compare with the artifact on the same
    # batch. (Row by row it would differ by up to ~2.4e-3: dynamic INT8 quantizes activations per tensor.)
    np.testing.assert_allclose(probs, reference(windows), atol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("model", "version", "shape", "headers", "status", "match"),
    [
        pytest.param(MODEL_NAME, "", [1, 60, 5], {}, "401", "X-API-Key", id="no-api-key"),
        pytest.param(
            MODEL_NAME, "", [1, 60, 5], {"X-API-Key": "wrong-key-123"}, "401", "invalid API key", id="wrong-api-key"
        ),
        pytest.param("resnet50", "", [1, 60, 5], AUTH, "404", "unknown model 'resnet50'", id="unknown-model"),
        pytest.param(MODEL_NAME, "0", [1, 60, 5], AUTH, "404", "no version '0'", id="unknown-version"),
        pytest.param(MODEL_NAME, "", [1, 59, 5], AUTH, "400", r"shape \[1, 59, 5\]", id="wrong-shape"),
    ],
)
def test_tritonclient_raises_the_servers_errors(
    client: triton.InferenceServerClient,
    model: str,
    version: str,
    shape: list[int],
    headers: dict[str, str],
    status: str,
    match: str,
) -> None:
    tensor = triton.InferInput(INPUT_NAME, shape, "FP32").set_data_from_numpy(np.full(shape, 100.0, dtype=np.float32))
    with pytest.raises(InferenceServerException, match=match) as e:
        client.infer(model, [tensor], model_version=version, headers={**headers})
    assert e.value.status() == status
    assert client.is_server_ready()


# -- the protocol over TestClient -------------------------------------------------------------------------------
INFER = f"/v2/models/{MODEL_NAME}/infer"
WINDOW = market_windows(1, seed=1)  # (1, 60, 5) float32


def _body(**changes: Any) -> dict[str, Any]:
    """A valid JSON infer request for WINDOW, with `changes` merged into its one input."""
    tensor = {"name": INPUT_NAME, "shape": [1, 60, 5], "datatype": "FP32", "data": WINDOW.ravel().tolist()}
    return {"inputs": [{**tensor, **changes}]}


def _with_value(index: tuple[int, int, int], value: Any) -> dict[str, Any]:
    data: list[Any] = WINDOW.ravel().tolist()
    data[int(np.ravel_multi_index(index, WINDOW.shape))] = value
    return _body(data=data)


def _binary(header: dict[str, Any], tail: bytes, length_delta: int = 0) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + tail, {"Inference-Header-Content-Length": str(len(head) + length_delta)}


def _binary_header(size: int = WINDOW.nbytes, **changes: Any) -> dict[str, Any]:
    tensor = {"name": INPUT_NAME, "shape": [1, 60, 5], "datatype": "FP32", "parameters": {"binary_data_size": size}}
    return {"inputs": [{**tensor, **changes}]}


def _raw(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def _assert_v2_error(response: Any, status: int, match: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str), body
    assert match in body["error"], body


_NAN_WINDOW = WINDOW.copy()
_NAN_WINDOW[0, 7, 3] = np.nan
_FP16_WINDOW = np.full((1, 60, 5), 100, np.float16).tobytes()
_GZIP_BOMB = gzip.compress(b"0" * (1 << 20))


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "match"),
    [
        pytest.param(INFER, _body(datatype="FP64"), {}, 400, "datatype 'FP64'", id="wrong-dtype"),
        pytest.param(INFER, _body(datatype="INT32"), {}, 400, "datatype 'INT32'", id="int-dtype"),
        pytest.param(INFER, _body(shape=[1, 59, 5], data=[1.0] * 295), {}, 400, "shape [1, 59, 5]", id="short-window"),
        pytest.param(INFER, _body(shape=[0, 60, 5], data=[]), {}, 400, "1 <= n <=", id="empty-batch"),
        pytest.param(INFER, _body(shape=[60, 5]), {}, 400, "shape [60, 5]", id="rank-2"),
        pytest.param(INFER, _body(shape=[1025, 60, 5]), {}, 400, "n <= ", id="too-many-windows"),
        pytest.param(INFER, _body(shape=[1, 60, "5"]), {}, 400, "inputs.0.shape.2", id="shape-not-int"),
        pytest.param(
            INFER,
            _body(data=[100.0] * 299),
            {},
            400,
            "299 values; shape [1, 60, 5] needs 300",
            id="data-length-mismatch",
        ),
        pytest.param(INFER, _with_value((0, 2, 2), float("nan")), {}, 400, "[0, 2, 2] is nan", id="nan-token"),
        pytest.param(INFER, _with_value((0, 2, 4), float("inf")), {}, 400, "[0, 2, 4] is inf", id="infinity-token"),
        pytest.param(INFER, _with_value((0, 3, 1), 1e39), {}, 400, "[0, 3, 1] is inf", id="overflows-float32"),
        pytest.param(INFER, _with_value((0, 0, 0), 0.0), {}, 400, "prices (columns 0-3) > 0", id="zero-price"),
        pytest.param(INFER, _with_value((0, 59, 4), -1.0), {}, 400, "[0, 59, 4] is -1.0", id="negative-volume"),
        pytest.param(INFER, _with_value((0, 0, 0), "101.5"), {}, 400, "only numbers", id="string-value"),
        pytest.param(INFER, _with_value((0, 0, 0), None), {}, 400, "only numbers", id="null-value"),
        pytest.param(
            INFER, _body(data=[[100.0] * 5] * 59 + [[100.0] * 4]), {}, 400, "not a regular array", id="ragged-nesting"
        ),
        pytest.param(INFER, _body(data=None), {}, 400, "neither 'data' nor", id="no-data"),
        pytest.param(INFER, _body(name="ohlcv"), {}, 400, "inputs ['ohlcv']", id="wrong-input-name"),
        pytest.param(INFER, _body(name="x" * 10_000), {}, 400, "inputs ['" + "x" * 64 + "']", id="long-name-truncated"),
        pytest.param(
            INFER, {"inputs": _body()["inputs"] * 2}, {}, 400, "do not match the model's inputs", id="two-inputs"
        ),
        pytest.param(
            INFER,
            {**_body(), "outputs": [{"name": "logits"}]},
            {},
            400,
            "requested outputs ['logits']",
            id="unknown-output",
        ),
        pytest.param(
            INFER,
            {**_body(), "outputs": [{"name": OUTPUT_NAME, "parameters": {"classification": 2}}]},
            {},
            400,
            "classification",
            id="classification-output",
        ),
        pytest.param(INFER, {**_body(), "id": 7}, {}, 400, "id: Input should be a valid string", id="id-not-string"),
        pytest.param(INFER, b"", {}, 400, "empty", id="empty-body"),
        pytest.param(INFER, b"{", {}, 400, "not valid JSON", id="not-json"),
        pytest.param(INFER, b"[]", {}, 400, "invalid inference request", id="json-array"),
        pytest.param("/v2/models/resnet50/infer", _body(), {}, 404, "unknown model 'resnet50'", id="unknown-model"),
        pytest.param(
            f"/v2/models/{MODEL_NAME}/versions/9/infer", _body(), {}, 404, "no version '9'", id="unknown-version"
        ),
        pytest.param(
            INFER,
            *_binary(_binary_header(size=1199), WINDOW.tobytes()[:1199]),
            400,
            "binary_data_size is 1199 bytes",
            id="binary-size-not-4n",
        ),
        pytest.param(
            INFER,
            *_binary(_binary_header(size=1204), WINDOW.tobytes() + b"\0" * 4),
            400,
            "needs 1200",
            id="binary-size-too-big",
        ),
        pytest.param(
            INFER, *_binary(_binary_header(), WINDOW.tobytes()[:-4]), 400, "holds 1196 bytes", id="binary-truncated"
        ),
        pytest.param(
            INFER,
            *_binary(_binary_header(), WINDOW.tobytes(), length_delta=10_000),
            400,
            "outside the body",
            id="header-length-past-body",
        ),
        pytest.param(
            INFER,
            *_binary(_binary_header(), WINDOW.tobytes(), length_delta=-3),
            400,
            "not valid JSON",
            id="header-length-short",
        ),
        pytest.param(
            INFER,
            _raw(_binary_header()) + WINDOW.tobytes(),
            {},
            400,
            "not valid JSON",
            id="binary-without-header-length",
        ),
        pytest.param(
            INFER, _binary_header(), {}, 400, "holds 0 bytes after the JSON header", id="binary-size-without-tail"
        ),
        pytest.param(
            INFER, *_binary(_body(), b"\0" * 8), 400, "8 bytes follow the JSON header", id="unreferenced-tail"
        ),
        pytest.param(
            INFER,
            _raw(_binary_header()) + WINDOW.tobytes(),
            {"Inference-Header-Content-Length": "x"},
            400,
            "is not a number",
            id="header-length-not-a-number",
        ),
        pytest.param(
            INFER,
            *_binary(_binary_header(data=[1.0] * 300), WINDOW.tobytes()),
            400,
            "both JSON 'data' and 'binary_data_size'",
            id="data-and-binary",
        ),
        pytest.param(
            INFER, *_binary(_binary_header(), _NAN_WINDOW.tobytes()), 400, "[0, 7, 3] is nan", id="binary-nan"
        ),
        pytest.param(
            INFER,
            *_binary(_binary_header(size=600, datatype="FP16"), _FP16_WINDOW),
            400,
            "datatype 'FP16'",
            id="binary-fp16",
        ),
        pytest.param(INFER, _body(), {"Content-Encoding": "br"}, 415, "Content-Encoding 'br'", id="brotli"),
        pytest.param(
            INFER, b"\x1f\x8b not gzip", {"Content-Encoding": "gzip"}, 400, "not valid gzip", id="corrupt-gzip"
        ),
        pytest.param(INFER, _GZIP_BOMB, {"Content-Encoding": "gzip"}, 413, "decompressed", id="gzip-bomb"),
        pytest.param(
            INFER,
            {**_body(), "parameters": {"binary_data_output": "yes"}},
            {},
            400,
            "binary_data_output",
            id="binary-output-not-bool",
        ),
        pytest.param(INFER, _body(), {"X-Deadline-Ms": "soon"}, 400, "X-Deadline-Ms", id="bad-deadline"),
        pytest.param(INFER, {**_body(), "parameters": {"timeout": 1}}, {}, 504, "deadline passed", id="timeout-1us"),
        pytest.param(
            INFER,
            {**_body(), "parameters": {"timeout": 10**400}},
            {},
            400,
            "parameters.timeout",
            id="timeout-400-digits",
        ),
        pytest.param(
            INFER,
            {**_body(), "parameters": {"timeout": 2**64}},
            {},
            400,
            "parameters.timeout",
            id="timeout-over-uint64",
        ),
        pytest.param(INFER, _body(), {"Content-Type": "text/plain"}, 415, "'text/plain'", id="text-plain"),
        pytest.param(
            INFER,
            b"a=1",
            {"Content-Type": "application/x-www-form-urlencoded"},
            415,
            "is not supported",
            id="form-post",
        ),
        pytest.param(INFER, b"", {"Content-Type": "multipart/form-data; boundary=x"}, 415, "multipart", id="multipart"),
    ],
)
def test_v2_refuses_bad_requests_before_running_them(
    shared_client: TestClient, path: str, body: Any, headers: dict[str, str], status: int, match: str
) -> None:
    response = shared_client.post(path, content=_raw(body), headers=headers)
    _assert_v2_error(response, status, match)
    assert shared_client.get("/v2/health/ready").status_code == 200


@pytest.mark.parametrize(
    "content_type", [None, "application/json", "application/json; charset=utf-8", "application/octet-stream"]
)
def test_v2_infer_accepts_its_documented_content_types(shared_client: TestClient, content_type: str | None) -> None:
    """JSON, the binary extension's octet-stream, or none at all (what tritonclient sends)."""
    content, headers = _binary(_binary_header(), WINDOW.tobytes())
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = shared_client.post(INFER, content=content, headers=headers)
    assert response.status_code == 200, response.text


def test_v2_limits_body_size_and_window_count_from_settings(make_client: Callable[..., TestClient]) -> None:
    client = make_client(drift_sample_rate=0, max_body_bytes=2048, max_queue=2)
    _assert_v2_error(client.post(INFER, json=_body()), 413, "exceeds the limit of 2048 bytes")
    # Three windows can never fit a queue of two: that is the request's fault (400), not a retryable 503.
    three = np.repeat(WINDOW, 3, axis=0)
    content, headers = _binary(_binary_header(size=three.nbytes, shape=[3, 60, 5]), three.tobytes())
    _assert_v2_error(client.post(INFER, content=content, headers=headers), 413, "exceeds the limit")
    client = make_client(drift_sample_rate=0, max_queue=2)
    _assert_v2_error(client.post(INFER, content=content, headers=headers), 400, "1 <= n <= 2")
    assert client.get("/v2/health/ready").status_code == 200


def test_v2_needs_the_api_key_for_inference_only(make_client: Callable[..., TestClient]) -> None:
    client = make_client(drift_sample_rate=0, api_keys=[KEY])
    response = client.post(INFER, json=_body())
    _assert_v2_error(response, 401, "missing X-API-Key header")
    assert response.headers["www-authenticate"] == "ApiKey"
    _assert_v2_error(client.post(INFER, json=_body(), headers={"X-API-Key": "not-the-key"}), 401, "invalid API key")
    assert client.post(INFER, json=_body(), headers={**AUTH}).status_code == 200
    for path in (
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        f"/v2/models/{MODEL_NAME}",
        f"/v2/models/{MODEL_NAME}/ready",
    ):
        assert client.get(path).status_code == 200, path


@pytest.mark.parametrize(
    ("path", "match"),
    [
        pytest.param("/v2/models/resnet50", "unknown model 'resnet50'", id="metadata-unknown-model"),
        pytest.param(f"/v2/models/{MODEL_NAME}/versions/9", "no version '9'", id="metadata-unknown-version"),
        pytest.param("/v2/models/resnet50/ready", "unknown model", id="ready-unknown-model"),
        pytest.param(f"/v2/models/{MODEL_NAME}/versions/9/ready", "no version '9'", id="ready-unknown-version"),
    ],
)
def test_v2_unknown_models_and_versions_are_404(make_client: Callable[..., TestClient], path: str, match: str) -> None:
    client = make_client(drift_sample_rate=0)
    _assert_v2_error(client.get(path), 404, match)


def test_v2_before_the_model_is_loaded(committed_model_dir: Path) -> None:
    # Not entered as a context manager, so the lifespan never runs: the model was never loaded.
    client = TestClient(create_app(Settings(model_dir=committed_model_dir)), raise_server_exceptions=False)
    assert client.get("/v2/health/live").json() == {"live": True}
    response = client.get("/v2/health/ready")
    assert response.status_code == 503 and response.json() == {"ready": False}
    _assert_v2_error(client.get(f"/v2/models/{MODEL_NAME}"), 503, "not loaded")
    response = client.post(INFER, json=_body())
    _assert_v2_error(response, 503, "not loaded")
    assert response.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(WINDOW.ravel().tolist(), id="flat"),
        pytest.param(WINDOW.tolist(), id="nested-like-shape"),
        pytest.param(WINDOW.reshape(60, 5).tolist(), id="nested-rows"),
        pytest.param(
            [float(round(v)) if i % 2 else round(v) for i, v in enumerate(WINDOW.ravel())], id="ints-and-floats"
        ),
    ],
)
def test_v2_json_data_may_be_flat_or_nested(
    make_client: Callable[..., TestClient],
    reference: Callable[[np.ndarray], np.ndarray],
    served_version: str,
    data: list[Any],
) -> None:
    client = make_client(drift_sample_rate=0)
    # "parameters": null is how some clients say "none"; it is accepted as such.
    response = client.post(INFER, json={"id": "abc", "parameters": None, **_body(data=data)})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = reference(np.asarray(data, dtype=np.float32).reshape(1, 60, 5))
    assert body["model_name"] == MODEL_NAME and body["model_version"] == served_version and body["id"] == "abc"
    [output] = body["outputs"]
    assert output["shape"] == [1, 3] and output["datatype"] == "FP32"
    np.testing.assert_allclose(np.asarray(output["data"], dtype=np.float32), expected.ravel(), atol=1e-5)


def test_v2_binary_output_layout(
    make_client: Callable[..., TestClient], reference: Callable[[np.ndarray], np.ndarray]
) -> None:
    windows = market_windows(2, seed=9)
    header = _binary_header(size=windows.nbytes, shape=[2, 60, 5])
    header["outputs"] = [{"name": OUTPUT_NAME, "parameters": {"binary_data": True}}]
    content, headers = _binary(header, windows.tobytes())
    response = make_client(drift_sample_rate=0).post(INFER, content=content, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    n = int(response.headers["inference-header-content-length"])
    head = json.loads(response.content[:n])
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 24}
    assert head["outputs"][0]["shape"] == [2, 3] and "data" not in head["outputs"][0]
    probs = np.frombuffer(response.content[n:], dtype="<f4").reshape(2, 3)
    np.testing.assert_allclose(probs, reference(windows), atol=1e-5)


def test_v2_inference_goes_through_the_batcher(make_client: Callable[..., TestClient]) -> None:
    client = make_client(drift_sample_rate=0)

    def batched_windows() -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith("edge_batch_size_sum"):
                return float(line.split()[-1])
        return 0.0

    before = batched_windows()
    windows = market_windows(3, seed=2)
    content, headers = _binary(_binary_header(size=windows.nbytes, shape=[3, 60, 5]), windows.tobytes())
    assert client.post(INFER, content=content, headers=headers).status_code == 200
    assert batched_windows() == before + 3
    metrics = client.get("/metrics").text
    assert 'edge_requests_total{route="/v2/models/{model_name}/infer",status="200"} 1.0' in metrics
