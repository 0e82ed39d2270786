"""A transport for uvicorn's httptools protocol that sends each response's status line, headers and body in one write.

uvicorn writes the status line and headers when the app sends ``http.response.start`` and the body when it sends
``http.response.body``: two ``send()`` calls, so with TCP_NODELAY two segments and two wake-ups of the client
for a response of a few hundred bytes. `CoalescingTransport` (which `protocol.EdgeHttpProtocol` hands uvicorn)
holds a header block until the body follows, then writes both at once. Nothing is held past the current event-loop
step: a response whose body comes later (streaming, or the 100-continue interim line) gets its header block at the
end of the step, so a client never waits on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

_STATUS_LINE = b"HTTP/1."
_END_OF_HEADERS = b"\r\n\r\n"


class CoalescingTransport:
    """A transport proxy: a write that is a whole header block waits for the next write of the same loop step."""

    __slots__ = ("_flush_at_step_end", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._flush_at_step_end: asyncio.Handle | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held is not None:
            self._transport.write(self._take() + data)
        elif data[:7] == _STATUS_LINE and data[-4:] == _END_OF_HEADERS:
            self._held = bytes(data)
            self._flush_at_step_end = self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(chunks))

    def _take(self) -> bytes:
        held, self._held = self._held, None
        if self._flush_at_step_end is not None:
            self._flush_at_step_end.cancel()
            self._flush_at_step_end = None
        assert held is not None
        return held

    def flush(self) -> None:
        """Write a held header block now (also run at the end of the loop step that held it).

        Dropped if the connection is already going away: nothing can reach that client any more, and uvloop
        raises on a write to a closed handle.
        """
        if self._held is not None:
            held = self._take()
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self.discard()
        self._transport.abort()

    def discard(self) -> None:
        """Forget a held header block (the connection is lost)."""
        if self._held is not None:
            self._take()

    def __getattr__(self, name: str) -> Any:
        # Everything else (get_extra_info, pause_reading, is_closing, ...) is the real transport's.
        return getattr(self._transport, name)
