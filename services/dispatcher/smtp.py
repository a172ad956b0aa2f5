"""A pool of persistent SMTP connections and one transaction on each, pipelined when offered.

Each connection is reused across messages and reopened when the server drops it. A transaction
is MAIL, RCPT, DATA; its result is an :class:`~services.dispatcher.outcomes.Outcome` and never
an exception, so the caller always has a state to commit.

When the server's EHLO offers PIPELINING (RFC 2920), MAIL FROM, RCPT TO and DATA go out in one
write and their three replies are read together: one round trip before the message data
instead of three. Every reply is still checked in order (RFC 2920 §3.1): a refused MAIL or
RCPT is classified as it would be without pipelining and the body is never sent; DATA is
normally refused then (503/554), and if a server answers it 354 anyway the empty message is
ended with a lone dot. Without PIPELINING the commands go one at a time.

aiosmtplib (5.1) connects, negotiates TLS and AUTH and parses EHLO here, but its protocol
cannot read pipelined replies: it parses one reply per read and drops bytes that arrive while
a parsed reply waits to be picked up, and it dot-stuffs and normalizes every message with two
regular expressions (about half of the client's CPU for a 30 KB message). So once a connection
is open its transport is handed to :class:`_Wire`, a small protocol of our own that queues
every reply in order; aiosmtplib's protocol still hears about the connection's loss.

Only what the server may have taken is ``unknown``. The message data and its terminating dot
are written, then the write buffer is drained: a connection that is lost before every byte of
the end of data is in the kernel, or that the server resets (a TCP reset: the server's socket
was closed with our data unread, so the final dot never reached the server's program), leaves
the delivery ``deferred``, retried later. Only a missing reply (a timeout, or the server
closing the connection without a reset) after the complete end of data is ``unknown``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections import deque
from collections.abc import Callable
from typing import cast

import aiosmtplib
from aiosmtplib.protocol import SMTPProtocol
from aiosmtplib.response import SMTPResponse

from services.dispatcher.outcomes import Outcome, Phase, classify, connection_lost
from shared.settings import SmtpTarget

_LEADING_DOT = re.compile(rb"(?m)^\.")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_REPLY = 32 * 1024  # a reply longer than any real one: the peer is not speaking SMTP


class _Refused(Exception):
    """A reply that ends the transaction before the message data."""

    def __init__(self, phase: Phase, code: int, reply: str) -> None:
        super().__init__(f"{code} {reply}")
        self.phase: Phase = phase
        self.code = code
        self.reply = reply


class _LostAfterData(Exception):
    """The message data went out but no reply came: the outcome is unknown."""


class _NotTaken(Exception):
    """The connection broke before the server could have read the end of the message data."""


class _Lost(Exception):
    """The connection is gone; ``reset`` if the server reset it (it left our data unread)."""

    def __init__(self, reason: str, *, reset: bool) -> None:
        super().__init__(reason)
        self.reset = reset


def not_taken(reason: str) -> Outcome:
    """The message cannot have been accepted: deferred, retried later."""
    return Outcome("deferred", None, reason[:2000], "data")


class _Wire(asyncio.Protocol):
    """The protocol of an open connection: writes, drains, and queues every reply in order."""

    def __init__(self, inner: SMTPProtocol, transport: asyncio.WriteTransport) -> None:
        self._inner = inner  # aiosmtplib's, told when the connection is lost
        self._transport = transport
        self._buffer = bytearray()
        self._replies: deque[SMTPResponse] = deque()
        self._lost: _Lost | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        # With a high-water mark of 0 the transport pauses this protocol whenever a byte stays
        # in its buffer and resumes it only once the buffer is empty, so drain() returns when
        # everything is in the kernel.
        transport.set_write_buffer_limits(high=0)
        transport.set_protocol(self)

    @property
    def usable(self) -> bool:
        """Open, and nothing unsolicited was read (a server's 421 before it hangs up)."""
        return (
            self._lost is None
            and not self._transport.is_closing()
            and not self._replies
            and not self._buffer
        )

    def write(self, *chunks: bytes) -> None:
        if self._lost is not None:
            raise self._lost
        if self._transport.is_closing():
            raise _Lost("connection closed", reset=False)
        # writelines() sends the message and its terminator without copying the message.
        self._transport.writelines(chunks)

    async def drain(self, timeout: float) -> None:
        # A timer only when there is something to wait for (most writes go straight out).
        if self._paused and self._lost is None:
            async with asyncio.timeout(timeout):
                while self._paused and self._lost is None:
                    self._drained = asyncio.get_running_loop().create_future()
                    try:
                        await self._drained
                    finally:
                        self._drained = None
        if self._lost is not None:
            raise self._lost

    async def reply(self, timeout: float) -> SMTPResponse:
        """The next reply; raises :class:`_Lost` if the connection went first."""
        # Pipelined replies often arrive together: one already read needs no timer.
        if not self._replies:
            async with asyncio.timeout(timeout):
                while not self._replies:
                    if self._lost is not None:
                        raise self._lost
                    self._waiter = asyncio.get_running_loop().create_future()
                    try:
                        await self._waiter
                    finally:
                        self._waiter = None
        return self._replies.popleft()

    def close(self) -> None:
        self._transport.close()

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\n")) >= 0:
            # A reply is complete at a line whose code is not followed by "-".
            offset, lines = 0, []
            complete = False
            while end >= 0:
                line = bytes(self._buffer[offset : end + 1])
                lines.append(line)
                offset = end + 1
                if line[3:4] != b"-":
                    complete = True
                    break
                end = self._buffer.find(b"\n", offset)
            if not complete:
                break
            del self._buffer[:offset]
            try:
                code = int(lines[0][:3])
            except ValueError:
                self._fail(_Lost("malformed reply from the server", reset=False))
                return
            text = "\n".join(
                ln[4:].strip(b" \t\r\n").decode("utf-8", "surrogateescape") for ln in lines
            )
            self._replies.append(SMTPResponse(code, text))
        if len(self._buffer) > _MAX_REPLY:
            self._fail(_Lost("reply too long", reset=False))
            return
        self._wake()

    def eof_received(self) -> bool:
        self._set_lost(_Lost("connection closed by the server", reset=False))
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        reset = isinstance(exc, ConnectionResetError | BrokenPipeError)
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else "connection closed"
        self._set_lost(_Lost(reason, reset=reset))
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _set_lost(self, lost: _Lost) -> None:
        if self._lost is None:
            self._lost = lost
        self._wake()

    def _fail(self, lost: _Lost) -> None:
        self._set_lost(lost)
        self._transport.abort()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Connection:
    """An open, greeted connection with what its server offers."""

    def __init__(self, client: aiosmtplib.SMTP) -> None:
        protocol = client.protocol
        transport = protocol.transport if protocol is not None else None
        if protocol is None or transport is None:
            raise aiosmtplib.SMTPServerDisconnected("connection lost")
        self.client = client
        self.pipelining = client.supports_extension("pipelining")
        self.body = b" BODY=8BITMIME" if client.supports_extension("8bitmime") else b""
        self.wire = _Wire(protocol, cast(asyncio.WriteTransport, transport))

    async def command(self, line: bytes, timeout: float) -> SMTPResponse:
        self.wire.write(line)
        return await self.wire.reply(timeout)

    def close(self) -> None:
        self.wire.close()
        self.client.close()


class SmtpPool:
    """``size`` persistent connections to one SMTP server."""

    def __init__(
        self,
        *,
        target: SmtpTarget,
        size: int,
        timeout: float,
        local_hostname: str | None = None,
    ) -> None:
        self._target = target
        self._timeout = timeout
        self._local_hostname = local_hostname or socket.getfqdn()
        self._idle: asyncio.Queue[_Connection | None] = asyncio.Queue()
        for _ in range(size):
            self._idle.put_nowait(None)
        self._all: set[_Connection] = set()
        self.size = size

    @property
    def pipelining(self) -> bool:
        """Whether every open connection pipelines (its server offered PIPELINING)."""
        return bool(self._all) and all(c.pipelining for c in self._all)

    def _client(self) -> aiosmtplib.SMTP:
        target = self._target
        return aiosmtplib.SMTP(
            hostname=target.host,
            port=target.port,
            timeout=self._timeout,
            use_tls=target.use_tls,
            start_tls=target.start_tls,
            username=target.username,
            password=target.password,
            local_hostname=self._local_hostname,
        )

    async def _open(self) -> _Connection:
        client = self._client()
        try:
            await client.connect()
            if client.last_ehlo_response is None:
                # connect() greets only when it negotiates STARTTLS or AUTH; MAIL needs it.
                await client.ehlo()
            connection = _Connection(client)
        except BaseException:
            client.close()
            raise
        self._all.add(connection)
        return connection

    async def send(  # noqa: PLR0911 - one return per way a transaction ends
        self,
        *,
        sender: str,
        recipient: str,
        data: bytes,
        dot_safe: bool = False,
        admit: Callable[[], Outcome | None] | None = None,
    ) -> Outcome:
        """One SMTP transaction on a pooled connection.

        ``data`` must use CRLF line endings. With ``dot_safe`` the caller guarantees that no
        line starts with a dot, so the per-message dot-stuffing pass is skipped. ``admit`` is
        asked once a connection is free (the wait can be long): an outcome it returns is
        returned instead of sending (a circuit breaker that opened meanwhile).
        """
        if _CONTROL.search(sender) or _CONTROL.search(recipient):
            return Outcome("failed", None, "address contains a control character", "rcpt")
        connection = await self._idle.get()
        held = admit() if admit is not None else None
        if held is not None:
            self._idle.put_nowait(connection)
            return held
        phase: Phase = "connect"
        clean = False  # the connection is between transactions and may be reused
        try:
            if connection is None or not connection.wire.usable:
                self._drop(connection)
                connection = None
                connection = await self._open()
            phase = "mail"
            outcome = await self._transaction(
                connection, sender=sender, recipient=recipient, data=data, dot_safe=dot_safe
            )
            clean = outcome.status == "sent" or await self._reset(connection)
            return outcome
        except _Refused as refused:
            phase = refused.phase
            outcome = classify(refused.code, refused.reply, phase=phase)
            clean = refused.code != 421 and await self._reset(connection)
            return outcome
        except _LostAfterData as err:
            return connection_lost(phase="data", reason=str(err))
        except _NotTaken as err:
            return not_taken(str(err))
        except (_Lost, aiosmtplib.SMTPException, OSError, TimeoutError) as err:
            reason = f"{type(err).__name__}: {err or 'timed out waiting for a reply'}"
            return connection_lost(phase=phase, reason=reason)
        finally:
            # Cancelled or failed mid-transaction: never hand that connection to the next one.
            if not clean:
                self._drop(connection)
            self._idle.put_nowait(connection if clean else None)

    async def _transaction(
        self, connection: _Connection, *, sender: str, recipient: str, data: bytes, dot_safe: bool
    ) -> Outcome:
        """MAIL, RCPT, DATA (pipelined when offered), then the message and its final dot."""
        timeout = self._timeout
        wire = connection.wire
        mail = b"MAIL FROM:<" + sender.encode() + b">" + connection.body + b"\r\n"
        rcpt = b"RCPT TO:<" + recipient.encode() + b">\r\n"
        if connection.pipelining:
            wire.write(mail + rcpt + b"DATA\r\n")
            await _pipelined_replies(wire, timeout=timeout)
        else:
            reply = await connection.command(mail, timeout)
            if reply.code != 250:
                raise _Refused("mail", reply.code, reply.message)
            reply = await connection.command(rcpt, timeout)
            if reply.code not in (250, 251):
                raise _Refused("rcpt", reply.code, reply.message)
            reply = await connection.command(b"DATA\r\n", timeout)
            if reply.code != 354:
                raise _Refused("rcpt", reply.code, reply.message)
        if not dot_safe:
            data = _LEADING_DOT.sub(b"..", data)
        reply = await _end_of_data(wire, data, timeout=timeout)
        return classify(reply.code, reply.message, phase="data")

    async def _reset(self, connection: _Connection | None) -> bool:
        """RSET after a refusal; True if the connection is clean for the next transaction."""
        if connection is None or not connection.wire.usable:
            return False
        try:
            reply = await connection.command(b"RSET\r\n", self._timeout)
        except (_Lost, TimeoutError):
            return False
        return reply.code == 250

    def _drop(self, connection: _Connection | None) -> None:
        if connection is not None:
            self._all.discard(connection)
            connection.close()

    async def check(self) -> None:
        """Readiness: the server accepts a connection and answers EHLO and NOOP."""
        client = self._client()
        try:
            await client.connect()
            await client.noop()
        finally:
            client.close()

    async def close(self) -> None:
        for connection in list(self._all):
            if connection.wire.usable:
                with contextlib.suppress(_Lost, TimeoutError):
                    await connection.command(b"QUIT\r\n", min(self._timeout, 2))
            connection.close()
        self._all.clear()


async def _pipelined_replies(wire: _Wire, *, timeout: float) -> None:
    """Read the replies to a pipelined MAIL, RCPT, DATA; raise :class:`_Refused` on a refusal.

    RFC 2920 §3.1: every reply is checked, and a client whose recipients were all refused may
    not assume DATA was refused: if it was answered 354 the empty message is ended with a lone
    dot. A 421 means the server is closing; later replies may never come.
    """
    mail = await wire.reply(timeout)
    if mail.code == 421:
        raise _Refused("mail", mail.code, mail.message)
    rcpt = await wire.reply(timeout)
    if rcpt.code == 421:
        raise _Refused("rcpt", rcpt.code, rcpt.message)
    data = await wire.reply(timeout)
    refused: _Refused | None = None
    if mail.code != 250:
        refused = _Refused("mail", mail.code, mail.message)
    elif rcpt.code not in (250, 251):
        refused = _Refused("rcpt", rcpt.code, rcpt.message)
    if refused is not None:
        if data.code == 354:
            wire.write(b".\r\n")
            await wire.reply(timeout)  # normally 554 no valid recipients: nothing was taken
        raise refused
    if data.code != 354:
        raise _Refused("rcpt", data.code, data.message)


async def _end_of_data(wire: _Wire, data: bytes, *, timeout: float) -> SMTPResponse:
    """Write the message and its terminator, wait until both are in the kernel, read the reply.

    Raises :class:`_NotTaken` if the server cannot have read the final dot, and
    :class:`_LostAfterData` if it may have but no reply came.
    """
    try:
        wire.write(data, b".\r\n")
    except _Lost as err:
        raise _NotTaken("connection closed by the server before the message data") from err
    try:
        await wire.drain(timeout)
    except (_Lost, TimeoutError) as err:
        raise _NotTaken(
            f"connection lost before the end of data was written: {type(err).__name__}"
        ) from err
    try:
        return await wire.reply(timeout)
    except _Lost as err:
        if err.reset:
            raise _NotTaken(
                "connection reset by the server: it closed with the end of data unread"
            ) from err
        raise _LostAfterData(f"SMTPServerDisconnected: {err}") from err
    except TimeoutError as err:
        raise _LostAfterData("SMTPReadTimeoutError: Timed out waiting for server response") from err
