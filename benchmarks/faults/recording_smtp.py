"""A recording SMTP server for the fault drills: logs every RCPT and every accepted Message-ID.

Run as ``python -m benchmarks.faults.recording_smtp --port P --log PATH [--drop-data R]
[--defer-rcpt R] [--seed S]``. It speaks just enough SMTP for the dispatcher (EHLO, MAIL,
RCPT, DATA, RSET, NOOP, QUIT) and writes one line per event to the log:

- ``R <code> <rcpt>``: a RCPT and the code answered (250, or 451 for a share ``--defer-rcpt``);
- ``A <rcpt> <message-id>``: a message accepted (250 after the final dot) for that recipient;
- ``X <rcpt>``: a connection dropped in the middle of DATA (a share ``--drop-data`` of DATA
  commands): the server answered 354, read none of the message, then reset the connection
  without a reply.

When it drops connections, every connection has a small receive buffer, and a dropping
session stops reading before its 354 and closes once part of the message has arrived, unread
in the kernel: the close is a TCP reset (never a FIN after the whole message was taken) and
the final dot never reached the server's program. The server prints ``ready`` when it
listens and flushes the log every ``_FLUSH_S`` and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import random
import re
import signal
import socket
import struct
import termios
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

_EHLO = b"250-recording-smtp\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 52428800\r\n"
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
_RECEIVE_BUFFER = 16 * 1024
_DROP_WAIT_S = 10.0
_FLUSH_S = 0.25


@dataclass
class Recorder:
    log: IO[str]
    drop_data: float
    defer_rcpt: float
    random: random.Random
    lines: list[str] = field(default_factory=list)

    def note(self, line: str) -> None:
        self.lines.append(line)

    def flush(self) -> None:
        if self.lines:
            self.log.write("\n".join(self.lines) + "\n")
            self.lines.clear()
        self.log.flush()


def _address(line: bytes) -> str:
    return line.partition(b"<")[2].partition(b">")[0].decode(errors="replace")


def _message_id(data: bytes) -> str:
    headers = data.partition(b"\r\n\r\n")[0]
    found = _MESSAGE_ID.search(headers)
    return found.group(1).decode(errors="replace") if found else "-"


class _Session:
    """One client connection: answers the verbs, records what happened."""

    def __init__(
        self, recorder: Recorder, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.recorder, self.reader, self.writer = recorder, reader, writer
        self.rcpts: list[str] = []

    async def run(self) -> None:
        self.writer.write(b"220 recording-smtp ESMTP\r\n")
        try:
            while True:
                line = await self.reader.readline()
                if not line or not await self.answer(line):
                    return
                await self.writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            self.writer.close()

    async def answer(self, line: bytes) -> bool:
        """Answer one command; False once the connection is to end."""
        verb = line[:4].upper()
        if verb in (b"EHLO", b"HELO"):
            self.writer.write(_EHLO)
        elif verb in (b"MAIL", b"RSET"):
            self.rcpts = []
            self.writer.write(b"250 OK\r\n")
        elif verb == b"RCPT":
            self.rcpt(_address(line))
        elif verb == b"DATA":
            return await self.data()
        elif verb == b"QUIT":
            self.writer.write(b"221 bye\r\n")
            await self.writer.drain()
            return False
        else:
            self.writer.write(b"250 OK\r\n")
        return True

    def rcpt(self, address: str) -> None:
        if self.recorder.random.random() < self.recorder.defer_rcpt:
            self.recorder.note(f"R 451 {address}")
            self.writer.write(b"451 4.7.1 try again later\r\n")
        else:
            self.recorder.note(f"R 250 {address}")
            self.rcpts.append(address)
            self.writer.write(b"250 OK\r\n")

    async def data(self) -> bool:
        if not self.rcpts:
            self.writer.write(b"503 5.5.1 no valid recipients\r\n")
            return True
        if self.recorder.random.random() < self.recorder.drop_data:
            # Stop reading before the client may send any data: asyncio would otherwise read
            # ahead from the socket (far more than this program asks for) and could hold the
            # whole message and its final dot when it closes. The drop waits until part of
            # the message is in the kernel, unread: closing then is a TCP reset (a close with
            # nothing unread is a FIN, which after a complete end of data the client rightly
            # calls unknown), and the final dot never reached this program.
            transport = cast(asyncio.Transport, self.writer.transport)
            transport.pause_reading()
            self.writer.write(b"354 go ahead\r\n")
            await self.writer.drain()
            await _until_unread(self.writer.get_extra_info("socket"))
            for address in self.rcpts:
                self.recorder.note(f"X {address}")
            transport.abort()  # a reset, no reply: the server took nothing
            return False
        self.writer.write(b"354 go ahead\r\n")
        await self.writer.drain()
        message_id = _message_id(await self.reader.readuntil(b"\r\n.\r\n"))
        for address in self.rcpts:
            self.recorder.note(f"A {address} {message_id}")
        self.rcpts = []
        self.writer.write(b"250 2.0.0 OK\r\n")
        return True


def _unread_bytes(sock: socket.socket) -> int:
    """Bytes in the socket's receive queue that nobody has read yet (``FIONREAD``)."""
    raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", raw)[0])


