"""Reading a request body under a size limit: refused from Content-Length when it can be, else while streaming."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from runtime.errors import BadRequest, PayloadTooLarge


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The raw body; `PayloadTooLarge` as soon as it is known to exceed `limit` bytes (never buffered whole)."""
    return await read_body(request.receive, request.headers.get("content-length"), limit)


async def read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The body from ASGI `receive`, given the Content-Length header's value (None when absent).

    Plain ASGI, so the `/predict` hot path needs no `Request`. A client that goes away mid-body raises Starlette's
    `ClientDisconnect`, as `Request.stream()` does.
    """
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise BadRequest(f"Content-Length '{declared[:32]}' is not a number")
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        if message["type"] != "http.request":
            continue
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
