"""`EdgeHttpProtocol`: uvicorn's httptools protocol with the limits a hostile client must not get past.

Each part is behind a setting and off at 0 / false; with all of them off the server runs stock uvicorn httptools
(`serve.uvicorn_options`). uvicorn is pinned (pyproject) to the range these overrides were read against
(``uvicorn/protocols/http/httptools_impl.py``, 0.55):

- ``coalesce_writes``: each response's header block and body leave in one write (`CoalescingTransport`).
- ``header_timeout_s``: from the connection or the previous response to a complete header block. Past it a
  client that sent part of a request gets a 408 and the connection is closed; one that sent nothing is closed.
- ``body_timeout_s``: from the end of the headers to the end of the body. Past it the request's app sees a
  disconnect (so it frees its admission slot), the client a 408 if no response has started, and the connection
  is closed.
- ``max_pipelined``: parsed requests not yet answered on one connection. At the limit the bytes already read wait
  unparsed and reading pauses until responses drain (stock uvicorn resumes reading after every response, so a
  client that never reads could queue requests without bound). Each next pipelined request starts after the
  loop has polled for I/O, so a flooding connection takes turns with the others.
- ``max_header_bytes``: the request line and headers are counted as they arrive, before httptools buffers them;
  past the budget 431 and close, in O(budget) work whatever the client sends.
- ``model_free``: the tasks of requests that never reach the model (GET, HEAD, OPTIONS: probes, metrics, docs),
  so that `serve`'s backlog counts only the requests that may (a flood of pipelined probes must not push a lone
  ``/predict`` off the inline path onto the inference thread, where, measured under such a flood, its model run
  waited 5-40 ms for the GIL and the CPU).
- ``max_connections``: past this many open connections a new one may still ask the probes (``GET /health``,
  ``/ready``, ``/v2/health/*``); anything else it asks gets a JSON 503 and the close. Existing connections are
  untouched.

To know where a request's head ends without the parser's help (httptools cannot pause), bytes are fed to it up
to the end-of-headers marker, then up to the end of a Content-Length body; only a chunked body is fed in slices.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from dataclasses import dataclass
from typing import Any

import httptools
from starlette.types import Receive, Scope, Send
from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from runtime.http.errors import error_body
from runtime.server.transport import CoalescingTransport

_END_OF_HEAD = b"\r\n\r\n"
_CHUNKED_SLICE = 4096
#: After a refusal, how much the client may still send (dropped unread) and for how long, before the close.
_LINGER_BYTES = 2 << 20
_LINGER_S = 1.0


@dataclass(frozen=True)
class ProtocolLimits:
    """What `EdgeHttpProtocol` enforces; 0 / False turns a part off (see the module docstring)."""

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


class _GatedFlow(FlowControl):
    """uvicorn's flow control, except that nothing resumes reading while the pipelining gate is closed."""

    gated = False

    def resume_reading(self) -> None:
        if not self.gated:
            super().resume_reading()


_PROBES = frozenset({b"/health", b"/ready", b"/v2/health/live", b"/v2/health/ready"})
#: Methods of the routes that never run the model: every model route is a POST (or the /stream upgrade, which
#: the WebSocket protocol starts, not this one).
_MODEL_FREE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def _too_many_connections(scope: Scope, receive: Receive, send: Send) -> None:
    body = json.dumps(error_body("too many connections; retry shortly", "OVERLOADED"), separators=(",", ":"))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"retry-after", b"1"),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body.encode()})


def _error_response(status: int, reason: bytes, message: str, code: str) -> bytes:
    body = json.dumps(error_body(message, code), separators=(",", ":")).encode()
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        % (status, reason, len(body))
    ) + body


class EdgeHttpProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` with `ProtocolLimits` (``functools.partial(EdgeHttpProtocol, limits=...)`` as uvicorn's
    ``http``)."""

    def __init__(
        self,
        *args: object,
        limits: ProtocolLimits | None = None,
        model_free: set[asyncio.Task[Any]] | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.limits = limits or ProtocolLimits()
        self.model_free = model_free
        self._coalescing: CoalescingTransport | None = None
        self._in_head = True  # between requests or inside a request's head (not in its body)
        self._head_bytes = 0  # bytes of the current head fed so far
        self._head_tail = b""  # its last 3 bytes: an end-of-head marker may straddle two reads
        self._body_left: int | None = 0  # bytes left of a Content-Length body; None: chunked
        self._stash = b""  # bytes read but not fed while the pipelining gate is closed (from _stash_pos on)
        self._stash_pos = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_left: int | None = None  # bytes still to drop after a refusal
        self._linger_timer: asyncio.TimerHandle | None = None
        self._over_cap = False
        self._answering = False  # inside on_response_complete

    # -- connection --------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if self.limits.coalesce_writes:
            self._coalescing = CoalescingTransport(transport, self.loop)
            transport = self._coalescing  # type: ignore[assignment]
        super().connection_made(transport)
        self._over_cap = bool(self.limits.max_connections) and len(self.connections) > self.limits.max_connections
        if self.limits.max_pipelined:
            self.flow = _GatedFlow(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._coalescing is not None:
            self._coalescing.discard()
        self._cancel_timers()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        self._stash, self._stash_pos = b"", 0
        super().connection_lost(exc)

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None

    def _outstanding(self) -> int:
        """Requests parsed and not yet answered on this connection."""
        running = self.cycle is not None and not self.cycle.response_complete
        return len(self.pipeline) + running

    def _refuse(self, status: int, reason: bytes, message: str, code: str, *, respond: bool) -> None:
        """End the connection: every request on it sees a disconnect (its app frees what it holds); the client
        gets the error if no response is under way, else just the close."""
        self._cancel_timers()
        self._stash, self._stash_pos = b"", 0
        for cycle in (self.cycle, *(queued for queued, _ in self.pipeline)):
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
        if self.transport.is_closing():
            return
        if not respond:
            self.transport.close()
            return
        self.transport.write(_error_response(status, reason, message, code))
        # Lingering close: send the answer and a FIN, then read and drop what the client is still sending for a
        # bounded time and size. Closing with unread bytes would send a reset that can destroy the answer.
        self._linger_left = _LINGER_BYTES
        self._linger_timer = self.loop.call_later(_LINGER_S, self.transport.close)
        if isinstance(self.flow, _GatedFlow):
            self.flow.gated = False
        self.flow.resume_reading()
        try:
            self.transport.write_eof()
        except (NotImplementedError, RuntimeError, OSError):  # pragma: no cover - TCP transports support it
            self.transport.close()

    # -- reading -----------------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._linger_left is not None:
            self._linger_left -= len(data)
            if self._linger_left <= 0:
                self.transport.close()
            return
        if not self.limits.shapes_reads:
            super().data_received(data)
            return
        self._unset_keepalive_if_required()
        if isinstance(self.flow, _GatedFlow) and self.flow.gated:
            # Something resumed the transport while the gate is closed: keep this read, pause again.
            self._stash += data
            self.flow.read_paused = False
            self.flow.pause_reading()
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """Feed what is stashed and `data` to the parser, a request head or a known body at a time."""
        pos = 0
        if self._stash:
            # The stash is kept whole with an offset: re-slicing it per request would copy it per request.
            if data:
                data = self._stash[self._stash_pos :] + data
            else:
                data, pos = self._stash, self._stash_pos
            self._stash, self._stash_pos = b"", 0
        end = len(data)
        while pos < end and self.parser is not None and not self.transport.is_closing():
            if self._in_head:
                if self.limits.max_pipelined and self._outstanding() >= self.limits.max_pipelined:
                    self._close_gate(data, pos)
                    return
                stop = self._head_end(data, pos)
                if stop is None:
                    return  # refused: over the header budget
            elif self._body_left is None:
                stop = min(end, pos + _CHUNKED_SLICE)
            else:
                stop = min(end, pos + max(self._body_left, 1))
                self._body_left = max(0, self._body_left - (stop - pos))
            if not self._parse(data if pos == 0 and stop == end else data[pos:stop]):
                return
            pos = stop

    def _head_end(self, data: bytes, pos: int) -> int | None:
        """Where the current head ends in `data` (or `len(data)` if it does not end there); None once refused."""
        budget = self.limits.max_header_bytes
        left = budget - self._head_bytes if budget else len(data)
        tail = self._head_tail
        straddle = (tail + data[pos : pos + 3]).find(_END_OF_HEAD) if tail else -1
        if straddle >= 0:
            stop = pos + straddle + 4 - len(tail)
        else:
            found = data.find(_END_OF_HEAD, pos, pos + left)
            stop = found + 4 if found >= 0 else len(data)
        # Past the budget with no end in sight: refused before the parser (or this loop) sees more of it.
        if budget and self._head_bytes + (stop - pos) > budget:
            self._refuse(
                431,
                b"Request Header Fields Too Large",
                f"request line and headers exceed the limit of {budget} bytes",
                "HEADERS_TOO_LARGE",
                respond=not self._outstanding(),
            )
            return None
        self._head_bytes += stop - pos  # reset when the parser reports the head complete
        self._head_tail = (tail + data[max(pos, stop - 3) : stop])[-3:]
        return stop

    def _parse(self, chunk: bytes) -> bool:
        """One `feed_data`, with uvicorn's handling of parser errors and upgrades; False when the parser is done."""
        try:
            self.parser.feed_data(chunk)
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self._cancel_timers()
            self.send_400_response(msg)
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                # The connection now belongs to the WebSocket protocol (its own idle limit, EDGE_STREAM_IDLE_S):
                # a header timer armed as the upgrade request completed would otherwise close it mid-stream.
                self._cancel_timers()
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        return True

    # -- pipelining gate -------------------------------------------------------------------------------------
    def _close_gate(self, data: bytes, pos: int) -> None:
        assert isinstance(self.flow, _GatedFlow)
        self._stash, self._stash_pos = data, pos
        self.flow.gated = True
        self.flow.pause_reading()

    def _open_gate(self) -> None:
        flow = self.flow
        if not isinstance(flow, _GatedFlow) or not flow.gated:
            return
        if self._outstanding() >= self.limits.max_pipelined:
            return
        flow.gated = False
        self._feed(b"")
        if not flow.gated:
            flow.resume_reading()

    # -- parser callbacks ------------------------------------------------------------------------------------
    def _is_probe(self) -> bool:
        try:
            path = httptools.parse_url(self.url).path
        except httptools.HttpParserInvalidURLError:
            return False
        return self.parser.get_method() in (b"GET", b"HEAD") and path in _PROBES

    def on_headers_complete(self) -> None:
        if self._over_cap and not self._is_probe():
            # uvicorn picks the app for this request inside on_headers_complete: hand it the 503 for this one.
            app, self.app = self.app, _too_many_connections
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        else:
            super().on_headers_complete()
        self._in_head = False
        self._head_bytes = 0
        self._head_tail = b""
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        length: int | None = 0
        for name, value in self.headers:
            if name == b"transfer-encoding":
                length = None
                break
            if name == b"content-length":
                length = int(value)  # llhttp has refused a Content-Length that is not a number
        self._body_left = length
        if length != 0 and self.limits.body_timeout_s > 0:
            self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_timed_out)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._body_left = 0
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        if self._outstanding() == 0:  # answered before its body ended (a 413, a 401): the next head is timed now
            self._arm_header_timer()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        if self._answering and self.limits.max_pipelined:
            # The next pipelined request of a connection starts after the loop has polled for I/O, not in the
            # same step as the response before it: a connection full of pipelined requests takes turns with
            # the others instead of running its requests back to back.
            self.loop.call_later(0, self._start_if_open, cycle, app)
        else:
            self._create_task(cycle, app)

    def _start_if_open(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        if not self.transport.is_closing():  # as uvicorn: no pipelined request starts on a closing connection
            self._create_task(cycle, app)

    def _create_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        """uvicorn's `_start_asgi_task`, and the task of a request that never runs the model tagged from its
        creation (before it first runs, so the backlog never counts it)."""
        if self.model_free is None or cycle.scope["method"] not in _MODEL_FREE_METHODS:
            super()._start_asgi_task(cycle, app)
            return
        context = contextvars.Context() if self.config.reset_contextvars else None
        task = self.loop.create_task(cycle.run_asgi(app), context=context)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(self.model_free.discard)  # in the same loop step as the line above
        self.model_free.add(task)
        self.tasks.add(task)

    def on_response_complete(self) -> None:
        self._answering = True
        try:
            super().on_response_complete()
        finally:
            self._answering = False
        if self.transport.is_closing():
            return
        self._open_gate()
        if self._outstanding() == 0 and self._in_head:
            self._arm_header_timer()

    # -- timeouts ----------------------------------------------------------------------------------------------
    def _arm_header_timer(self) -> None:
        if self.limits.header_timeout_s <= 0:
            return
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._header_timed_out)

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self._outstanding():
            return
        seconds = self.limits.header_timeout_s
        message = f"request headers not received within {seconds:g} s"
        # A connection that asked nothing is closed as an idle keep-alive one is, without an answer.
        self._refuse(408, b"Request Timeout", message, "REQUEST_TIMEOUT", respond=bool(self._head_bytes))

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None:
            return
        seconds = self.limits.body_timeout_s
        message = f"request body not received within {seconds:g} s"
        # The app waiting for this body sees a disconnect now (`_refuse`), not when the client goes: its admission
        # slot is released whatever the client does next.
        respond = not self.pipeline and not cycle.response_started
        self._refuse(408, b"Request Timeout", message, "REQUEST_TIMEOUT", respond=respond)
