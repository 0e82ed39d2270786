"""KServe v2 gRPC in process: NVIDIA's tritonclient.grpc against the gRPC server the app's lifespan starts, the
answers compared with the HTTP path of the same app, and every refusal mapped to its status code."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from conftest import market_windows, window_to_payload
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FileDescriptor
from starlette.testclient import TestClient
from tritonclient.grpc import model_config_pb2 as triton_config_pb2
from tritonclient.grpc import service_pb2 as triton_pb2
from tritonclient.utils import InferenceServerException

from runtime.constants import INPUT_NAME, MODEL_NAME, OUTPUT_NAME
from runtime.errors import ConfigurationError
from runtime.grpc import edge_inference_pb2 as pb
from runtime.grpc.server import grpc_server
from runtime.http.app import create_app
from runtime.server.serve import protocol_servers
from runtime.service import default_model_loader
from runtime.session import Model
from runtime.settings import Settings

KEY = "grpc-key-0123456789"
METHOD = "/inference.GRPCInferenceService/ModelInfer"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """An app with its lifespan running (HTTP through TestClient) and its gRPC port."""

    def __init__(self, http: TestClient, port: int) -> None:
        self.http = http
        self.port = port
        self.client = tgrpc.InferenceServerClient(f"127.0.0.1:{port}")
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")

    def raw_infer(self, request: pb.ModelInferRequest, key: str | None = KEY, timeout: float = 30) -> Any:
        """ModelInfer with our own message (typed contents, malformed requests tritonclient would not build)."""
        call = self.channel.unary_unary(
            METHOD,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        return call(request, metadata=(("x-api-key", key),) if key else None, timeout=timeout)

    def stats(self) -> dict[str, Any]:
        body = self.http.get("/v2/models/signal_predictor/stats").json()
        return dict(body["model_stats"][0])

    def close(self) -> None:
        self.client.close()
        self.channel.close()


@pytest.fixture
def serve(committed_model_dir: Path) -> Iterator[Callable[..., Served]]:
    """Factory: create_app(Settings(**overrides)) with the gRPC server in its lifespan, on a free port."""
    opened: list[tuple[TestClient, Served]] = []

    def make(loader: Callable[[Settings, str | None], Model] = default_model_loader, **overrides: Any) -> Served:
        overrides = {"model_dir": committed_model_dir, "intra_op_threads": 1, "drift_sample_rate": 0, **overrides}
        settings = Settings(grpc_port=_free_port(), api_keys=[KEY], **overrides)
        http = TestClient(
            create_app(settings, model_loader=loader, servers=[grpc_server]), raise_server_exceptions=False
        )
        http.__enter__()
        served = Served(http, settings.grpc_port)
        opened.append((http, served))
        return served

    yield make
    for http, served in opened:
        served.close()
        http.__exit__(None, None, None)


def _slow_loader(delay_s: float) -> Callable[[Settings, str | None], Model]:
    """The committed model, each run taking `delay_s` longer: work piles up in the queue on demand."""

    def load(settings: Settings, version: str | None) -> Model:
        model = default_model_loader(settings, version)
        run = model.run

        def slow(windows: np.ndarray) -> np.ndarray:
            time.sleep(delay_s)
            return run(windows)

        model.run = slow  # type: ignore[method-assign]
        return model

    return load


def _typed_request(windows: np.ndarray, **changes: Any) -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(name=INPUT_NAME, datatype="FP32", shape=list(windows.shape))
    tensor.contents.fp32_contents.extend(windows.ravel().tolist())
    request = pb.ModelInferRequest(model_name=MODEL_NAME, inputs=[tensor])
    for name, value in changes.items():
        setattr(request, name, value)
    return request


def _raw_request(windows: np.ndarray, shape: list[int] | None = None, datatype: str = "FP32") -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(
        name=INPUT_NAME, datatype=datatype, shape=shape or list(windows.shape)
    )
    return pb.ModelInferRequest(
        model_name=MODEL_NAME, inputs=[tensor], raw_input_contents=[windows.astype("<f4").tobytes()]
    )


def _probabilities(response: pb.ModelInferResponse) -> np.ndarray:
    shape = list(response.outputs[0].shape)
    return np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(shape)


def _v2_http(http: TestClient, windows: np.ndarray) -> np.ndarray:
    body = {
        "inputs": [
            {"name": INPUT_NAME, "shape": list(windows.shape), "datatype": "FP32", "data": windows.ravel().tolist()}
        ]
    }
    response = http.post("/v2/models/signal_predictor/infer", json=body, headers={"X-API-Key": KEY})
    assert response.status_code == 200, response.text
    output = response.json()["outputs"][0]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


# -- the wire: our messages are the protocol's ------------------------------------------------------------------
def _messages(file: FileDescriptor) -> Iterator[Descriptor]:
    stack = list(file.message_types_by_name.values())
    while stack:
        message = stack.pop()
        stack.extend(message.nested_types)
        yield message


def test_every_field_matches_tritonclients_descriptors() -> None:
    """Same field numbers, types, labels and message/enum types as the protocol (full names differ only in the
    package), for every message and enum value we declare; and the service's methods with their message types."""
    ours_prefix = pb.DESCRIPTOR.package + "."
    theirs = {m.full_name: m for f in (triton_pb2.DESCRIPTOR, triton_config_pb2.DESCRIPTOR) for m in _messages(f)}
    checked = 0
    for message in _messages(pb.DESCRIPTOR):
        counterpart = theirs[message.full_name.replace(ours_prefix, "inference.")]
        for field in message.fields:
            other = counterpart.fields_by_name[field.name]
            assert (field.number, field.type, field.is_repeated) == (other.number, other.type, other.is_repeated), (
                field.full_name
            )
            for ours_t, theirs_t in ((field.message_type, other.message_type), (field.enum_type, other.enum_type)):
                if ours_t is not None:
                    assert ours_t.full_name.replace(ours_prefix, "inference.") == theirs_t.full_name, field.full_name
            if field.enum_type is not None:
                values = {v.name: v.number for v in other.enum_type.values}
                assert all(values[v.name] == v.number for v in field.enum_type.values), field.full_name
            checked += 1
    assert checked > 100
    service = triton_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
        other = service.methods_by_name[method.name]
        assert method.input_type.name == other.input_type.name and method.output_type.name == other.output_type.name


