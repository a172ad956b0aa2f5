"""A small SMTP server on raw asyncio sockets that fails *inside* DATA on purpose.

aiosmtpd reads the whole message before a handler sees it, so it cannot drop a connection in
the middle of the message data. This server can, per recipient or for a share of transactions:

- ``drop_mid_data``: close the connection after the first chunk of message data, before the
  final dot was read. Its receive buffer is small, so the rest of the message is still unread
  in the kernel when it closes, and the kernel answers with a TCP reset, as a real server that
  dies or gives up mid-message does. (A message that arrives whole in the first chunk, a few
  KB, is not dropped: the server has read its dot; ``events["dropped_mid_data"]`` counts the
  drops that happened.)
- ``stall_reading``: stop reading right after ``354`` and close after ``stall_s``; a message
  bigger than the kernel's buffers is then still partly in the client's write buffer.
- ``silent_after_dot``: read the whole message, then never answer (the client times out: the
  server may have taken it).
- ``replies_after_dot``: answer the final dot with the given replies in turn (then 250).

Every complete message is counted (``received``), and those answered 2xx are ``accepted``
with their Message-ID, so tests count copies per recipient.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import random
import re
import socket
import termios
import threading
from collections import Counter
from dataclasses import dataclass, field

_MESSAGE_ID = re.compile(rb"(?im)^Message-ID:\s*(<[^>\r\n]*>)")
_END = b"\r\n.\r\n"


@dataclass
class RawScript:
    """What the server does; fields may be changed while it runs (read under its lock)."""

    drop_mid_data: dict[str, int] = field(default_factory=dict)  # address -> drops left
    drop_mid_data_ratio: float = 0.0  # share of all transactions dropped mid-DATA
    stall_reading: set[str] = field(default_factory=set)
    stall_s: float = 0.5
    silent_after_dot: set[str] = field(default_factory=set)
    replies_after_dot: dict[str, list[str]] = field(default_factory=dict)
    seed: int = 11


@dataclass
class Received:
    rcpt: str
    message_id: str
    reply: str  # "" when none was sent


class _Session(asyncio.Protocol):
    def __init__(self, server: RawMta) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.in_data = False
        self.rcpts: list[str] = []
        self.action = ""  # what this transaction's DATA does

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.sessions.add(self)
        self._send("220 raw-mta ready")

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.sessions.discard(self)

    def _send(self, line: str) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(line.encode() + b"\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.in_data:
            self._data_chunk()
            return
        while not self.in_data and b"\r\n" in self.buffer:
            end = self.buffer.index(b"\r\n")
            line = bytes(self.buffer[:end]).decode("utf-8", "replace")
            del self.buffer[: end + 2]
            self._command(line)
        if self.in_data and self.buffer:
            self._data_chunk()

    def _command(self, line: str) -> None:
        verb = line[:4].upper()
        if verb == "EHLO":
            self._send("250-raw-mta\r\n250-8BITMIME\r\n250 SMTPUTF8")
        elif verb == "HELO":
            self._send("250 ok")
        elif verb == "MAIL":
            self.rcpts = []
            self._send("250 2.1.0 ok")
        elif verb == "RCPT":
            match = re.search(r"<([^>]*)>", line)
            self.rcpts.append(match.group(1) if match else "")
            self._send("250 2.1.5 ok")
        elif verb == "DATA":
            self.action = self.server.decide(self.rcpts)
            self.in_data = True
            self._send("354 end with <CRLF>.<CRLF>")
            if self.action == "stall_reading" and self.transport is not None:
                self.transport.pause_reading()
                asyncio.get_running_loop().call_later(self.server.script.stall_s, self._abort)
        elif verb == "RSET":
            self.rcpts = []
            self._send("250 ok")
        elif verb == "QUIT":
            self._send("221 bye")
            assert self.transport is not None
            self.transport.close()
        else:
            self._send("250 ok")

    def _abort(self) -> None:
        if self.transport is not None:
            self.server.count("stalled_and_closed")
            self.transport.close()

    def _close_once_data_waits(self, deadline: float) -> None:
        """Close while part of the message sits unread in the kernel, so that the kernel answers
        with a TCP reset. Closed with nothing unread (the rest still on its way, as on a busy
        machine), the close would be a plain FIN after the client wrote the whole message: the
        client must then take it that the server may have it (``unknown``), and the drop
        would not be the fault this server stages."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        unread = array.array("i", [0])
        fcntl.ioctl(transport.get_extra_info("socket").fileno(), termios.FIONREAD, unread)
        loop = asyncio.get_running_loop()
        if unread[0] > 0 or loop.time() > deadline:
            transport.close()
        else:
            loop.call_later(0.005, self._close_once_data_waits, deadline)

    def _data_chunk(self) -> None:
        end = self.buffer.find(_END)
        if self.action == "drop_mid_data" and end < 0:
            # The final dot is not read yet: leave it unread and go away.
            self.server.count("dropped_mid_data")
            assert self.transport is not None
            self.transport.pause_reading()
            self._close_once_data_waits(asyncio.get_running_loop().time() + 10)
            return
        if end < 0:
            return
        data = bytes(self.buffer[: end + 2]).replace(b"\r\n..", b"\r\n.")
        del self.buffer[: end + len(_END)]
        self.in_data = False
        match = _MESSAGE_ID.search(data)
        message_id = match.group(1).decode() if match else ""
        reply = self.server.reply_after_dot(self.rcpts, self.action)
        self.server.record([Received(r, message_id, reply) for r in self.rcpts])
        if reply:
            self._send(reply)


