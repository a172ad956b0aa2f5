"""Applying one bounce, complaint or unsubscribe event to the subscription tables.

Each event leaves exactly one ``bounce_decision`` row (unique per event id), written in the
same transaction as its effect, so a redelivered event is recognised and changes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.subscription.feedback.policy import (
    FeedbackPolicy,
    is_storm,
    next_soft_score,
    soft_suppresses,
)
from shared.addresses import address_domain, address_hash, mask_email
from shared.db.tables import (
    BounceDecision,
    ConsentRecord,
    SoftBounceScore,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from shared.messaging.schemas import BounceReceived, UnsubscribeRequested


@dataclass(frozen=True)
class Outcome:
    decision: str  # suppressed|scored|recorded|unsubscribed|duplicate
    reason: str
    subscriber_id: int | None


def without_address(text: str, address: str) -> str:
    """Diagnostics often quote the address; keep them as evidence without it (erasure-safe)."""
    if not address:
        return text
    return re.sub(re.escape(address), mask_email(address), text, flags=re.IGNORECASE)


async def already_applied(session: AsyncSession, event_id: str) -> bool:
    found = await session.exec(select(BounceDecision.id).where(BounceDecision.event_id == event_id))
    return found.first() is not None


async def _subscriber(
    session: AsyncSession, *, email_hash: str, subscriber_id: int | None
) -> Subscriber | None:
    if subscriber_id is not None:
        found = await session.get(Subscriber, subscriber_id)
        if found is not None:
            return found
    result = await session.exec(
        select(Subscriber).where(Subscriber.email_hash == email_hash).order_by(col(Subscriber.id))
    )
    return result.first()


async def suppress(
    session: AsyncSession, *, email_hash: str, reason: str, detail: str, now: datetime
) -> None:
    """Suppress an address (again, if an operator had lifted an older suppression)."""
    existing = await session.get(Suppression, email_hash)
    if existing is None:
        session.add(
            Suppression(email_hash=email_hash, reason=reason, detail=detail[:2000], created_at=now)
        )
    elif existing.lifted_at is not None:
        existing.lifted_at = None
        existing.reason = reason
        existing.detail = detail[:2000]
        existing.created_at = now
        existing.lift_note = ""
        session.add(existing)


async def unsubscribe(
    session: AsyncSession, *, subscriber: Subscriber, method: str, now: datetime
) -> bool:
    """Withdraw consent; False when the subscriber was not subscribed any more."""
    if subscriber.status not in {SubscriberStatus.ACTIVE, SubscriberStatus.PENDING}:
        return False
    subscriber.status = SubscriberStatus.UNSUBSCRIBED
    subscriber.unsubscribed_at = now
    subscriber.updated_at = now
    session.add(subscriber)
    await session.exec(
        update(ConsentRecord)
        .where(col(ConsentRecord.subscriber_id) == subscriber.id)
        .where(col(ConsentRecord.withdrawn_at).is_(None))
        .values(withdrawn_at=now, withdrawal_method=method[:32])
    )
    return True


async def _soft(
    session: AsyncSession, *, email_hash: str, policy: FeedbackPolicy, now: datetime, detail: str
) -> tuple[str, str]:
    row = await session.get(SoftBounceScore, email_hash)
    result = next_soft_score(
        policy=policy,
        score=row.score if row else None,
        last_bounce_at=row.last_bounce_at if row else None,
        now=now,
    )
    if row is None:
        row = SoftBounceScore(email_hash=email_hash, score=result.score, last_bounce_at=now)
    elif result.counted:
        row.score = result.score
        row.last_bounce_at = now
    session.add(row)
    note = "" if result.counted else " (not counted: already counted today)"
    note += " (stale score reset)" if result.decayed else ""
    reason = f"soft score {result.score:g}/{policy.soft_threshold:g}{note}"
    if soft_suppresses(policy=policy, score=result.score):
        await suppress(session, email_hash=email_hash, reason="soft_bounce", detail=detail, now=now)
        return "suppressed", reason + ": threshold reached"
    return "scored", reason


async def policy_bounces_in_window(session: AsyncSession, *, domain: str, since: datetime) -> int:
    result = await session.exec(
        select(func.count())
        .select_from(BounceDecision)
        .where(BounceDecision.email_domain == domain)
        .where(BounceDecision.bounce_class == "policy")
        .where(col(BounceDecision.created_at) >= since)
    )
    return int(result.one())


async def apply_bounce(
    session: AsyncSession, *, event: BounceReceived, policy: FeedbackPolicy, now: datetime
) -> Outcome:
    """Decide on one bounce event and stage every change in ``session`` (caller commits)."""
    if await already_applied(session, event.message_id):
        return Outcome("duplicate", "event already applied", None)
    email_hash = address_hash(event.recipient)
    domain = address_domain(event.recipient)
    subscriber = await _subscriber(session, email_hash=email_hash, subscriber_id=None)
    diagnostic = without_address(event.diagnostic, event.recipient)
    detail = f"{event.status} {diagnostic}".strip()[:500]
    match event.bounce_class:
        case "hard":
            await suppress(
                session, email_hash=email_hash, reason="hard_bounce", detail=detail, now=now
            )
            decision, reason = "suppressed", "hard bounce: the address does not take mail"
        case "complaint":
            if subscriber is not None:
                await unsubscribe(session, subscriber=subscriber, method="complaint", now=now)
            await suppress(
                session, email_hash=email_hash, reason="complaint", detail=detail, now=now
            )
            decision, reason = "unsubscribed", "complaint: unsubscribed and suppressed"
        case "soft":
            decision, reason = await _soft(
                session, email_hash=email_hash, policy=policy, now=now, detail=detail
            )
        case "policy":
            count = 1 + await policy_bounces_in_window(
                session, domain=domain, since=now - policy.storm_window
            )
            decision = "recorded"
            reason = f"policy refusal by {domain}: never suppresses ({count} in window)"
            if is_storm(policy=policy, policy_bounces_in_window=count):
                reason += ": storm"
        case _:
            decision, reason = "recorded", f"{event.bounce_class}: recorded only"
    session.add(
        BounceDecision(
            event_id=event.message_id,
            subscriber_id=subscriber.id if subscriber else None,
            delivery_id=event.delivery_id,
            email_hash=email_hash,
            email_domain=domain,
            language=event.language,
            bounce_class=event.bounce_class,
            status=event.status,
            action=event.action,
            diagnostic=diagnostic,
            source=event.source,
            evidence=event.evidence,
            decision=decision,
            reason=reason[:255],
            created_at=now,
        )
    )
    return Outcome(decision, reason, subscriber.id if subscriber else None)


async def apply_unsubscribe(
    session: AsyncSession, *, event: UnsubscribeRequested, now: datetime
) -> Outcome:
    """A mailto (or provider) unsubscribe: withdraw consent, no suppression (may re-subscribe)."""
    if await already_applied(session, event.message_id):
        return Outcome("duplicate", "event already applied", None)
    email_hash = address_hash(event.recipient)
    subscriber = await _subscriber(
        session, email_hash=email_hash, subscriber_id=event.subscriber_id
    )
    if subscriber is None:
        decision, reason = "ignored", "no such subscriber"
    elif await unsubscribe(session, subscriber=subscriber, method=event.method, now=now):
        decision, reason = "unsubscribed", f"unsubscribe request ({event.method})"
    else:
        decision, reason = "recorded", f"already {subscriber.status}"
    session.add(
        BounceDecision(
            event_id=event.message_id,
            subscriber_id=subscriber.id if subscriber else None,
            delivery_id=event.delivery_id,
            email_hash=subscriber.email_hash if subscriber else email_hash,
            email_domain=address_domain(event.recipient),
            bounce_class="unsubscribe",
            source=event.method,
            decision=decision,
            reason=reason,
            created_at=now,
        )
    )
    return Outcome(decision, reason, subscriber.id if subscriber else None)