# -- tritonclient.grpc ------------------------------------------------------------------------------------------
def test_health_metadata_and_config_equal_the_http_answers(serve: Callable[..., Served]) -> None:
    served = serve(max_batch_size=4, max_batch_delay_us=150)
    c, http = served.client, served.http
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready(MODEL_NAME)
    assert json_format.MessageToDict(c.get_server_metadata()) == http.get("/v2").json()
    assert json_format.MessageToDict(c.get_model_metadata(MODEL_NAME), preserving_proto_field_name=True) == {
        **http.get("/v2/models/signal_predictor").json(),
        # protobuf's JSON writes int64 as strings
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": ["-1", "60", "5"]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": ["-1", "3"]}],
    }
    config = c.get_model_config(MODEL_NAME).config
    http_config = http.get("/v2/models/signal_predictor/config").json()
    # The HTTP JSON parsed into tritonclient's own ModelConfig equals what came over gRPC, field for field.
    assert json_format.ParseDict(http_config, triton_config_pb2.ModelConfig()) == config
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 256
    assert list(config.input[0].dims) == [60, 5] and config.input[0].data_type == triton_config_pb2.TYPE_FP32
    assert list(config.dynamic_batching.preferred_batch_size) == [4]
    assert config.dynamic_batching.max_queue_delay_microseconds == 150
    assert config.instance_group[0].kind == triton_config_pb2.ModelInstanceGroup.KIND_CPU
    assert c.get_model_config(MODEL_NAME, model_version=config.parameters["version"].string_value).config == config


