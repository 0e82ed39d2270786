"""``/stream``: a WebSocket that keeps each symbol's last 60 candles on the server, over the same service core.

The protocol (README, "Streaming"):

- The upgrade request carries ``X-API-Key`` (and optionally ``X-Deadline-Ms``, a per-message budget). An
  ``Origin`` (sent by browsers) outside ``EDGE_CORS_ORIGINS`` gets 403 ``ORIGIN_REJECTED``; a missing or wrong key
  is refused before the handshake with the HTTP API's own 401 JSON body (the ASGI WebSocket denial
  response, which uvicorn and Starlette's TestClient support; a server without it gets close code 1008).
- Client -> server: JSON text frames ``{"symbol", "exchange", "candles": [1..60 candles]}`` with the seed's candle
  fields. Server -> client: one text frame per message, in order: ``{"symbol", "exchange", "status": "warming",
  "have": n, "need": 60}`` while the symbol has fewer than 60 candles, then exactly the ``/predict`` answer for
  the latest 60 (`Service.infer` on the same `Window`, so the same probabilities, risk and audit, bit for bit).
- A refused message gets ``{"error", "code", "details": [{"field", "message", "type"}], "request_id", "symbol",
  "exchange"}`` and changes nothing stored (`runtime.streams`); the connection stays open. Codes:
  ``BAD_REQUEST`` (not JSON), ``VALIDATION_FAILED`` (``candles.3.high``), ``TOO_MANY_SYMBOLS``,
  ``RATE_LIMITED``, ``OVERLOADED``, ``DEADLINE_EXCEEDED``, ``STALE_WINDOW``, ``NOT_READY``, ``INFERENCE_FAILED``.
- Closed by the server: a binary frame (1003), a message over ``EDGE_MAX_BODY_BYTES`` (1009), no message for
  ``EDGE_STREAM_IDLE_S`` (1000). uvicorn closes bad framing or UTF-8 itself (1002, 1007) and, on shutdown, 1012.

Messages of one connection are answered one at a time, in order; concurrency comes from connections, whose
windows share the batcher. Each message is authorized (rate limit) on its own, and each one that needs a signal
goes through admission, as one HTTP request would.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import msgspec
from pydantic import ValidationError
from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send

from runtime.constants import WINDOW_LENGTH
from runtime.decoding import decode_stream_message
from runtime.errors import EdgeError, OriginRejected, detail
from runtime.http.errors import error_body, error_headers, json_response
from runtime.http.request import parse_budget_ms
from runtime.metrics import Metrics
from runtime.schemas import SYMBOL_MAX_LENGTH
from runtime.service import Service
from runtime.streams import SymbolWindows

log = logging.getLogger("runtime.http")

#: Close codes (RFC 6455 section 7.4.1).
NORMAL, POLICY_VIOLATION, UNSUPPORTED_DATA, MESSAGE_TOO_BIG = 1000, 1008, 1003, 1009

_OUTCOMES = {
    "VALIDATION_FAILED": "invalid",
    "BAD_REQUEST": "invalid",
    "TOO_MANY_SYMBOLS": "invalid",
    "STALE_WINDOW": "invalid",
    "OVERLOADED": "overloaded",
    "RATE_LIMITED": "rate_limited",
}


class _Names(msgspec.Struct):
    symbol: str | None = None
    exchange: str | None = None


_names = msgspec.json.Decoder(_Names).decode
_encode = msgspec.json.encode


def _names_of(frame: str) -> tuple[str | None, str | None]:
    """Symbol and exchange of a refused message, when it has them (to name them in the error)."""
    try:
        names = _names(frame)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None, None
    clip = SYMBOL_MAX_LENGTH  # echo what was sent, never a megabyte of it
    return (None if names.symbol is None else names.symbol[:clip]), (
        None if names.exchange is None else names.exchange[:clip]
    )


class StreamEndpoint:
    """The ``/stream`` WebSocket as a plain ASGI app (no Starlette `WebSocket` state machine per message)."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        api_key = deadline_ms = origin = None
        for name, value in scope["headers"]:
            if name == b"x-api-key" and api_key is None:
                api_key = value.decode("latin-1")
            elif name == b"x-deadline-ms" and deadline_ms is None:
                deadline_ms = value.decode("latin-1")
            elif name == b"origin" and origin is None:
                origin = value.decode("latin-1")
        service = self.service
        connection = os.urandom(8).hex()
        try:
            allowed = service.settings.cors_origins
            if origin is not None and origin not in allowed and "*" not in allowed:
                # Browsers send Origin and no CORS preflight guards an upgrade: the CORS list decides, as for HTTP.
                raise OriginRejected(f"origin '{origin[:80]}' is not allowed (EDGE_CORS_ORIGINS)")
            service.authorize(api_key)
            budget_ms = parse_budget_ms(deadline_ms)
        except EdgeError as exc:
            await _deny(scope, receive, send, exc, connection)
            return
        await send({"type": "websocket.accept"})
        metrics = service.metrics
        metrics.stream_connections.inc()
        try:
            await self._serve(receive, send, api_key, budget_ms, connection, metrics)
        except OSError:  # the client went away while an answer was being sent (uvicorn's ClientDisconnected)
            pass
        finally:
            metrics.stream_connections.dec()

    async def _serve(
        self, receive: Receive, send: Send, api_key: str | None, budget_ms: float | None, rid: str, metrics: Metrics
    ) -> None:
        settings = self.service.settings
        windows = SymbolWindows(settings.stream_max_symbols)
        idle = settings.stream_idle_s or None
        limit = settings.max_body_bytes
        outcomes = metrics.stream_outcome
        count = 0
        while True:
            try:
                async with asyncio.timeout(idle):
                    message = await receive()
            except TimeoutError:
                await _close(send, NORMAL, f"no message for {idle:g} s (EDGE_STREAM_IDLE_S)")
                return
            if message["type"] != "websocket.receive":
                return  # websocket.disconnect: the windows go with this frame
            text = message.get("text")
            if text is None:
                await _close(send, UNSUPPORTED_DATA, "binary frames are not supported: send JSON text frames")
                return
            size = len(text)
            if size > limit or (size * 4 > limit and len(text.encode()) > limit):
                await _close(send, MESSAGE_TOO_BIG, f"message over {limit} bytes (EDGE_MAX_BODY_BYTES)")
                return
            count += 1
            answer, outcome = await self._answer(text, windows, api_key, budget_ms, f"{rid}-{count}")
            outcomes[outcome].inc()
            await send({"type": "websocket.send", "text": answer.decode()})

    async def _answer(
        self, frame: str, windows: SymbolWindows, api_key: str | None, budget_ms: float | None, rid: str
    ) -> tuple[bytes, str]:
        """One message -> (its answer, its outcome label). Stores the candles only when answered in full."""
        service = self.service
        symbol = exchange = None
        last = 0  # index of the message's last candle
        try:
            service.authorize(api_key)  # per message: the rate limit counts messages, as it counts HTTP requests
            candles = decode_stream_message(frame, service.settings.exchanges)
            symbol, exchange, last = candles.symbol, candles.exchange, len(candles.timestamps) - 1
            update = windows.prepare(candles)
            if update.have < WINDOW_LENGTH:
                windows.commit(update)
                warming = {"symbol": symbol, "exchange": exchange, "status": "warming", "have": update.have}
                return _encode({**warming, "need": WINDOW_LENGTH}), "warming"
            deadline = None if budget_ms is None else time.perf_counter() + budget_ms / 1000
            with service.admission():
                [payload], _ = await service.infer([update.window()], deadline=deadline, request_id=rid)
            windows.commit(update)
            return _encode(payload), "ok"
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False, include_context=False)
            details = [detail(err["loc"], err["msg"], err["type"]) for err in errors]
            symbol, exchange = _names_of(frame)
            if any(err["type"] == "json_invalid" for err in errors):
                body = error_body("message is not valid JSON", "BAD_REQUEST", details, rid)
            else:
                body = error_body("Validation Error", "VALIDATION_FAILED", details, rid)
            outcome = "invalid"
        except EdgeError as exc:
            details = exc.details
            if exc.code == "STALE_WINDOW":  # the HTTP location names a body; here it is this message's last candle
                details = [detail(("candles", last, "timestamp"), d["message"], d["type"]) for d in details]
            body = error_body(exc.message, exc.code, details, rid)
            retry = error_headers(exc).get("Retry-After")
            if retry is not None:
                body["retry_after_s"] = float(retry)
            outcome = _OUTCOMES.get(exc.code, "error")
        except Exception as exc:
            log.exception("unhandled error on /stream", extra={"request_id": rid})
            debug = service.settings.debug
            message = f"internal error: {type(exc).__name__}: {exc}" if debug else "internal server error"
            body = error_body(message, "INTERNAL_ERROR", rid=rid)
            outcome = "error"
        body["symbol"], body["exchange"] = symbol, exchange
        return _encode(body), outcome


async def _close(send: Send, code: int, reason: str) -> None:
    await send({"type": "websocket.close", "code": code, "reason": reason[:120]})  # a reason is <= 123 bytes


async def _deny(scope: Scope, receive: Receive, send: Send, exc: EdgeError, rid: str) -> None:
    """Refuse the handshake: the HTTP error (401, 429, 400) as `/predict` answers it, or close 1008 without the
    ASGI denial-response extension."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = error_body(exc.message, exc.code, exc.details, rid)
        await json_response(exc.status_code, body, error_headers(exc))(scope, receive, send)
    else:
        await _close(send, POLICY_VIOLATION, exc.message)


def routes(service: Service) -> list[WebSocketRoute]:
    return [WebSocketRoute("/stream", StreamEndpoint(service))]
