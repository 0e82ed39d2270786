"""A lean asyncio WebSocket client (RFC 6455) for load tests: text frames only, no extensions.

The ``/predict`` load client (`bench.stream._http_client`) writes a prebuilt request on a raw asyncio stream; a
general-purpose client library (``websockets``: a reader task, a frame queue, futures per ``recv``) would add its
own cost to every ``/stream`` round trip and make the two paths incomparable. This client does what a raw HTTP
client does: write one frame, read one frame. Frames are masked with a fresh random key as the RFC requires of a
client (the server unmasks every frame either way).
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct

_TEXT, _CLOSE, _PING, _PONG = 0x1, 0x8, 0x9, 0xA


def mask(payload: bytes, key: bytes) -> bytes:
    """``payload`` XOR the 4-byte ``key`` repeated (RFC 6455 section 5.3), with one big-integer XOR."""
    n = len(payload)
    if n == 0:
        return payload
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")).to_bytes(n, "little")


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = os.urandom(4)
    return head + key + mask(payload, key)


class WebSocket:
    """One client connection: `send` a text message, `recv` the next (unfragmented, as uvicorn sends them; pings
    answered; a close frame raises)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, host: str, port: int, path: str, headers: dict[str, str] | None = None) -> WebSocket:
        reader, writer = await asyncio.open_connection(host, port)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = await reader.readuntil(b"\r\n\r\n")
        if not response.startswith(b"HTTP/1.1 101"):
            writer.close()
            status = response.split(b"\r\n", 1)[0].decode(errors="replace")
            raise ConnectionError(f"upgrade refused: {status}")
        return cls(reader, writer)

    async def send(self, text: str) -> None:
        self.writer.write(frame(_TEXT, text.encode()))

    async def recv(self) -> str:
        while True:
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(n)  # server frames are never masked
            opcode = b0 & 0x0F
            if opcode == _TEXT:
                return payload.decode()
            if opcode == _PING:
                self.writer.write(frame(_PONG, payload))
            elif opcode == _CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                raise ConnectionError(f"closed by the server: {code} {payload[2:].decode(errors='replace')}")

    async def close(self) -> None:
        self.writer.write(frame(_CLOSE, struct.pack("!H", 1000)))
        self.writer.close()
