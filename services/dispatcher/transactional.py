"""Transactional mail: ``dispatcher.transactional`` -> SMTP, on its own queue and connections.

Confirmation, welcome and goodbye mails never wait behind a campaign: their queue, channel and
SMTP pool are separate from the issue workers'. The ledger row (``tx:<command id>``) makes a
redelivered command harmless: it is claimed under a lease in this process's name, as issue
mail is, and a redelivered copy takes over a ``sending`` row only by the same rule
(:func:`services.dispatcher.ledger.take_over`: the lease ended, the claimer stopped beating,
or this process's own handler failed before sending). Unlike an issue, a mail whose outcome
is unknown (no reply after the complete end of data) is sent once more, through the first
delay tier: a second confirmation mail does no harm, while a confirmation that never arrives
loses the subscriber. Only once: a server that keeps taking mail without answering in time
would otherwise get a copy per retry for days. A second unknown is final (``unknown``). The
outcome write is retried in place through the
:class:`~services.dispatcher.database_gate.DatabaseGate`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, FieldValue
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dispatcher import ledger, mime
from services.dispatcher.composer import Composer, Recipient
from services.dispatcher.database_gate import DatabaseGate
from services.dispatcher.metrics import DispatcherMetrics
from services.dispatcher.outcomes import Outcome
from services.dispatcher.retry import RETRY_HEADER, dead_letter, settle_attempt
from services.dispatcher.settings import DispatcherSettings
from services.dispatcher.smtp import SmtpPool
from shared import message_ids
from shared.addresses import address_domain, mask_email
from shared.db.tables.deliveries import DeliveryKind, DeliveryStatus
from shared.db.tables.timestamps import UTCDateTime, utcnow
from shared.messaging.publisher import Publisher
from shared.messaging.schemas import (
    DeliverTransactional,
    UndecodableMessage,
    decode,
)
from shared.messaging.topology import BOUNCE_RECEIVED, DELIVER_TRANSACTIONAL

log = structlog.get_logger(__name__)
# On a retry job: an earlier attempt's outcome was unknown, so another unknown is final.
UNKNOWN_BEFORE_HEADER = "x-unknown-before"

_INSERT = text(
    "INSERT INTO delivery (dedupe_key, kind, send_id, subscriber_id, email, email_domain, "
    "language, status, attempts, smtp_reply, message_id, created_at, updated_at) "
    "VALUES (:key, :kind, NULL, :sid, :email, :domain, :language, :sending, 0, '', '', "
    ":now, :now) ON CONFLICT DO NOTHING"
).bindparams(bindparam("now", type_=UTCDateTime()))
_LOOKUP = text("SELECT id, status FROM delivery WHERE dedupe_key = :key")
_START = text(
    "UPDATE delivery SET status = :sending, attempts = attempts + 1, lease_until = :lease, "
    "claimed_by = :owner, due_at = NULL, updated_at = :now "
    "WHERE id = :id AND status IN :claimable RETURNING id"
).bindparams(
    bindparam("now", type_=UTCDateTime()),
    bindparam("lease", type_=UTCDateTime()),
    bindparam("claimable", expanding=True),
)
_FINISH = text(
    "UPDATE delivery SET status = :status, smtp_code = :code, smtp_reply = :reply, "
    "message_id = :mid, sent_at = :sent_at, lease_until = NULL, updated_at = :now "
    "WHERE id = :id"
).bindparams(bindparam("now", type_=UTCDateTime()), bindparam("sent_at", type_=UTCDateTime()))


@dataclass
class TransactionalWorker:
    settings: DispatcherSettings
    sessions: async_sessionmaker[AsyncSession]
    composer: Composer
    pool: SmtpPool
    publisher: Publisher
    raw_channel: AbstractChannel
    metrics: DispatcherMetrics
    gate: DatabaseGate | None = None  # retries the outcome write; None: a failed write raises
    owner: str | None = None  # this process's heartbeat id: its claims carry it
    in_flight: set[int] = field(default_factory=set)  # deliveries this process handles now

    async def handle(self, message: AbstractIncomingMessage) -> None:
        try:
            job = decode(DeliverTransactional, message.body)
        except UndecodableMessage as err:
            log.warning("poison_job_dead_lettered", reason=str(err)[:300])
            await dead_letter(channel=self.raw_channel, message=message, reason=str(err))
            await message.ack()
            return
        with structlog.contextvars.bound_contextvars(
            command_id=job.message_id, kind=job.kind, language=job.language
        ):
            await self._deliver(job, message)

    async def _finish(self, values: Mapping[str, object]) -> None:
        """Write the outcome (idempotent: the same values again change nothing)."""
        async with self.sessions() as session:
            await session.execute(_FINISH, values)
            await session.commit()

    async def _claim(self, job: DeliverTransactional, *, redelivered: bool) -> tuple[int, str]:
        """Insert or find the ledger row and claim it under a lease, by the issue mail's rule
        (:func:`services.dispatcher.ledger.take_over`); the status is "" when claimed."""
        key = f"tx:{job.message_id}"
        now = utcnow()
        async with self.sessions() as session:
            await session.execute(
                _INSERT,
                {
                    "key": key,
                    "kind": str(DeliveryKind.TRANSACTIONAL),
                    "sid": job.subscriber_id,
                    "email": job.to,
                    "domain": address_domain(job.to),
                    "language": job.language,
                    "sending": str(DeliveryStatus.QUEUED),
                    "now": now,
                },
            )
            row = (await session.execute(_LOOKUP, {"key": key})).one()
            delivery_id, status = int(row[0]), str(row[1])
            claimed = (
                await session.execute(
                    _START,
                    {
                        "id": delivery_id,
                        "sending": str(DeliveryStatus.SENDING),
                        "now": now,
                        "lease": now + timedelta(seconds=self.settings.dispatch_lease_s),
                        "owner": self.owner,
                        "claimable": [str(DeliveryStatus.QUEUED), str(DeliveryStatus.DEFERRED)],
                    },
                )
            ).first() is not None
            if not claimed and redelivered and status == DeliveryStatus.SENDING:
                # Its first consumer went away (or this process's own handler failed before
                # the mail went out): taken over only once that claim's lease is gone.
                own = () if delivery_id in self.in_flight else (delivery_id,)
                claimed = bool(
                    await ledger.take_over(
                        session,
                        [delivery_id],
                        own_idle=own,
                        owner=self.owner,
                        now=now,
                        lease_s=self.settings.dispatch_lease_s,
                        owner_stale_s=self.settings.dispatch_owner_stale_s,
                    )
                )
            await session.commit()
        return delivery_id, "" if claimed else status

    async def _deliver(self, job: DeliverTransactional, message: AbstractIncomingMessage) -> None:
        delivery_id, status = await self._claim(job, redelivered=bool(message.redelivered))
        if status:
            log.info("duplicate_job_skipped", delivery_id=delivery_id, found_status=status)
            await message.ack()
            return
        self.in_flight.add(delivery_id)
        try:
            await self._send(job, message, delivery_id=delivery_id)
        finally:
            self.in_flight.discard(delivery_id)

    async def _send(
        self, job: DeliverTransactional, message: AbstractIncomingMessage, *, delivery_id: int
    ) -> None:
        envelope = self.composer.envelope(
            subject=job.subject,
            language=job.language,
            campaign=job.kind,
            list_unsubscribe=job.list_unsubscribe_url is not None,
        )
        template = mime.build_template(envelope=envelope, text=job.text, html_body=job.html)
        message_key = message_ids.delivery_key(delivery_id, f"tx.{job.message_id}")
        recipient = Recipient(delivery_id, job.subscriber_id, job.to, message_key)
        values = self.composer.values(recipient, one_click_url=job.list_unsubscribe_url)
        data = self.composer.render(template, values)
        started = time.perf_counter()
        outcome = await self.pool.send(
            sender=self.composer.return_path(delivery_id),
            recipient=job.to,
            data=data,
            dot_safe=template.dot_safe,
        )
        self.metrics.smtp_seconds.observe(time.perf_counter() - started)
        await self._settle(job, message, outcome, delivery_id=delivery_id, key=message_key)

    async def _settle(
        self,
        job: DeliverTransactional,
        message: AbstractIncomingMessage,
        outcome: Outcome,
        *,
        delivery_id: int,
        key: str,
    ) -> None:
        unknown_before = bool((message.headers or {}).get(UNKNOWN_BEFORE_HEADER))
        status = outcome.status
        if status == "unknown" and not unknown_before:
            status = "deferred"  # sent once more: a second copy of this mail does no harm
        now = utcnow()
        attempt = settle_attempt(
            message,
            status,
            tiers=self.settings.retry_tiers,
            first_attempt_at=job.created_at,
            window_s=self.settings.dispatch_retry_window_s,
            now=now,
        )
        status = attempt.status
        if status == "bounced":
            await self.publisher.publish_event(
                outcome.bounce_event(to=job.to, delivery_id=delivery_id, language=job.language),
                routing_key=BOUNCE_RECEIVED,
            )
        values: dict[str, object] = {
            "id": delivery_id,
            "status": status,
            "code": outcome.code,
            "reply": outcome.reply[:2000],
            "mid": self.composer.message_id(key),
            "sent_at": now if status == "sent" else None,
            "now": now,
        }
        if self.gate is None:
            await self._finish(values)
        else:
            await self.gate.write(lambda: self._finish(values), what="transactional_outcome")
        if status == "deferred":
            headers: dict[str, FieldValue] = {RETRY_HEADER: attempt.number + 1}
            if unknown_before or outcome.status == "unknown":
                headers[UNKNOWN_BEFORE_HEADER] = 1
            await self.publisher.publish(
                job,
                routing_key=DELIVER_TRANSACTIONAL,
                exchange=attempt.tier.exchange,
                headers=headers,
            )
        await message.ack()
        domain = address_domain(job.to)
        self.metrics.deliveries.labels(status, job.language, domain).inc()
        log.info(
            "email_sent" if status == "sent" else f"email_{status}",
            delivery_id=delivery_id,
            to=mask_email(job.to),
            smtp_code=outcome.code,
            reply=outcome.reply[:200] if status != "sent" else "",
        )
