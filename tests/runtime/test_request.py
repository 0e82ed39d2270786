"""`runtime.http.request.read_body`: the plain-ASGI body reader of the /predict hot path."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import ClientDisconnect

from runtime.errors import BadRequest, PayloadTooLarge
from runtime.http.request import read_body


def _receiver(*messages: dict[str, Any]) -> Any:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    return receive


def _read(*messages: dict[str, Any], declared: str | None = None, limit: int = 100) -> bytes:
    return asyncio.run(read_body(_receiver(*messages), declared, limit))


def test_one_message_body_is_returned_whole() -> None:
    assert _read({"type": "http.request", "body": b'{"a": 1}'}, declared="8") == b'{"a": 1}'


def test_chunks_are_joined_in_order() -> None:
    body = _read(
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b"cd"},
    )
    assert body == b"abcd"


@pytest.mark.parametrize(
    ("declared", "messages", "error", "match"),
    [
        pytest.param("101", [], PayloadTooLarge, "of 101 bytes exceeds the limit of 100", id="declared-too-large"),
        pytest.param("1e3", [], BadRequest, "Content-Length '1e3' is not a number", id="declared-not-a-number"),
        pytest.param("²", [], BadRequest, "is not a number", id="declared-unicode-digit"),
        pytest.param(
            None,
            [
                {"type": "http.request", "body": b"x" * 60, "more_body": True},
                {"type": "http.request", "body": b"x" * 41},
            ],
            PayloadTooLarge,
            "exceeds the limit of 100 bytes",
            id="streamed-too-large",
        ),
    ],
)
def test_limits_are_refused(declared: str | None, messages: list[dict[str, Any]], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        _read(*messages, declared=declared)


def test_disconnect_mid_body_raises_client_disconnect() -> None:
    with pytest.raises(ClientDisconnect):
        _read({"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.disconnect"})
