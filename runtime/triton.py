"""What the KServe v2 / Triton protocol says about the server and its model, built once for every wire.

v2 REST (`runtime.http.v2`) answers these as JSON; gRPC (`runtime.grpc`) parses the same dicts into its protobuf
messages (`google.protobuf.json_format`), so the two cannot drift apart. Knows no HTTP and no gRPC.

- `model_config`: Triton's model configuration (``config.pbtxt`` as JSON) generated from the loaded model and the
  settings, for tools that read it (``tritonclient`` ``get_model_config``, perf_analyzer, model navigators).
- `model_statistics`: the statistics extension, from the counters `runtime.statistics` records for every protocol.
"""

from __future__ import annotations

from typing import Any, Final

from runtime import __version__
from runtime.constants import INPUT_NAME, MODEL_NAME, OUTPUT_NAME
from runtime.errors import ModelNotFound, NotReady
from runtime.service import Service
from runtime.session import ModelInfo
from runtime.statistics import InferenceStatistics
from runtime.tensors import DATATYPE, INPUT_SHAPE, OUTPUT_SHAPE, max_windows

SERVER_NAME: Final = "neuraltrade-edge"
PLATFORM: Final = "onnxruntime_onnx"
BACKEND: Final = "onnxruntime"
#: Protocol extensions this server implements (Triton's names), on both wires.
EXTENSIONS: Final = ("binary_tensor_data", "model_configuration", "model_repository", "statistics")
_TRITON_TYPE: Final = {"FP32": "TYPE_FP32"}


def served_model(service: Service, name: str, version: str | None) -> ModelInfo:
    """The model being served, after checking the asked name and version (empty or None = the served one)."""
    if name != MODEL_NAME:
        raise ModelNotFound(f"unknown model '{name[:100]}'; this server serves '{MODEL_NAME}'")
    if service.model is None:
        raise NotReady("model is not loaded yet" if not service.draining else "server is shutting down")
    info = service.model.info
    if version and version != info.version:
        raise ModelNotFound(
            f"model '{MODEL_NAME}' has no version '{version[:100]}'; the served version is '{info.version}'"
        )
    return info


def is_ready(service: Service) -> bool:
    return service.ready and service.model is not None and service.batcher is not None and not service.saturated


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}


def model_metadata(info: ModelInfo) -> dict[str, Any]:
    return {
        "name": MODEL_NAME,
        "versions": [info.version],
        "platform": PLATFORM,
        "inputs": [{"name": INPUT_NAME, "datatype": DATATYPE, "shape": list(INPUT_SHAPE)}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": DATATYPE, "shape": list(OUTPUT_SHAPE)}],
    }


def model_config(service: Service, info: ModelInfo) -> dict[str, Any]:
    """Triton's model configuration for what is being served, as Triton's HTTP API writes it (protobuf's JSON form).

    ``max_batch_size`` is the most windows one request may carry (`MAX_INFER_WINDOWS`, capped by the admission
    queue); the dynamic batcher coalesces requests up to ``preferred_batch_size`` windows (a larger request runs
    whole), waiting at most ``max_queue_delay_microseconds`` for company. One inference thread runs one
    onnxruntime session: one instance. Versions are not integers here, so the policy is "latest 1": the one loaded.
    """
    settings = service.settings
    return {
        "name": MODEL_NAME,
        "platform": PLATFORM,
        "backend": BACKEND,
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": max_windows(settings.max_queue),
        "input": [{"name": INPUT_NAME, "data_type": _TRITON_TYPE[DATATYPE], "dims": list(INPUT_SHAPE[1:])}],
        "output": [{"name": OUTPUT_NAME, "data_type": _TRITON_TYPE[DATATYPE], "dims": list(OUTPUT_SHAPE[1:])}],
        "dynamic_batching": {
            "preferred_batch_size": [settings.batch_size_for(info.provider)],
            "max_queue_delay_microseconds": settings.max_batch_delay_us,
            # Answers go back to each request's own caller; order between callers is not promised.
            "preserve_ordering": False,
            "default_queue_policy": {
                # A request whose deadline passes in the queue is refused, never run late (DEADLINE_EXCEEDED).
                "timeout_action": "REJECT",
                "allow_timeout_override": True,
                "max_queue_size": settings.max_queue,
            },
        },
        "instance_group": [
            {
                "name": MODEL_NAME,
                "kind": "KIND_GPU" if info.provider == "cuda" else "KIND_CPU",
                "count": 1,
                **({"gpus": [0]} if info.provider == "cuda" else {}),
            }
        ],
        "default_model_filename": info.file,
        # Triton's free-form parameters: what an operator needs to know which artifact answers.
        "parameters": {
            key: {"string_value": value}
            for key, value in (
                ("version", info.version),
                ("precision", info.precision),
                ("execution_provider", info.provider),
                ("intra_op_threads", str(info.intra_op_threads)),
                ("batch_invariant", str(info.batch_invariant).lower()),
                ("model_sha256", info.sha256),
            )
        },
    }


def model_statistics(stats: InferenceStatistics, info: ModelInfo) -> dict[str, Any]:
    """The statistics extension's answer for the one model (``model_stats`` has one entry)."""
    entry = {
        "name": MODEL_NAME,
        "version": info.version,
        "last_inference": stats.last_inference_ms,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": {
            "success": stats.success.as_dict(),
            "fail": stats.fail.as_dict(),
            "queue": stats.queue.as_dict(),
            "compute_input": stats.compute_input.as_dict(),
            "compute_infer": stats.compute_infer.as_dict(),
            "compute_output": stats.compute_output.as_dict(),
            # No response cache: every request is computed.
            "cache_hit": {"count": 0, "ns": 0},
            "cache_miss": {"count": 0, "ns": 0},
        },
        # The batcher has no separate input/output copy stage per run: only compute_infer is measured per size.
        "batch_stats": [
            {
                "batch_size": size,
                "compute_input": {"count": 0, "ns": 0},
                "compute_infer": duration.as_dict(),
                "compute_output": {"count": 0, "ns": 0},
            }
            for size, duration in stats.batch_sizes()
        ],
    }
    return {"model_stats": [entry]}