async def _until_unread(sock: socket.socket) -> None:
    """Wait (bounded) until the client's data has started to arrive, unread."""
    deadline = asyncio.get_running_loop().time() + _DROP_WAIT_S
    # Polling: with reading paused, the transport owns the socket and no event tells of data.
    while _unread_bytes(sock) == 0 and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.002)


def _listening_socket(port: int, *, small_window: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if small_window:
        # Set before listen so that every accepted connection inherits it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve(*, port: int, log: Path, drop_data: float, defer_rcpt: float, seed: int) -> None:
    with log.open("a") as out:
        recorder = Recorder(out, drop_data, defer_rcpt, random.Random(seed))

        async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _Session(recorder, reader, writer).run()

        sock = _listening_socket(port, small_window=drop_data > 0)
        server = await asyncio.start_server(session, sock=sock, limit=64 * 1024 * 1024)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print("ready", flush=True)
        async with server:
            while not stop.is_set():
                recorder.flush()
                try:
                    await asyncio.wait_for(stop.wait(), _FLUSH_S)
                except TimeoutError:
                    continue
        recorder.flush()


@dataclass
class SmtpRecord:
    """What the server saw, read back from its log."""

    accepted: dict[str, list[str]] = field(default_factory=dict)  # rcpt -> Message-IDs
    deferred: set[str] = field(default_factory=set)  # got a 451 at RCPT at least once
    dropped: set[str] = field(default_factory=set)  # had a DATA dropped at least once
    rcpt_commands: int = 0

    @classmethod
    def read(cls, log: Path) -> SmtpRecord:
        record = cls()
        if not log.exists():
            return record
        with log.open(errors="replace") as lines:
            for line in lines:
                kind, _, rest = line.rstrip("\n").partition(" ")
                if kind == "A":
                    rcpt, _, message_id = rest.partition(" ")
                    record.accepted.setdefault(rcpt, []).append(message_id)
                elif kind == "R":
                    record.rcpt_commands += 1
                    code, _, rcpt = rest.partition(" ")
                    if code != "250":
                        record.deferred.add(rcpt)
                elif kind == "X":
                    record.dropped.add(rest)
        return record

    def accepted_count(self) -> int:
        return sum(len(ids) for ids in self.accepted.values())

    def duplicates(self) -> int:
        return sum(len(ids) - 1 for ids in self.accepted.values() if len(ids) > 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--drop-data", type=float, default=0.0)
    parser.add_argument("--defer-rcpt", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(
        serve(
            port=args.port,
            log=args.log,
            drop_data=args.drop_data,
            defer_rcpt=args.defer_rcpt,
            seed=args.seed,
        )
    )


if __name__ == "__main__":
    main()
