"""A minimal, fast SMTP sink for the benchmark: accepts everything, counts, keeps nothing.

aiosmtpd saturates near 1,800 messages/s on this machine, below what the dispatcher can push;
this sink parses just enough SMTP (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT, pipelined or
not) to measure the client side. Run as ``python -m benchmarks.smtp_sink PORT``. A message to a
``probe-N@`` address prints ``probe N <arrival time>`` at once (the benchmark times
transactional mail during a campaign with it); on SIGTERM the sink prints the number of
messages received and exits.

The sink shares the machine's two cores with the suite it measures, so its own CPU is kept
low: a protocol on uvloop that answers every command of one read in one write and looks for
the end of a message only in the bytes that just arrived (with asyncio's streams and loop it
cost 0.19-0.20 ms of CPU per 37 KB message, a tenth of a signed message's whole cost).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from typing import cast

import uvloop

_EHLO = b"250-bench-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 52428800\r\n"
_END = b"\r\n.\r\n"


class Counter:
    messages = 0


class _Session(asyncio.Protocol):
    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._in_data = False
        self._scanned = 0  # bytes of the message already searched for its end
        self._probe = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport.write(b"220 bench-sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        replies: list[bytes] = []
        start = 0
        while True:
            if self._in_data:
                if buffer.startswith(b".\r\n", start):
                    end = start + 3  # an empty message: the end line comes first
                else:
                    found = buffer.find(_END, max(start, start + self._scanned - 4))
                    if found < 0:
                        self._scanned = len(buffer) - start
                        break
                    end = found + len(_END)
                self._in_data, self._scanned, start = False, 0, end
                Counter.messages += 1
                if self._probe:
                    print(f"probe {self._probe.decode()} {time.time():.6f}", flush=True)
                replies.append(b"250 2.0.0 OK\r\n")
                continue
            newline = buffer.find(b"\n", start)
            if newline < 0:
                break
            line, start = bytes(buffer[start : newline + 1]), newline + 1
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                replies.append(_EHLO)
            elif verb == b"RCPT":
                self._probe = line.partition(b"<probe-")[2].partition(b"@")[0]
                replies.append(b"250 OK\r\n")
            elif verb == b"DATA":
                self._in_data = True
                replies.append(b"354 go ahead\r\n")
            elif verb == b"QUIT":
                replies.append(b"221 bye\r\n")
                self._reply(replies)
                assert self._transport is not None
                self._transport.close()
                return
            else:
                replies.append(b"250 OK\r\n")
        del buffer[:start]
        self._reply(replies)

    def _reply(self, replies: list[bytes]) -> None:
        if replies and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(replies))


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Session, "127.0.0.1", port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()
    print(Counter.messages, flush=True)


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
