"""What `protocol.EdgeHttpProtocol` enforces (`ProtocolLimits`), its flow control and the responses it writes itself."""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.flow_control import FlowControl

from runtime.http.errors import error_body


@dataclass(frozen=True)
class ProtocolLimits:
    """What `EdgeHttpProtocol` enforces; 0 / False turns a part off (see `protocol`'s docstring)."""

    coalesce_writes: bool = True
    header_timeout_s: float = 0.0
    body_timeout_s: float = 0.0
    max_pipelined: int = 0
    max_header_bytes: int = 0
    max_connections: int = 0

    @property
    def shapes_reads(self) -> bool:
        """True when incoming bytes must go through `EdgeHttpProtocol._feed` rather than uvicorn's own path."""
        return bool(self.header_timeout_s or self.body_timeout_s or self.max_pipelined or self.max_header_bytes)

    @property
    def any_read_limit(self) -> bool:
        return self.shapes_reads or bool(self.max_connections)

    @property
    def active(self) -> bool:
        return self.coalesce_writes or self.any_read_limit


class GatedFlow(FlowControl):
    """uvicorn's flow control, except that nothing resumes reading while the pipelining gate is closed."""

    gated = False

    def resume_reading(self) -> None:
        if not self.gated:
            super().resume_reading()


async def too_many_connections(scope: Scope, receive: Receive, send: Send) -> None:
    body = json.dumps(error_body("too many connections; retry shortly", "OVERLOADED"), separators=(",", ":"))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"retry-after", b"1"),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body.encode()})


def error_response(status: int, reason: bytes, message: str, code: str) -> bytes:
    body = json.dumps(error_body(message, code), separators=(",", ":")).encode()
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        % (status, reason, len(body))
    ) + body
