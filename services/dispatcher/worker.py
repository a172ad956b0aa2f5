"""Issue delivery workers: ``dispatcher.deliveries`` -> SMTP -> ledger -> ack.

Each job is claimed in the ledger (a duplicate job cannot claim), composed from the edition's
cached template, sent on a pooled SMTP connection under flow control, recorded, and only then
acked. An outcome write that meets a database hiccup is retried in place through the
:class:`~services.dispatcher.database_gate.DatabaseGate` (the job is never requeued into a
second SMTP transaction). A deferral is recorded with its next attempt (``due_at``), and the
reconciler publishes it when due: no publish can fail here and turn into an immediate retry.
Hard bounces raise a ``BounceReceived`` event; jobs of a paused send or of a domain whose
breaker is open are parked in the outbox without being claimed; poison jobs are dead-lettered
with their reason after a few deliveries.

Quiet hours (``NEWSLETTER_QUIET_HOURS``) hold here too: a job met while its reader is in
them (it waited in the queue past their start) is parked in the outbox until their end,
unclaimed (or, met after the wait for a slot, with its claim given back), and a deferral's
next attempt, or a breaker's hold, that would fall inside them moves to their end (the
reader's zone travels in the job; see :mod:`services.dispatcher.local_hours`). Time comes
from the dispatcher's clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from services.dispatcher import ledger, local_hours, mime
from services.dispatcher.acks import BatchAcker
from services.dispatcher.batching import Batcher
from services.dispatcher.composer import Composer, EditionCache, Recipient
from services.dispatcher.database_gate import DatabaseGate
from services.dispatcher.delivery_log import DeliveryLog
from services.dispatcher.errors import PoisonJob
from services.dispatcher.flow import FlowControl
from services.dispatcher.metrics import DispatcherMetrics
from services.dispatcher.outcomes import Outcome, breaker_open
from services.dispatcher.retry import REPLAYED_HEADER, dead_letter, settle_attempt
from services.dispatcher.sends import SendDirectory
from services.dispatcher.settings import DispatcherSettings
from services.dispatcher.smtp import SmtpPool
from shared.addresses import address_domain, mask_email
from shared.clock import SYSTEM_CLOCK, Clock
from shared.db.tables.deliveries import DeliveryStatus, SendStatus
from shared.messaging.publisher import Publisher
from shared.messaging.schemas import DeliverIssue, UndecodableMessage, decode
from shared.messaging.topology import BOUNCE_RECEIVED

log = structlog.get_logger(__name__)


@dataclass
class DeliveryWorker:
    """Handles one ``DeliverIssue`` message at a time per call; many calls run concurrently."""

    settings: DispatcherSettings
    composer: Composer
    editions: EditionCache
    sends: SendDirectory
    pool: SmtpPool
    flow: FlowControl
    publisher: Publisher
    raw_channel: AbstractChannel
    claims: Batcher[ledger.ClaimRequest, ledger.Claim]
    results: Batcher[ledger.Result, None]
    metrics: DispatcherMetrics
    acks: BatchAcker
    gate: DatabaseGate | None = None  # retries outcome writes; None: a failed write raises
    outcomes: DeliveryLog = field(default_factory=lambda: DeliveryLog(__name__))
    in_flight: set[int] = field(default_factory=set)  # deliveries this process handles now
    clock: Clock = SYSTEM_CLOCK  # deferrals' next attempts, holds, the retry window, quiet hours

    async def handle(self, message: AbstractIncomingMessage) -> None:
        try:
            job = decode(DeliverIssue, message.body)
        except UndecodableMessage as err:
            log.warning("poison_job_dead_lettered", reason=str(err)[:300])
            await dead_letter(channel=self.raw_channel, message=message, reason=str(err))
            await self.acks.ack(message)
            return
        # The ids on every log line of this job. Set and reset by token: structlog's
        # bound_contextvars() copies the whole context to save and restore it, a few
        # microseconds per message more.
        bound = structlog.contextvars.bind_contextvars(
            delivery_id=job.delivery_id, send_id=job.send_id, language=job.language
        )
        # A redelivered job of a delivery this process claimed and no longer works on (its
        # handler failed, the job was requeued) may take its own claim back at once.
        own_idle = job.delivery_id not in self.in_flight
        self.in_flight.add(job.delivery_id)
        try:
            await self._deliver(job, message, own_idle=own_idle)
        except PoisonJob as err:
            await self._poison(job, message, reason=str(err))
        finally:
            if own_idle:
                self.in_flight.discard(job.delivery_id)
            structlog.contextvars.reset_contextvars(**bound)

    async def _deliver(
        self, job: DeliverIssue, message: AbstractIncomingMessage, *, own_idle: bool = True
    ) -> None:
        status = await self.sends.status(job.send_id)
        if status is None:
            raise PoisonJob(f"unknown send {job.send_id}")
        if status in {SendStatus.CANCELLED, SendStatus.PAUSED}:
            await self._stand_down(job, message, status)
            return
        domain = address_domain(job.to)
        if await self._held_back(job, message, domain):  # not claimed: the row stays open
            return
        claim = await self.claims.submit(
            ledger.ClaimRequest(
                job.delivery_id,
                redelivered=bool(message.redelivered),
                replayed=REPLAYED_HEADER in (message.headers or {}),
                own_idle=own_idle,
            )
        )
        if not claim.claimed:
            await self._skip(job, message, claim, domain)
            return
        if claim.reclaimed:
            log.warning("possible_duplicate_resend", reason="redelivered while sending")
        template = await self.editions.get(
            send_id=job.send_id, language=job.language, test=job.subscriber_id is None
        )
        message_key = f"d{job.delivery_id}.{job.send_id[:8]}"
        recipient = Recipient(
            job.delivery_id, job.subscriber_id, job.to, message_key, reader_ref=claim.reader_ref
        )
        values = self.composer.values(recipient)
        data = await self.composer.compose(template, values)
        async with self.flow.slot(domain):
            # Waiting for a slot can take a while: look again before sending.
            if await self._called_off(job, message, domain):
                return
            if self.flow.is_open(domain):
                outcome: Outcome = breaker_open(domain)
            else:
                started = time.perf_counter()
                outcome = await self.pool.send(
                    sender=self.composer.return_path(job.delivery_id),
                    recipient=job.to,
                    data=data,
                    dot_safe=template.dot_safe,
                    admit=lambda: breaker_open(domain) if self.flow.is_open(domain) else None,
                )
                if outcome.phase != "breaker":
                    self.metrics.smtp_seconds.observe(time.perf_counter() - started)
                    if self.flow.record(domain, outcome):
                        log.warning("circuit_breaker_opened", domain=domain, reason="replies")
        if outcome.phase == "breaker":
            # The breaker opened while this job waited: give the claim back, parked.
            await self._hold(job, message, domain, claimed=True)
            return
        await self._settle(job, message, outcome, message_id=values[mime.MESSAGE_ID], domain=domain)

    async def _held_back(
        self, job: DeliverIssue, message: AbstractIncomingMessage, domain: str
    ) -> bool:
        """Before the claim: the domain's breaker is open, or the reader is in their quiet
        hours. True when the job was parked (and acked)."""
        if self.flow.is_open(domain):
            await self._hold(job, message, domain)
            return True
        quiet_end = self._quiet_end(job)
        if quiet_end is not None:
            await self._park_quiet(job, message, domain, until=quiet_end)
            return True
        return False

    async def _called_off(
        self, job: DeliverIssue, message: AbstractIncomingMessage, domain: str
    ) -> bool:
        """After the slot's wait: the send was paused or cancelled meanwhile, or the wait ran
        into the reader's quiet hours. True when the claimed delivery was given back."""
        status = await self.sends.status(job.send_id)
        if status in {SendStatus.CANCELLED, SendStatus.PAUSED}:
            await self._stand_down(job, message, status)
            return True
        quiet_end = self._quiet_end(job)
        if quiet_end is not None:
            await self._park_quiet(job, message, domain, until=quiet_end, claimed=True)
            return True
        return False

    async def _skip(
        self, job: DeliverIssue, message: AbstractIncomingMessage, claim: ledger.Claim, domain: str
    ) -> None:
        """The job did not claim its delivery: a duplicate, or nobody to mail any more."""
        if claim.reason:
            # Unsubscribed, suppressed or erased since the send was planned, or a cadence now
            # leaving this issue out (the claim marked the row with its reason and had the send
            # checked for completion).
            outcome = "unsubscribed" if claim.status == DeliveryStatus.UNSUBSCRIBED else "skipped"
            log.info("delivery_dropped", reason=claim.reason, status=claim.status)
            self.metrics.delivery(outcome, job.language, domain, test=_is_test(job))
        elif claim.status == DeliveryStatus.UNSUBSCRIBED:  # an erasure marked it meanwhile
            log.info("delivery_dropped", reason="no longer subscribed")
            self.metrics.delivery("unsubscribed", job.language, domain, test=_is_test(job))
        else:
            log.info("duplicate_job_skipped", found_status=claim.status)
        await self.acks.ack(message)

    def _quiet_end(self, job: DeliverIssue) -> datetime | None:
        """The end of the reader's quiet hours when they are in them now, else None (test
        sends have no reader and are never held)."""
        quiet = self.settings.quiet_window
        if quiet is None or job.subscriber_id is None:
            return None
        now = self.clock.now()
        end = local_hours.outside_quiet_hours(now, where=self._zone(job), quiet=quiet)
        return end if end > now else None

    def _not_in_quiet_hours(self, job: DeliverIssue, moment: datetime) -> datetime:
        """A next attempt for ``job`` at ``moment``, or at the end of the reader's quiet hours
        when it falls inside them."""
        if job.subscriber_id is None:
            return moment
        quiet = self.settings.quiet_window
        return local_hours.outside_quiet_hours(moment, where=self._zone(job), quiet=quiet)

    def _zone(self, job: DeliverIssue) -> ZoneInfo:
        return local_hours.reader_zone(
            self.settings, time_zone=job.time_zone, language=job.language
        )

    async def _park_quiet(
        self,
        job: DeliverIssue,
        message: AbstractIncomingMessage,
        domain: str,
        *,
        until: datetime,
        claimed: bool = False,
    ) -> None:
        """The reader is in their quiet hours: park the delivery in the outbox (``pending``)
        until they end, and ack the job. Met before the claim, no attempt is counted; met
        after it (the slot's wait ran past 22:00), the claim is given back."""
        await self._record(
            ledger.Result(
                job.delivery_id, job.send_id, DeliveryStatus.PENDING, due_at=until, claimed=claimed
            )
        )
        await self.acks.ack(message)
        self.metrics.delivery("held", job.language, domain, test=_is_test(job))
        log.info("email_held", to=mask_email(job.to), reason="quiet_hours", until=str(until))

    async def _hold(
        self,
        job: DeliverIssue,
        message: AbstractIncomingMessage,
        domain: str,
        *,
        claimed: bool = False,
    ) -> None:
        """The domain's breaker is open: park the delivery in the outbox (``pending``) until
        the breaker's pause ends, without an attempt (its retry count and window are
        untouched), and ack the job: nothing cycles through the broker meanwhile."""
        until = self._not_in_quiet_hours(
            job, self.clock.now() + timedelta(seconds=self.flow.open_remaining(domain))
        )
        await self._record(
            ledger.Result(
                job.delivery_id, job.send_id, DeliveryStatus.PENDING, due_at=until, claimed=claimed
            )
        )
        await self.acks.ack(message)
        self.metrics.delivery("held", job.language, domain, test=_is_test(job))
        log.info("email_held", to=mask_email(job.to), reason="circuit_breaker_open")

    async def _stand_down(
        self, job: DeliverIssue, message: AbstractIncomingMessage, status: str | None
    ) -> None:
        """A cancelled send's job is recorded cancelled. A paused send's job goes back to the
        outbox (``pending``) and leaves the queue: the outbox sweeper publishes it again once
        the send runs (see :mod:`services.dispatcher.outbox`), so a long pause costs nothing."""
        parked = status != SendStatus.CANCELLED
        outcome = DeliveryStatus.PENDING if parked else DeliveryStatus.CANCELLED
        await self._record(ledger.Result(job.delivery_id, job.send_id, outcome))
        await self.acks.ack(message)
        if parked:
            log.debug("job_parked_while_paused")

    async def _settle(
        self,
        job: DeliverIssue,
        message: AbstractIncomingMessage,
        outcome: Outcome,
        *,
        message_id: str,
        domain: str,
    ) -> None:
        now = self.clock.now()
        attempt = settle_attempt(
            message,
            outcome.status,
            tiers=self.settings.retry_tiers,
            first_attempt_at=job.first_attempt_at,
            window_s=self.settings.dispatch_retry_window_s,
            now=now,
        )
        status, tier = attempt.status, attempt.tier
        if status == "bounced":
            await self.publisher.publish_event(
                outcome.bounce_event(to=job.to, delivery_id=job.delivery_id, language=job.language),
                routing_key=BOUNCE_RECEIVED,
            )
        await self._record(
            ledger.Result(
                job.delivery_id,
                job.send_id,
                status,
                smtp_code=outcome.code,
                smtp_reply=outcome.reply,
                message_id=message_id,  # the signed one of the message's header
                # The tier's delay, kept out of the reader's quiet hours.
                due_at=self._not_in_quiet_hours(job, now + timedelta(milliseconds=tier.delay_ms))
                if status == "deferred"
                else None,
            )
        )
        await self.acks.ack(message)
        self.metrics.delivery(status, job.language, domain, test=_is_test(job))
        # The canonical line of this delivery (cheap: see delivery_log).
        self.outcomes.outcome(
            "email_sent" if status == "sent" else f"email_{status}",
            to=job.to,
            delivery_id=job.delivery_id,
            send_id=job.send_id,
            language=job.language,
            smtp_code=outcome.code,
            reply=outcome.reply[:200] if status != "sent" else "",
            attempt=attempt.number,
            tier=tier.label if status == "deferred" else None,
        )

    async def _record(self, result: ledger.Result) -> None:
        """Commit a state of a claimed delivery (batched); the job is acked only after it."""
        if self.gate is None:
            await self.results.submit(result)
            return
        await self.gate.write(lambda: self.results.submit(result), what="delivery_outcome")

    async def _poison(
        self, job: DeliverIssue, message: AbstractIncomingMessage, *, reason: str
    ) -> None:
        deliveries = _delivery_count(message)
        if deliveries + 1 < self.settings.dispatch_poison_limit:
            log.warning("poison_job_requeued", reason=reason, deliveries=deliveries + 1)
            await message.reject(requeue=True)
            self.acks.settled(message)
            return
        log.error("poison_job_dead_lettered", reason=reason)
        await dead_letter(channel=self.raw_channel, message=message, reason=reason)
        await self._record(
            ledger.Result(job.delivery_id, job.send_id, "failed", smtp_reply=f"poison: {reason}")
        )
        await self.acks.ack(message)


def _delivery_count(message: AbstractIncomingMessage) -> int:
    """How often the broker delivered this message before (quorum queues count it)."""
    raw = (message.headers or {}).get("x-delivery-count", 0)
    return int(raw) if isinstance(raw, int) else 0


def _is_test(job: DeliverIssue) -> bool:
    """A test send's job has no subscriber (it goes to the editor's address)."""
    return job.subscriber_id is None
