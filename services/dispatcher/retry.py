"""Retry schedules (delay tiers, the retry window), and dead letters with their reason.

An issue delivery's retry waits in the ledger (``due_at``, published again by the reconciler).
A transactional job is republished to the tier exchange for its attempt
(:func:`schedule_retry`); the tier's queue holds it for the tier's TTL and dead-letters it back
to ``newsletter.commands`` under its original routing key. Either way the attempt number
travels in the ``x-retry`` header.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from services.dispatcher.outcomes import Status
from shared.messaging.publisher import Publisher, PublishError
from shared.messaging.schemas import Message
from shared.messaging.topology import DEAD, RetryTier

RETRY_HEADER = "x-retry"
REASON_HEADER = "x-dead-reason"
ROUTING_HEADER = "x-original-routing-key"
REPLAYED_HEADER = "x-replayed"  # set by ``newsletter dlq replay``: a failed delivery may retry


def attempt_of(message: AbstractIncomingMessage) -> int:
    raw = (message.headers or {}).get(RETRY_HEADER, 0)
    return int(raw) if isinstance(raw, int | str) and str(raw).isdigit() else 0


def tier_for(tiers: tuple[RetryTier, ...], attempt: int) -> RetryTier:
    """The tier of the ``attempt``-th retry (0-based); the last tier repeats."""
    return tiers[min(attempt, len(tiers) - 1)]


def window_exhausted(
    *, first_attempt_at: datetime, tier: RetryTier, window_s: float, now: datetime
) -> bool:
    """True if waiting in ``tier`` would bring the next attempt past the retry window."""
    return now + timedelta(milliseconds=tier.delay_ms) > first_attempt_at + timedelta(
        seconds=window_s
    )


@dataclass(frozen=True)
class Attempt:
    """One try of a job: its number (0 first), the tier a retry of it waits in, and the status
    to record: a deferral whose retry would land past the retry window is a failure."""

    number: int
    tier: RetryTier
    status: Status


def settle_attempt(
    message: AbstractIncomingMessage,
    status: Status,
    *,
    tiers: tuple[RetryTier, ...],
    first_attempt_at: datetime,
    window_s: float,
    now: datetime,
) -> Attempt:
    number = attempt_of(message)
    tier = tier_for(tiers, number)
    if status == "deferred" and window_exhausted(
        first_attempt_at=first_attempt_at, tier=tier, window_s=window_s, now=now
    ):
        status = "failed"
    return Attempt(number, tier, status)


async def schedule_retry(
    *,
    publisher: Publisher,
    job: Message,
    routing_key: str,
    tier: RetryTier,
    attempt: int,
) -> None:
    """Publish the job to ``tier``; it comes back to ``routing_key`` after the delay."""
    await publisher.publish(
        job,
        routing_key=routing_key,
        exchange=tier.exchange,
        headers={RETRY_HEADER: attempt},
    )


async def dead_letter(
    *, channel: AbstractChannel, message: AbstractIncomingMessage, reason: str
) -> None:
    """Copy the message to the dead-letter exchange with its reason (the caller then acks).

    ``channel`` must be a confirming channel with ``on_return_raises``.
    """
    routing_key = message.routing_key or ""
    headers = dict(message.headers or {})
    headers[REASON_HEADER] = reason[:500]
    headers[ROUTING_HEADER] = routing_key
    copy = aio_pika.Message(
        body=message.body,
        content_type=message.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        type=message.type,
        headers=headers,
    )
    exchange = await channel.get_exchange(DEAD, ensure=False)
    try:
        await exchange.publish(copy, routing_key=routing_key, mandatory=True, timeout=10)
    except (
        aio_pika.exceptions.DeliveryError,
        aio_pika.exceptions.PublishError,
        TimeoutError,
    ) as err:
        raise PublishError(f"dead letter not confirmed: {err}") from err
