"""A pool of persistent SMTP connections (aiosmtplib) and one transaction on it.

Each connection is reused across messages and reopened when the server drops it. A transaction
is MAIL, RCPT, DATA; its result is an :class:`~services.dispatcher.outcomes.Outcome` and never
an exception, so the caller always has a state to commit.
"""

from __future__ import annotations

import asyncio
import socket

import aiosmtplib

from services.dispatcher.outcomes import Outcome, Phase, classify, connection_lost
from shared.settings import SmtpTarget


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

    async def send(self, *, sender: str, recipient: str, data: bytes) -> Outcome:
        """One SMTP transaction on a pooled connection."""
        client = await self._idle.get()
        phase: Phase = "connect"
        clean = False  # the connection is between transactions and may be reused
        try:
            if client is None or not client.is_connected:
                if client is not None:
                    self._all.discard(client)
                client = self._client()
                await client.connect()
                self._all.add(client)
            phase = "mail"
            await client.mail(sender)
            phase = "rcpt"
            await client.rcpt(recipient)
            phase = "data"
            response = await client.data(data)
            clean = True
            return classify(response.code, response.message, phase="data")
        except aiosmtplib.SMTPResponseException as err:
            outcome = classify(err.code, err.message, phase=phase)
            clean = await _reset(client)
            return outcome
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as err:
            _drop(client)
            return connection_lost(phase=phase, reason=f"{type(err).__name__}: {err}")
        finally:
            # Cancelled or failed mid-transaction: never hand that connection to the next one.
            if not clean:
                _drop(client)
            self._idle.put_nowait(client if clean and client is not None else None)

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
