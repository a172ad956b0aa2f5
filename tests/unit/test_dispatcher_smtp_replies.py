"""The reply reader of the SMTP pool: replies queued in order, however the bytes arrive.

Pipelined replies come in one read or in pieces, multi-line ones split anywhere; the reader
must hand out each reply whole and in order. A transport stand-in records what the reader asks
of it (the integration tests run it on real sockets).
"""

from __future__ import annotations

import asyncio

import pytest
from aiosmtplib.protocol import SMTPProtocol

from services.dispatcher.smtp import _Lost, _Wire

REPLIES = b"250-first line\r\n250-second line\r\n250 last\r\n250 2.1.5 ok\r\n354 go ahead\r\n"


class _Transport(asyncio.WriteTransport):
    def __init__(self) -> None:
        super().__init__()
        self.protocol: asyncio.BaseProtocol | None = None
        self.closed = False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        self.closed = True


def _wire() -> _Wire:
    return _Wire(SMTPProtocol(loop=asyncio.get_running_loop()), _Transport())


@pytest.mark.parametrize("size", [len(REPLIES), 1, 2, 7, 16])
async def test_replies_come_out_whole_and_in_order_however_the_bytes_arrive(size: int) -> None:
    wire = _wire()
    for start in range(0, len(REPLIES), size):
        wire.data_received(REPLIES[start : start + size])
    got = [await wire.reply(1.0) for _ in range(3)]
    assert [(r.code, r.message) for r in got] == [
        (250, "first line\nsecond line\nlast"),
        (250, "2.1.5 ok"),
        (354, "go ahead"),
    ]
    assert wire.usable, "nothing left over"


async def test_a_reply_waits_for_its_last_line() -> None:
    wire = _wire()
    wire.data_received(b"250-part one\r\n")
    waiting = asyncio.ensure_future(wire.reply(5.0))
    await asyncio.sleep(0)
    assert not waiting.done(), "a continuation line is not a whole reply"
    wire.data_received(b"250 part two\r\n")
    assert (await waiting).message == "part one\npart two"


async def test_a_lost_connection_after_the_replies_still_hands_them_out_then_raises() -> None:
    wire = _wire()
    wire.data_received(b"421 4.7.0 closing\r\n")
    wire.connection_lost(ConnectionResetError("reset"))
    assert (await wire.reply(1.0)).code == 421
    with pytest.raises(_Lost) as lost:
        await wire.reply(1.0)
    assert lost.value.reset, "a reset is told apart from a close"


async def test_garbage_instead_of_a_reply_ends_the_connection() -> None:
    wire = _wire()
    wire.data_received(b"HTTP/1.1 400 Bad Request\r\n")
    with pytest.raises(_Lost, match="malformed"):
        await wire.reply(1.0)
    assert not wire.usable
