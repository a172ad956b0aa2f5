"""Consumer of ``subscription.feedback``: applies bounce, complaint and unsubscribe events.

Interface the subscription app relies on::

    consumer = await FeedbackConsumer.start(connection=..., sessions=..., publisher=...)
    ...
    await consumer.stop()

Ack policy: a message is acked only after its decision row and effects are committed. An
undecodable body or an unknown type is rejected without requeue (dead-lettered by the
topology); a failure while applying (database down) is rejected with requeue, and the quorum
queue's delivery limit dead-letters it if it keeps failing. Redelivered events are recognised
by their id (``bounce_decision.event_id``) and change nothing.

A policy storm (``FeedbackPolicy.storm_threshold`` policy bounces from one receiving domain
within ``storm_window``) publishes :class:`DomainPolicyAlerted` on ``domain.policy_alerted``
for the dispatchers' circuit breakers, at most once per ``storm_pause`` per domain and process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.subscription.feedback.decisions import (
    Outcome,
    apply_bounce,
    apply_unsubscribe,
    policy_bounces_in_window,
)
from services.subscription.feedback.policy import FeedbackPolicy, is_storm
from services.subscription.feedback.settings import load_feedback_policy
from shared.addresses import address_domain
from shared.messaging.publisher import Publisher, PublishError
from shared.messaging.schemas import (
    BounceReceived,
    DomainPolicyAlerted,
    UndecodableMessage,
    UnsubscribeRequested,
    decode,
)
from shared.messaging.topology import DOMAIN_POLICY_ALERTED, SUBSCRIPTION_FEEDBACK, declare_queue

log = structlog.get_logger(__name__)

PREFETCH = 32


def _utcnow() -> datetime:
    return datetime.now(UTC)


def decode_feedback(message: AbstractIncomingMessage) -> BounceReceived | UnsubscribeRequested:
    """The event in a feedback message, by its AMQP ``type`` (or the body's ``type``)."""
    kind = message.type or ""
    if kind == BounceReceived.type_name or b'"bounce_received"' in message.body[:4096]:
        return decode(BounceReceived, message.body)
    if kind == UnsubscribeRequested.type_name or b'"unsubscribe_requested"' in message.body[:4096]:
        return decode(UnsubscribeRequested, message.body)
    raise UndecodableMessage(f"unexpected message type {kind!r} on {SUBSCRIPTION_FEEDBACK.name}")


class FeedbackConsumer:
    def __init__(
        self,
        *,
        channel: AbstractChannel,
        queue: AbstractQueue,
        sessions: async_sessionmaker[AsyncSession],
        publisher: Publisher,
        policy: FeedbackPolicy,
        clock: Callable[[], datetime],
    ) -> None:
        self._channel = channel
        self._queue = queue  # strong reference: robust queues are restored through weak ones
        self._sessions = sessions
        self._publisher = publisher
        self._policy = policy
        self._clock = clock
        self._tag: str | None = None
        self._alerted: dict[str, float] = {}

    @classmethod
    async def start(
        cls,
        *,
        connection: AbstractRobustConnection,
        sessions: async_sessionmaker[AsyncSession],
        publisher: Publisher,
        policy: FeedbackPolicy | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> FeedbackConsumer:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await declare_queue(channel, SUBSCRIPTION_FEEDBACK)
        consumer = cls(
            channel=channel,
            queue=queue,
            sessions=sessions,
            publisher=publisher,
            policy=policy or load_feedback_policy(),
            clock=clock,
        )
        consumer._tag = await queue.consume(consumer.on_message)
        log.info("feedback_consumer_started", queue=SUBSCRIPTION_FEEDBACK.name)
        return consumer

    async def stop(self) -> None:
        try:
            if self._tag is not None and not self._channel.is_closed:
                await self._queue.cancel(self._tag)
        finally:
            self._tag = None
            if not self._channel.is_closed:
                await self._channel.close()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            event = decode_feedback(message)
        except UndecodableMessage as err:
            log.warning("feedback_message_rejected", error=str(err)[:300])
            await message.reject(requeue=False)
            return
        with structlog.contextvars.bound_contextvars(event_id=event.message_id):
            try:
                outcome = await self.apply(event)
            except Exception:
                log.exception("feedback_apply_failed")
                await message.reject(requeue=True)
                return
            await message.ack()
            if (
                isinstance(event, BounceReceived)
                and event.bounce_class == "policy"
                and outcome.decision != "duplicate"
            ):
                await self._check_storm(event)

    async def apply(self, event: BounceReceived | UnsubscribeRequested) -> Outcome:
        """Apply one event in its own transaction; a concurrent duplicate is a no-op."""
        now = self._clock()
        async with self._sessions() as session:
            if isinstance(event, BounceReceived):
                outcome = await apply_bounce(session, event=event, policy=self._policy, now=now)
            else:
                outcome = await apply_unsubscribe(session, event=event, now=now)
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
                return Outcome("duplicate", "applied concurrently", None)
        log.info(
            "feedback_applied",
            decision=outcome.decision,
            reason=outcome.reason,
            subscriber_id=outcome.subscriber_id,
            bounce_class=getattr(event, "bounce_class", "unsubscribe"),
            delivery_id=event.delivery_id,
        )
        return outcome

    async def _check_storm(self, event: BounceReceived) -> None:
        """Count the domain's committed policy bounces; alert once per pause on a storm.

        Counting after the commit (not inside the transaction) means the last of a burst of
        concurrent handlers sees every row, whatever the database's isolation.
        """
        domain = address_domain(event.recipient)
        pause_s = int(self._policy.storm_pause.total_seconds())
        if self._recently_alerted(domain, pause_s):
            return
        async with self._sessions() as session:
            count = await policy_bounces_in_window(
                session, domain=domain, since=self._clock() - self._policy.storm_window
            )
        if not is_storm(policy=self._policy, policy_bounces_in_window=count):
            return
        if self._recently_alerted(domain, pause_s):  # another handler got there meanwhile
            return
        self._alerted[domain] = time.monotonic()  # no await since the check: handlers interleave
        alert = DomainPolicyAlerted(
            domain=domain,
            policy_bounces=count,
            window_s=int(self._policy.storm_window.total_seconds()),
            threshold=self._policy.storm_threshold,
            pause_s=pause_s,
            sample_status=event.status,
            sample_diagnostic=event.diagnostic[:500],
        )
        try:
            await self._publisher.publish_event(alert, routing_key=DOMAIN_POLICY_ALERTED)
        except PublishError as err:
            log.warning("domain_policy_alert_failed", domain=domain, error=str(err))
            del self._alerted[domain]
            return
        log.warning("domain_policy_alerted", domain=domain, policy_bounces=count)

    def _recently_alerted(self, domain: str, pause_s: int) -> bool:
        last = self._alerted.get(domain)
        return last is not None and time.monotonic() - last < pause_s
