"""Reading a request body under a size limit: refused from Content-Length when it can be, else while streaming."""

from __future__ import annotations

from starlette.requests import Request

from runtime.errors import BadRequest, PayloadTooLarge


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The raw body; `PayloadTooLarge` as soon as it is known to exceed `limit` bytes (never buffered whole)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise BadRequest(f"Content-Length '{declared[:32]}' is not a number")
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