def test_infer_raw_and_typed_equal_http_v2_and_predict_bit_for_bit(serve: Callable[..., Served]) -> None:
    served = serve()
    windows = market_windows(6, seed=21)
    tensor = tgrpc.InferInput(INPUT_NAME, list(windows.shape), "FP32")
    tensor.set_data_from_numpy(windows)
    result = served.client.infer(MODEL_NAME, [tensor], headers={"x-api-key": KEY}, request_id="r-1")
    raw = result.as_numpy(OUTPUT_NAME)
    typed = _probabilities(served.raw_infer(_typed_request(windows)))
    http = _v2_http(served.http, windows)
    assert raw.dtype == np.float32 and raw.shape == (6, 3)
    assert np.array_equal(raw, typed) and np.array_equal(raw, http)
    # /predict on the first window: the same float32 probabilities (its JSON carries them as float64 of float32).
    predict = served.http.post("/predict", json=window_to_payload(windows[0]), headers={"X-API-Key": KEY}).json()
    assert [np.float32(p) for p in predict["prediction"]["probabilities"].values()] == list(raw[0])
    response = result.get_response()
    assert response.id == "r-1" and response.model_version == predict["prediction"]["model_version"]
    assert response.parameters["model_sha256"].string_param == predict["audit"]["model_sha256"]
    assert response.parameters["window_sha256"].string_param.split(",")[0] == predict["audit"]["window_sha256"]


def test_infer_needs_the_api_key_in_metadata(serve: Callable[..., Served]) -> None:
    served = serve()
    windows = market_windows(1)
    before = served.stats()["inference_count"]
    for key in (None, "wrong-key-0123456"):
        with pytest.raises(grpc.RpcError) as info:
            served.raw_infer(_raw_request(windows), key=key)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert info.value.details() in ("missing x-api-key metadata", "invalid API key")
    assert served.stats()["inference_count"] == before  # nothing was computed
    assert served.client.is_server_ready()  # health, metadata and config stay open, as on HTTP


BAD = [
    pytest.param(lambda w: _raw_request(w, shape=[1, 59, 5]), r"shape \[1, 59, 5\]", id="shape"),
    pytest.param(lambda w: _raw_request(w, datatype="FP64"), "datatype 'FP64'", id="datatype"),
    pytest.param(
        lambda w: _raw_request(w[:, :30], shape=[1, 60, 5]), r"raw_input_contents\[0\] holds 600 bytes", id="raw-length"
    ),
    pytest.param(lambda w: _raw_request(np.where(w == w[0, 3, 1], np.nan, w)), r"ohlcv_sequence'\[0, 3, 1\]", id="nan"),
    pytest.param(lambda w: _raw_request(-w), "prices .* > 0", id="negative-price"),
    pytest.param(
        lambda w: pb.ModelInferRequest(
            model_name=MODEL_NAME,
            inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1, 60, 5])],
        ),
        r"inputs \['x'\]",
        id="input-name",
    ),
    pytest.param(lambda w: _typed_request(w[:, :59]), "shape", id="typed-shape"),
    pytest.param(
        lambda w: pb.ModelInferRequest(
            model_name=MODEL_NAME,
            inputs=[
                pb.ModelInferRequest.InferInputTensor(
                    name=INPUT_NAME,
                    datatype="FP32",
                    shape=[1, 60, 5],
                    contents=pb.InferTensorContents(fp32_contents=[1.0] * 299),
                )
            ],
        ),
        "contents.fp32_contents has 299 values",
        id="typed-count",
    ),
    pytest.param(
        lambda w: pb.ModelInferRequest(
            model_name=MODEL_NAME,
            inputs=[
                pb.ModelInferRequest.InferInputTensor(
                    name=INPUT_NAME,
                    datatype="FP32",
                    shape=[1, 60, 5],
                    contents=pb.InferTensorContents(fp64_contents=[1.0] * 300),
                )
            ],
        ),
        "contents.fp64_contents",
        id="typed-fp64",
    ),
    pytest.param(
        lambda w: pb.ModelInferRequest(
            model_name=MODEL_NAME,
            inputs=[
                pb.ModelInferRequest.InferInputTensor(
                    name=INPUT_NAME,
                    datatype="FP32",
                    shape=[1, 60, 5],
                    contents=pb.InferTensorContents(fp32_contents=[1.0] * 300),
                )
            ],
            raw_input_contents=[w.tobytes()],
        ),
        "both contents.fp32_contents and raw_input_contents",
        id="typed-and-raw",
    ),
    pytest.param(
        lambda w: pb.ModelInferRequest(
            model_name=MODEL_NAME,
            inputs=[pb.ModelInferRequest.InferInputTensor(name=INPUT_NAME, datatype="FP32", shape=[1, 60, 5])],
        ),
        "neither contents.fp32_contents nor raw_input_contents",
        id="no-data",
    ),
    pytest.param(
        lambda w: pb.ModelInferRequest(
            model_name=MODEL_NAME,
            inputs=[pb.ModelInferRequest.InferInputTensor(name=INPUT_NAME, datatype="FP32", shape=[1, 60, 5])],
            outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="logits")],
            raw_input_contents=[w.tobytes()],
        ),
        r"requested outputs \['logits'\]",
        id="output-name",
    ),
]


