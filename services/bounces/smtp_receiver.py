"""The SMTP side of the receiver: an aiosmtpd server in the service's own event loop.

It accepts mail only for our own addresses at the return-path domain: signed VERP return
paths (``bounces+<delivery>-<sig>@``), signed mailto unsubscribe addresses
(``unsubscribe+<subscriber>-<sig>@``) and a few plain role addresses (feedback loops). Anything
else is refused at RCPT, so the receiver is not an open relay. If the broker or the database
does not take the event (our own transient outage), DATA is answered with 451 and the sending
MTA retries later: nothing is lost. A report that cannot be read is kept as unreadable by the
intake and answered 250: it would never parse, so a 4xx would only loop the sender. One
client IP may hand over ``NEWSLETTER_BOUNCES_RATE_PER_IP`` reports a minute; beyond that DATA
is answered 450 4.7.1 (a rate limit: the sender comes back later, RFC 3463).
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from services.bounces.errors import IntakeUnavailable
from services.bounces.intake import BounceIntake
from shared import verp
from shared.rate_limit import SlidingWindowLimiter

log = structlog.get_logger(__name__)

DATA_SIZE_LIMIT = 10 * 1024 * 1024


class ReturnPathHandler:
    """aiosmtpd handler: RCPT filtering and DATA hand-off to the intake."""

    def __init__(
        self,
        *,
        intake: BounceIntake,
        secret_key: str,
        domain: str,
        accept_locals: frozenset[str],
        budget: SlidingWindowLimiter | None = None,
    ) -> None:
        self._intake = intake
        self._budget = budget
        self._secret_key = secret_key
        self._domain = domain.lower()
        self._accept_locals = accept_locals

    def accepts(self, address: str) -> bool:
        local, _, domain = address.strip().strip("<>").rpartition("@")
        if domain.lower() != self._domain:
            return False
        if local.lower() in self._accept_locals:
            return True
        return (
            verp.delivery_from_return_path(secret_key=self._secret_key, address=address) is not None
            or verp.subscriber_from_unsubscribe_mailto(secret_key=self._secret_key, address=address)
            is not None
        )

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self.accepts(address):
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        data = envelope.original_content or b""
        if isinstance(envelope.content, bytes):
            data = envelope.content
        # Per sending host, not per /64: a provider's MTAs share its networks (Gmail's
        # outbound pool is a handful of /64s), and one budget for all of them would refuse its
        # reports after a large send.
        peer = session.peer[0] if session is not None and isinstance(session.peer, tuple) else ""
        if self._budget is not None:
            if not self._budget.would_allow(f"smtp:{peer}"):
                log.warning("bounce_smtp_rate_limited")
                return "450 4.7.1 Too many reports from your address, try again later"
            self._budget.record(f"smtp:{peer}")
        try:
            events = await self._intake.handle_mail(data, envelope_to=list(envelope.rcpt_tos))
        except IntakeUnavailable as err:
            log.warning("bounce_intake_unavailable", error=str(err))
            return "451 4.3.0 Temporary failure, try again later"
        except Exception:  # a bug of ours on this report: retrying it would fail the same way
            log.exception("bounce_intake_failed", size=len(data))
            return "250 2.0.0 OK: kept for inspection"
        return f"250 2.0.0 OK: {len(events)} event(s)"


async def start_smtp_server(
    handler: ReturnPathHandler, *, host: str, port: int, hostname: str
) -> asyncio.Server:
    """Listen in the running loop (no thread): the intake publishes on this loop's channel."""
    loop = asyncio.get_running_loop()

    def factory() -> Any:
        return SMTP(
            handler,
            hostname=hostname,
            data_size_limit=DATA_SIZE_LIMIT,
            enable_SMTPUTF8=True,
            decode_data=False,
        )

    return await loop.create_server(factory, host=host, port=port)