class RawMta:
    """Runs the server on a free loopback port in a thread of its own."""

    def __init__(self, script: RawScript | None = None) -> None:
        self.script = script or RawScript()
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.events: Counter[str] = Counter()
        self.sessions: set[_Session] = set()  # touched on the server's thread only
        self._random = random.Random(self.script.seed)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A small receive buffer, inherited by accepted sockets: a message is read in several
        # chunks, and one dropped mid-DATA still has its end unread in the kernel.
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.setblocking(False)
        self.port = int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def decide(self, rcpts: list[str]) -> str:
        with self.lock:
            script = self.script
            for rcpt in rcpts:
                left = script.drop_mid_data.get(rcpt, 0)
                if left > 0:
                    script.drop_mid_data[rcpt] = left - 1
                    return "drop_mid_data"
                if rcpt in script.stall_reading:
                    return "stall_reading"
                if rcpt in script.silent_after_dot:
                    return "silent_after_dot"
            if self._random.random() < script.drop_mid_data_ratio:
                return "drop_mid_data"
        return ""

    def reply_after_dot(self, rcpts: list[str], action: str) -> str:
        if action == "silent_after_dot":
            self.count("silent_after_dot")
            return ""
        with self.lock:
            for rcpt in rcpts:
                queued = self.script.replies_after_dot.get(rcpt)
                if queued:
                    return queued.pop(0)
        return "250 2.0.0 queued"

    def count(self, event: str) -> None:
        with self.lock:
            self.events[event] += 1

    def record(self, items: list[Received]) -> None:
        with self.lock:
            self.received.extend(items)

    def accepted(self) -> Counter[str]:
        """Copies answered 2xx, per recipient."""
        with self.lock:
            return Counter(r.rcpt for r in self.received if r.reply.startswith("2"))

    def accepted_message_ids(self) -> Counter[str]:
        with self.lock:
            return Counter(r.message_id for r in self.received if r.reply.startswith("2"))

    def complete_messages(self) -> Counter[str]:
        """Every message whose final dot arrived, answered or not, per recipient."""
        with self.lock:
            return Counter(r.rcpt for r in self.received)

    def __enter__(self) -> RawMta:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(timeout=10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Session(self), sock=self._sock
        )

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            if session.transport is not None:
                session.transport.abort()
        await asyncio.sleep(0)

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
