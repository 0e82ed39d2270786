"""`runtime.server.transport`: a response's header block and body leave in one write; nothing waits past a loop step."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from runtime.server.transport import CoalescingTransport

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.events.append("close")

    def write_eof(self) -> None:
        self.events.append("eof")

    def abort(self) -> None:
        self.events.append("abort")

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def _within_one_step(steps: Any) -> tuple[RecordingTransport, list[list[bytes]]]:
    """Run `steps(transport)` inside a loop step; return what was written then and after the step ended."""
    real = RecordingTransport()

    async def main() -> list[list[bytes]]:
        t = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        steps(t)
        during = list(real.writes)
        await asyncio.sleep(0)  # let the loop step end
        return [during, list(real.writes)]

    return real, asyncio.run(main())


def test_header_block_and_body_are_one_write() -> None:
    _, (during, after) = _within_one_step(lambda t: (t.write(HEAD), t.write(b"{}")))
    assert during == [HEAD + b"{}"]
    assert after == during


def test_header_block_alone_is_written_at_the_end_of_the_step() -> None:
    _, (during, after) = _within_one_step(lambda t: t.write(HEAD))
    assert during == []
    assert after == [HEAD]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b'{"body": 1}', id="body"),
        pytest.param(b"0\r\n\r\n", id="last-chunk"),  # ends like a header block, is not one
        pytest.param(b"HTTP/1.1 200 OK\r\n", id="partial-status"),
    ],
)
def test_anything_but_a_header_block_is_written_at_once(data: bytes) -> None:
    _, (during, _) = _within_one_step(lambda t: t.write(data))
    assert during == [data]


def test_close_and_eof_flush_first_and_abort_discards() -> None:
    real, (during, _) = _within_one_step(lambda t: (t.write(HEAD), t.close()))
    assert during == [HEAD] and real.events == ["close"]
    real, (during, _) = _within_one_step(lambda t: (t.write(HEAD), t.write_eof()))
    assert during == [HEAD] and real.events == ["eof"]
    real, (_, after) = _within_one_step(lambda t: (t.write(HEAD), t.abort()))
    assert after == [] and real.events == ["abort"]


def test_writelines_keeps_the_order() -> None:
    _, (during, _) = _within_one_step(lambda t: (t.write(HEAD), t.writelines([b"{", b"}"])))
    assert during == [HEAD + b"{}"]


def test_a_block_held_when_the_connection_goes_is_dropped() -> None:
    def reset(t: CoalescingTransport) -> None:
        t.write(HEAD)
        real.closing = True  # the peer reset the connection before the step ended

    real = RecordingTransport()

    async def main() -> None:
        reset(CoalescingTransport(real, asyncio.get_running_loop()))  # type: ignore[arg-type]
        await asyncio.sleep(0)

    asyncio.run(main())
    assert real.writes == []


def test_other_attributes_are_the_real_transports() -> None:
    real = RecordingTransport()
    loop = asyncio.new_event_loop()
    try:
        t = CoalescingTransport(real, loop)  # type: ignore[arg-type]
        assert t.get_extra_info("peername") == ("127.0.0.1", 1)
        assert not t.is_closing()
    finally:
        loop.close()
