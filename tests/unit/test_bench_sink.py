"""The benchmark sink's parser: pipelined commands, a message's end split across reads."""

from __future__ import annotations

import asyncio

from benchmarks.smtp_sink import _EHLO, Counter, _Session


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def session() -> tuple[_Session, Transport]:
    protocol, transport = _Session(), Transport()
    protocol.connection_made(transport)
    transport.written.clear()
    return protocol, transport


def test_a_pipelined_transaction_is_answered_in_one_write_and_counted_once() -> None:
    before = Counter.messages
    protocol, transport = session()
    protocol.data_received(b"EHLO me\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
    assert transport.written == [_EHLO + b"250 OK\r\n250 OK\r\n354 go ahead\r\n"]
    protocol.data_received(b"Subject: x\r\n\r\n..dot-stuffed\r\n.\r\nQUIT\r\n")
    assert Counter.messages == before + 1
    assert transport.written[-1] == b"250 2.0.0 OK\r\n221 bye\r\n"
    assert transport.closed


def test_the_end_of_a_message_split_across_reads_is_found_and_nothing_else_ends_it() -> None:
    before = Counter.messages
    protocol, transport = session()
    protocol.data_received(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
    body = b"Subject: x\r\n\r\n" + b"line\r\n" * 1000 + b".\r\n"
    for n in range(0, len(body), 7):  # the end marker straddles reads
        protocol.data_received(body[n : n + 7])
    assert Counter.messages == before + 1
    protocol.data_received(b"MAIL FROM:<a@x>\r\nRCPT TO:<c@y>\r\nDATA\r\n.\r\n")
    assert Counter.messages == before + 2, "an empty message ends at its first line"
    assert sum(w.count(b"250 2.0.0 OK") for w in transport.written) == 2