@pytest.fixture(scope="module")
def shared(committed_model_dir: Path) -> Iterator[Served]:
    """One app for the refusal cases: none of them may change its state."""
    settings = Settings(
        model_dir=committed_model_dir, intra_op_threads=1, drift_sample_rate=0, grpc_port=_free_port(), api_keys=[KEY]
    )
    with TestClient(create_app(settings, servers=[grpc_server]), raise_server_exceptions=False) as http:
        served = Served(http, settings.grpc_port)
        yield served
        served.close()


@pytest.mark.parametrize(("build", "match"), BAD)
def test_bad_input_is_invalid_argument_naming_the_field(
    shared: Served, build: Callable[[np.ndarray], pb.ModelInferRequest], match: str
) -> None:
    before = shared.stats()
    with pytest.raises(grpc.RpcError) as info:
        shared.raw_infer(build(market_windows(1, seed=3)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(match, info.value.details()), info.value.details()
    after = shared.stats()
    assert after["inference_count"] == before["inference_count"]
    assert after["inference_stats"]["fail"]["count"] == before["inference_stats"]["fail"]["count"] + 1


@pytest.mark.parametrize(
    ("model", "version", "match"),
    [("other", "", "unknown model 'other'"), (MODEL_NAME, "9.9.9", "has no version '9.9.9'")],
)
def test_unknown_models_and_versions_are_not_found(shared: Served, model: str, version: str, match: str) -> None:
    request = _raw_request(market_windows(1))
    request.model_name, request.model_version = model, version
    for call in (lambda: shared.raw_infer(request), lambda: shared.client.get_model_config(model, version)):
        with pytest.raises((grpc.RpcError, InferenceServerException)) as info:
            call()
        error = info.value
        code = error.code() if isinstance(error, grpc.RpcError) else error.status()
        assert str(code) in (str(grpc.StatusCode.NOT_FOUND), "StatusCode.NOT_FOUND")
        assert match in (error.details() if isinstance(error, grpc.RpcError) else error.message())


def test_repository_methods_are_unimplemented(shared: Served) -> None:
    with pytest.raises(InferenceServerException) as info:
        shared.client.get_model_repository_index()
    assert info.value.status() == "StatusCode.UNIMPLEMENTED"


# -- the service core's rules ----------------------------------------------------------------------------------
def test_grpc_deadline_passing_in_the_queue_is_deadline_exceeded_and_not_computed(serve: Callable[..., Served]) -> None:
    served = serve(loader=_slow_loader(0.4))
    windows = market_windows(1, seed=5)
    blocker = threading.Thread(target=served.raw_infer, args=(_raw_request(windows),))
    blocker.start()  # holds the model for 0.4 s
    time.sleep(0.1)
    with pytest.raises(grpc.RpcError) as info:
        served.raw_infer(_raw_request(windows), timeout=0.15)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    blocker.join(10)
    deadline = time.monotonic() + 5
    while served.stats()["inference_stats"]["fail"]["count"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)  # the server notices when the model frees, after the client gave up
    stats = served.stats()
    assert stats["inference_count"] == 1 and stats["inference_stats"]["fail"]["count"] == 1
    assert 'edge_rejected_total{reason="deadline"} 1.0' in served.http.get("/metrics").text


def test_tritons_timeout_parameter_is_a_deadline_too(serve: Callable[..., Served]) -> None:
    served = serve(loader=_slow_loader(0.4))
    windows = market_windows(1, seed=5)
    blocker = threading.Thread(target=served.raw_infer, args=(_raw_request(windows),))
    blocker.start()
    time.sleep(0.1)
    request = _raw_request(windows)
    request.parameters["timeout"].uint64_param = 50_000  # 50 ms, well before the model frees
    with pytest.raises(grpc.RpcError) as info:
        served.raw_infer(request)  # no gRPC deadline: only the parameter
    blocker.join(10)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert info.value.details() == "deadline passed while queued"
    request.parameters["timeout"].string_param = "soon"
    with pytest.raises(grpc.RpcError) as info:
        served.raw_infer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "parameters.timeout" in info.value.details()


def test_overload_is_resource_exhausted_with_retry_after(serve: Callable[..., Served]) -> None:
    served = serve(loader=_slow_loader(0.5), max_pending_requests=1)
    windows = market_windows(1, seed=6)
    blocker = threading.Thread(target=served.raw_infer, args=(_raw_request(windows),))
    blocker.start()
    time.sleep(0.15)
    with pytest.raises(grpc.RpcError) as info:
        served.raw_infer(_raw_request(windows))
    blocker.join(10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "1 requests already admitted" in info.value.details()
    assert ("retry-after", "1") in tuple(info.value.trailing_metadata())
    metrics = served.http.get("/metrics").text
    assert (
        'edge_requests_total{route="/inference.GRPCInferenceService/ModelInfer",status="RESOURCE_EXHAUSTED"} 1.0'
        in metrics
    )
    assert 'edge_requests_total{route="/inference.GRPCInferenceService/ModelInfer",status="OK"} 1.0' in metrics


def test_statistics_count_every_protocol_once(serve: Callable[..., Served]) -> None:
    """gRPC (raw and typed), v2 REST, /predict, /predict/batch and /stream: each request counted once, each
    window once; gRPC ModelStatistics and GET .../stats read the same counters."""
    served = serve()
    before = served.stats()
    windows = market_windows(4, seed=8)
    served.raw_infer(_raw_request(windows[:2]))  # 1 request, 2 windows
    served.raw_infer(_typed_request(windows[:1]))  # 1, 1
    _v2_http(served.http, windows[:3])  # 1, 3
    served.http.post("/predict", json=window_to_payload(windows[0]), headers={"X-API-Key": KEY})  # 1, 1
    batch = {"requests": [window_to_payload(w) for w in windows]}
    assert served.http.post("/predict/batch", json=batch, headers={"X-API-Key": KEY}).status_code == 200  # 1, 4
    with served.http.websocket_connect("/stream", headers={"X-API-Key": KEY}) as ws:
        message = window_to_payload(windows[1])
        ws.send_json({"symbol": message["symbol"], "exchange": message["exchange"], "candles": message["sequence"]})
        assert "prediction" in ws.receive_json()  # 1, 1
    after = served.stats()
    assert after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"] == 6
    assert after["inference_count"] - before["inference_count"] == 12
    assert after["execution_count"] - before["execution_count"] == 6  # one at a time: each request its own run
    for stage in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert after["inference_stats"][stage]["count"] == after["inference_stats"]["success"]["count"]
        assert after["inference_stats"][stage]["ns"] > 0
    assert sum(b["compute_infer"]["count"] for b in after["batch_stats"]) == after["execution_count"]
    assert {b["batch_size"] for b in after["batch_stats"]} == {1, 2, 3, 4}
    grpc_stats = served.client.get_inference_statistics(MODEL_NAME, headers={"x-api-key": KEY})
    assert json_format.MessageToDict(
        grpc_stats, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )["model_stats"][0]["inference_count"] == str(after["inference_count"])


def test_the_grpc_extra_missing_stops_start_up_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    assert protocol_servers(Settings(grpc_port=0)) == []
    monkeypatch.setitem(__import__("sys").modules, "grpc", None)  # what `import grpc` sees without the extra
    with pytest.raises(ConfigurationError, match=r"pip install 'neuraltrade-edge\[grpc\]'"):
        protocol_servers(Settings(grpc_port=50051))


def test_a_request_over_the_body_limit_is_refused_by_grpc(serve: Callable[..., Served]) -> None:
    served = serve(max_body_bytes=64 * 1024)
    with pytest.raises(grpc.RpcError) as info:
        served.raw_infer(_raw_request(market_windows(100, seed=2)))  # 120,000 bytes of tensor
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert served.stats()["inference_stats"]["success"]["count"] == 0


def test_a_taken_grpc_port_stops_start_up(committed_model_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(model_dir=committed_model_dir, intra_op_threads=1, drift_sample_rate=0, grpc_port=port)
        client = TestClient(create_app(settings, servers=[grpc_server]))
        with pytest.raises(ConfigurationError, match=f"cannot bind gRPC to 127.0.0.1:{port}"):
            client.__enter__()
