"""A minimal, fast SMTP sink for the benchmark: accepts everything, counts, keeps nothing.

aiosmtpd saturates near 1,800 messages/s on this machine, below what the dispatcher can push;
this sink parses just enough SMTP (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) to measure the
client side. Run as ``python -m benchmarks.smtp_sink PORT``. A message to a
``probe-N@`` address prints ``probe N <arrival time>`` at once (the benchmark times
transactional mail during a campaign with it); on SIGTERM the sink prints the number of
messages received and exits.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

_EHLO = b"250-bench-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 52428800\r\n"


class Counter:
    messages = 0


async def _session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 bench-sink ESMTP\r\n")
    probe = b""
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                writer.write(_EHLO)
            elif verb == b"RCPT":
                probe = line.partition(b"<probe-")[2].partition(b"@")[0]
                writer.write(b"250 OK\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await reader.readuntil(b"\r\n.\r\n")
                Counter.messages += 1
                if probe:
                    print(f"probe {probe.decode()} {time.time():.6f}", flush=True)
                writer.write(b"250 2.0.0 OK\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"250 OK\r\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return
    finally:
        writer.close()


async def serve(port: int) -> None:
    server = await asyncio.start_server(_session, "127.0.0.1", port, limit=64 * 1024 * 1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()
    print(Counter.messages, flush=True)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
