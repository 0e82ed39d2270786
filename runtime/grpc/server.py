"""The gRPC server's life: started in the app's lifespan, on the same event loop as uvicorn, after the model is
ready, and stopped before the service core (in-flight calls finish within ``graceful_timeout``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from runtime.errors import ConfigurationError
from runtime.service import Service

log = logging.getLogger("runtime.grpc")

INSTALL_HINT: Final = "pip install 'neuraltrade-edge[grpc]'"


def check_installed() -> None:
    """Fail at start-up, with the install command, when the `grpc` extra is missing."""
    try:
        import google.protobuf  # noqa: F401
        import grpc  # noqa: F401
    except ImportError as e:
        raise ConfigurationError(
            f"EDGE_GRPC_PORT is set but grpcio/protobuf are not installed: run `{INSTALL_HINT}`"
        ) from e


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@asynccontextmanager
async def grpc_server(service: Service) -> AsyncIterator[int]:
    """Serve ``inference.GRPCInferenceService`` on ``settings.grpc_port`` while the context is open; yields the port."""
    check_installed()
    import grpc

    from runtime.grpc.servicer import Servicer, handler

    settings = service.settings
    server = grpc.aio.server(
        options=[
            # The same request size limit as HTTP bodies (a request over it: RESOURCE_EXHAUSTED before decoding).
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            # One process owns the port, unless several workers share it on purpose (SO_REUSEPORT, grpc's default
            # on Linux, as uvicorn's workers share the HTTP port).
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ]
    )
    server.add_generic_rpc_handlers((handler(Servicer(service)),))
    try:
        port = server.add_insecure_port(address(settings.host, settings.grpc_port))
    except RuntimeError as e:
        raise ConfigurationError(f"cannot bind gRPC to {address(settings.host, settings.grpc_port)}: {e}") from e
    await server.start()
    log.info("gRPC serving", extra={"grpc_port": port})
    try:
        yield port
    finally:
        await server.stop(settings.graceful_timeout)
