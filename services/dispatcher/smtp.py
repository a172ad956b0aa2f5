"""A pool of persistent SMTP connections (aiosmtplib) and one transaction on it.

Each connection is reused across messages and reopened when the server drops it. A transaction
is MAIL, RCPT, DATA; its result is an :class:`~services.dispatcher.outcomes.Outcome` and never
an exception, so the caller always has a state to commit.

Only what the server may have taken is ``unknown``. The message data and its terminating dot
are written, then the write buffer is drained: a connection that is lost before every byte of
the end of data is in the kernel, or that the server resets (a TCP reset: the server's socket
was closed with our data unread, so the final dot never reached the server's program), leaves
the delivery ``deferred``, retried later. Only a missing reply (a timeout, or the server
closing the connection without a reset) after the complete end of data is ``unknown``.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Callable
from typing import cast

import aiosmtplib
from aiosmtplib.protocol import SMTPProtocol
from aiosmtplib.response import SMTPResponse

from services.dispatcher.outcomes import Outcome, Phase, classify, connection_lost
from shared.settings import SmtpTarget

_LEADING_DOT = re.compile(rb"(?m)^\.")


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


def not_taken(reason: str) -> Outcome:
    """The message cannot have been accepted: deferred, retried later."""
    return Outcome("deferred", None, reason[:2000], "data")


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
        self._idle: asyncio.Queue[aiosmtplib.SMTP | None] = asyncio.Queue()
        for _ in range(size):
            self._idle.put_nowait(None)
        self._all: set[aiosmtplib.SMTP] = set()
        self.size = size

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

    async def send(
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
        client = await self._idle.get()
        held = admit() if admit is not None else None
        if held is not None:
            self._idle.put_nowait(client)
            return held
        phase: Phase = "connect"
        clean = False  # the connection is between transactions and may be reused
        try:
            if client is None or not client.is_connected:
                if client is not None:
                    self._all.discard(client)
                client = self._client()
                await client.connect()
                if client.last_ehlo_response is None:
                    # connect() greets only when it negotiates STARTTLS or AUTH; MAIL needs it.
                    await client.ehlo()
                self._all.add(client)
            phase = "mail"
            outcome = await self._transaction(
                client, sender=sender, recipient=recipient, data=data, dot_safe=dot_safe
            )
            clean = outcome.status == "sent" or await _reset(client)
            return outcome
        except _Refused as refused:
            phase = refused.phase
            outcome = classify(refused.code, refused.reply, phase=phase)
            clean = refused.code != 421 and await _reset(client)
            return outcome
        except _LostAfterData as err:
            _drop(client)
            return connection_lost(phase="data", reason=str(err))
        except _NotTaken as err:
            _drop(client)
            return not_taken(str(err))
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as err:
            _drop(client)
            return connection_lost(phase=phase, reason=f"{type(err).__name__}: {err}")
        finally:
            # Cancelled or failed mid-transaction: never hand that connection to the next one.
            if not clean:
                _drop(client)
            self._idle.put_nowait(client if clean and client is not None else None)

    async def _transaction(
        self, client: aiosmtplib.SMTP, *, sender: str, recipient: str, data: bytes, dot_safe: bool
    ) -> Outcome:
        """MAIL, RCPT, DATA on aiosmtplib's protocol, without its per-message regex passes.

        aiosmtplib normalizes line endings and dot-stuffs every message with two regular
        expressions (about half of the client's CPU for a 30 KB message); our messages are built
        with CRLF and checked for leading dots once per edition.
        """
        protocol = client.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("connection lost")
        timeout = self._timeout
        body = b" BODY=8BITMIME" if client.supports_extension("8bitmime") else b""
        reply = await protocol.execute_command(
            b"MAIL", b"FROM:<" + sender.encode() + b">" + body, timeout=timeout
        )
        if reply.code != 250:
            raise _Refused("mail", reply.code, reply.message)
        reply = await protocol.execute_command(
            b"RCPT", b"TO:<" + recipient.encode() + b">", timeout=timeout
        )
        if reply.code not in (250, 251):
            raise _Refused("rcpt", reply.code, reply.message)
        reply = await protocol.execute_command(b"DATA", timeout=timeout)
        if reply.code != 354:
            raise _Refused("rcpt", reply.code, reply.message)
        if not dot_safe:
            data = _LEADING_DOT.sub(b"..", data)
        reply = await _end_of_data(protocol, data, timeout=timeout)
        return classify(reply.code, reply.message, phase="data")

    async def check(self) -> None:
        """Readiness: the server accepts a connection and answers EHLO and NOOP."""
        client = self._client()
        try:
            await client.connect()
            await client.noop()
        finally:
            _drop(client)

    async def close(self) -> None:
        for client in list(self._all):
            if client.is_connected:
                try:
                    await asyncio.wait_for(client.quit(), 2)
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    _drop(client)
        self._all.clear()


async def _end_of_data(protocol: SMTPProtocol, data: bytes, *, timeout: float) -> SMTPResponse:
    """Write the message and its terminator, wait until both are in the kernel, read the reply.

    Raises :class:`_NotTaken` if the server cannot have read the final dot, and
    :class:`_LostAfterData` if it may have but no reply came.
    """
    transport = cast(asyncio.WriteTransport | None, protocol.transport)
    if transport is None or transport.is_closing():
        raise _NotTaken("connection closed by the server before the message data")
    # With a high-water mark of 0 the transport pauses the protocol whenever a byte stays in
    # its buffer and resumes it only once the buffer is empty, so aiosmtplib's drain helper
    # returns when everything is in the kernel and raises if the connection is lost first.
    transport.set_write_buffer_limits(high=0)
    # Expect the reply before writing, as aiosmtplib's own DATA does: it drops data that arrives
    # while no response is pending, and uvloop may hand the reply over during the drain below
    # or before this coroutine runs again.
    protocol._response_pending = True
    # writelines() sends the message and its terminator in one go without copying the message.
    transport.writelines((data, b".\r\n"))
    if transport.get_write_buffer_size():
        try:
            # aiosmtplib's own (private) drain: the public one belongs to StreamWriter.
            await asyncio.wait_for(protocol._drain_helper(), timeout)
        except (ConnectionError, TimeoutError) as err:
            raise _NotTaken(
                f"connection lost before the end of data was written: {type(err).__name__}"
            ) from err
    try:
        return await protocol.read_response(timeout=timeout)
    except aiosmtplib.SMTPServerDisconnected as err:
        if isinstance(err.__cause__, ConnectionResetError | BrokenPipeError):
            raise _NotTaken(
                "connection reset by the server: it closed with the end of data unread"
            ) from err
        raise _LostAfterData(f"{type(err).__name__}: {err}") from err
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as err:
        raise _LostAfterData(f"{type(err).__name__}: {err}") from err


async def _reset(client: aiosmtplib.SMTP | None) -> bool:
    """RSET after a refusal; True if the connection is clean for the next transaction."""
    if client is None or not client.is_connected:
        return False
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        _drop(client)
        return False
    return True


def _drop(client: aiosmtplib.SMTP | None) -> None:
    if client is not None and client.is_connected:
        client.close()
