"""``inference.GRPCInferenceService``: thin methods over the service core, as KServe's ``grpc/servicer.py`` is.

Every method answers what v2 REST answers, built by the same code (`runtime.triton`, `runtime.tensors`,
`Service`): admission, API key, batching, deadlines, statistics and metrics are the service core's. Errors become
gRPC status codes (`STATUS`) with the service's message; a refusal that asks the client to come back later carries
``retry-after`` (seconds) in the trailing metadata, as HTTP's ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import grpc
import numpy as np
from google.protobuf import json_format
from google.protobuf.message import Message

from runtime.constants import MODEL_NAME, OUTPUT_NAME
from runtime.errors import BadRequest, DeadlineExceeded, EdgeError, InferenceFailed, NotReady, Overloaded
from runtime.grpc import edge_inference_pb2 as pb
from runtime.grpc.tensors import check_requested_outputs, windows_of
from runtime.predictions import audit_record
from runtime.service import Service
from runtime.tensors import DATATYPE, FP32_LE, max_windows
from runtime.triton import is_ready, model_config, model_metadata, model_statistics, served_model, server_metadata

log = logging.getLogger("runtime.grpc")

SERVICE_NAME: Final = "inference.GRPCInferenceService"

#: HTTP status of a service error -> the gRPC code that means the same (Overloaded and NotReady differ: both 503).
STATUS: Final = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_of(error: EdgeError) -> grpc.StatusCode:
    if isinstance(error, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED  # shed: retry later, elsewhere or with less
    if isinstance(error, NotReady):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(error, DeadlineExceeded):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return STATUS.get(error.status_code, grpc.StatusCode.INTERNAL)


Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)
Method = Callable[["Servicer", Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]


def _rpc(method: Method[Req, Resp]) -> Method[Req, Resp]:
    """Map service errors to status codes (never a traceback to the client) and count the call in /metrics."""
    name = f"/{SERVICE_NAME}/{method.__name__}"

    @functools.wraps(method)
    async def wrapped(self: Servicer, request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> Resp:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await method(self, request, context)
        except EdgeError as e:
            code = status_of(e)
            retry = e.headers.get("Retry-After") or ("1" if isinstance(e, Overloaded | NotReady) else None)
            if retry is not None:
                context.set_trailing_metadata((("retry-after", retry),))
            await context.abort(code, e.message)
        except grpc.aio.AbortError:
            raise
        except asyncio.CancelledError:
            # grpc cancels the call when its deadline passes or the client goes away; a request still queued is
            # then never computed (its future is cancelled), the same outcome as the batcher's deadline check.
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                code = grpc.StatusCode.DEADLINE_EXCEEDED
                self.service.metrics.rejected.labels("deadline").inc()
            else:
                code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("unhandled error in a gRPC method", extra={"method": name})
            await context.abort(code, "internal server error")
        finally:
            metrics = self.service.metrics
            metrics.requests.labels(name, code.name).inc()
            metrics.latency.labels(name).observe(time.perf_counter() - started)
        raise AssertionError("unreachable: context.abort raises")  # pragma: no cover

    return wrapped


def _metadata(context: grpc.aio.ServicerContext[Any, Any], key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value if isinstance(value, str) else None
    return None


def _deadline(context: grpc.aio.ServicerContext[Any, Any], request: pb.ModelInferRequest) -> float | None:
    """The earlier of the client's gRPC deadline and Triton's ``timeout`` parameter (microseconds), on the batcher's
    clock: work still queued when it passes is not computed."""
    now = time.perf_counter()
    deadlines = []
    remaining = context.time_remaining()
    if remaining is not None:
        deadlines.append(now + remaining)
    if "timeout" in request.parameters:
        param = request.parameters["timeout"]
        kind = param.WhichOneof("parameter_choice")
        value = getattr(param, kind) if kind in ("int64_param", "uint64_param") else None
        if not isinstance(value, int) or value <= 0:
            raise BadRequest("parameters.timeout must be a positive int64 or uint64 number of microseconds")
        deadlines.append(now + value / 1e6)
    return min(deadlines) if deadlines else None


def _from_dict(data: dict[str, Any], message: Resp) -> Resp:
    return json_format.ParseDict(data, message)


class Servicer:
    """One per server; every method runs on the service's event loop."""

    def __init__(self, service: Service) -> None:
        self.service = service

    @_rpc
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @_rpc
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=is_ready(self.service))

    @_rpc
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        served_model(self.service, request.name, request.version)
        return pb.ModelReadyResponse(ready=is_ready(self.service))

    @_rpc
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return _from_dict(server_metadata(), pb.ServerMetadataResponse())

    @_rpc
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        info = served_model(self.service, request.name, request.version)
        return _from_dict(model_metadata(info), pb.ModelMetadataResponse())

    @_rpc
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        info = served_model(self.service, request.name, request.version)
        return _from_dict({"config": model_config(self.service, info)}, pb.ModelConfigResponse())

    @_rpc
    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> pb.ModelStatisticsResponse:
        service = self.service
        if service.settings.metrics_require_key:
            service.authorize(_metadata(context, "x-api-key"), carrier="x-api-key metadata")
        # An empty name asks for every model, which is this one (Triton's rule).
        info = served_model(service, request.name or MODEL_NAME, request.version)
        return _from_dict(model_statistics(service.metrics.stats, info), pb.ModelStatisticsResponse())

    @_rpc
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        service = self.service
        with service.admission():  # as every protocol: shed before the input is decoded
            batcher = service.serving()
            service.authorize(_metadata(context, "x-api-key"), carrier="x-api-key metadata")
            served_model(service, request.model_name, request.model_version)
            windows = windows_of(request, max_windows(batcher.max_queue))
            check_requested_outputs(request)
            result, info = await service.run_windows(windows, deadline=_deadline(context, request))
            probs = result.probabilities  # (n, 3)
            if not np.isfinite(probs).all():
                raise InferenceFailed("the model produced non-finite probabilities for this input")
            response = pb.ModelInferResponse(model_name=MODEL_NAME, model_version=info.version, id=request.id)
            if info.sha256:
                # /predict's audit record per window, as v2 REST gives it (parameters are scalars: comma-joined).
                audits = [audit_record(w, info, result) for w in windows]
                params = response.parameters
                params["model_sha256"].string_param = info.sha256
                params["window_sha256"].string_param = ",".join(a["window_sha256"] for a in audits)
                if "batch" in audits[0]:
                    params["batch_run"].int64_param = result.run_id
                    params["batch_size"].int64_param = result.batch_size
            # Raw little-endian bytes, as Triton answers: the client reads exactly the float32 the model gave.
            response.outputs.add(name=OUTPUT_NAME, datatype=DATATYPE, shape=list(probs.shape))
            response.raw_output_contents.append(np.ascontiguousarray(probs, dtype=FP32_LE).tobytes())
            return response


def handler(servicer: Servicer) -> grpc.GenericRpcHandler:
    """The method table; methods not in it (repository, shared memory, streaming, ...) answer UNIMPLEMENTED."""
    unary: dict[str, tuple[Any, type[Message]]] = {
        "ServerLive": (servicer.ServerLive, pb.ServerLiveRequest),
        "ServerReady": (servicer.ServerReady, pb.ServerReadyRequest),
        "ModelReady": (servicer.ModelReady, pb.ModelReadyRequest),
        "ServerMetadata": (servicer.ServerMetadata, pb.ServerMetadataRequest),
        "ModelMetadata": (servicer.ModelMetadata, pb.ModelMetadataRequest),
        "ModelInfer": (servicer.ModelInfer, pb.ModelInferRequest),
        "ModelConfig": (servicer.ModelConfig, pb.ModelConfigRequest),
        "ModelStatistics": (servicer.ModelStatistics, pb.ModelStatisticsRequest),
    }
    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            name: grpc.unary_unary_rpc_method_handler(
                method,
                request_deserializer=request_type.FromString,
                response_serializer=lambda message: message.SerializeToString(),
            )
            for name, (method, request_type) in unary.items()
        },
    )
