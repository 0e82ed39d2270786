"""What every HTTP route reads from a request: its body under a size limit (refused from Content-Length when it
can be, else while streaming), its JSON content type, its deadline header and its request id."""

from __future__ import annotations

import time

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope

from runtime.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, detail


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


_JSON_TYPES = ("application/json",)
_DEADLINE_MAX_MS = 600_000


def request_id(scope: Scope) -> str | None:
    """The request id `EdgeMiddleware` gave this request (echoed from a safe X-Request-Id, else generated)."""
    rid = scope.get("edge.request_id")
    return rid if isinstance(rid, str) else None


def check_json_type(content_type: str | None) -> None:
    content_type = content_type or ""
    if content_type.split(";", 1)[0].strip().lower() not in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type '{content_type[:100]}' is not supported; send 'application/json'",
            details=[detail(("header", "content-type"), "must be application/json", "media_type")],
        )


async def read_json(receive: Receive, content_type: str | None, length: str | None, limit: int) -> bytes:
    """A JSON request's body from its Content-Type and Content-Length values: 415, 400 and 413 as they apply."""
    check_json_type(content_type)
    body = await read_body(receive, length, limit)
    if not body:
        raise BadRequest("request body is empty; send a JSON object")
    return body


async def read_json_body(request: Request, limit: int) -> bytes:
    headers = request.headers
    return await read_json(request.receive, headers.get("content-type"), headers.get("content-length"), limit)


def parse_deadline(raw: str | None) -> float | None:
    """An optional ``X-Deadline-Ms`` header: the request's budget in ms from now; stale work is not computed."""
    budget = parse_budget_ms(raw)
    return None if budget is None else time.perf_counter() + budget / 1000


def parse_budget_ms(raw: str | None) -> float | None:
    """The milliseconds an ``X-Deadline-Ms`` header grants (None when absent); 400 unless in (0, 600000]."""
    if raw is None:
        return None
    try:
        budget = float(raw)
    except ValueError:
        budget = float("nan")
    if not (0 < budget <= _DEADLINE_MAX_MS):
        raise BadRequest(
            f"X-Deadline-Ms '{raw[:32]}' must be a number of milliseconds in (0, {_DEADLINE_MAX_MS}]",
            details=[detail(("header", "x-deadline-ms"), f"must be in (0, {_DEADLINE_MAX_MS}]", "value_error")],
        )
    return budget


def deadline(request: Request) -> float | None:
    return parse_deadline(request.headers.get("x-deadline-ms"))
