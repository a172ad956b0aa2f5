"""What the links in our mails do: confirm, re-send a confirmation, unsubscribe, preferences.

Every function takes an already verified link (``link_tokens.VerifiedLink``) and checks it
against the stored subscriber: the address hash in the token must match, so a token for an
address that was erased or replaced changes nothing. State changes are conditional UPDATEs, so
two clicks racing each other do the change (and send its mail) once.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import structlog
from sqlalchemy import update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from services.subscription import mailbox_slots
from services.subscription.address_rules import is_variant, mailbox_hash
from services.subscription.errors import InvalidLinkToken, MailQueueUnavailable
from services.subscription.languages import as_language
from services.subscription.link_tokens import VerifiedLink
from services.subscription.mail_commands import TransactionalMail
from services.subscription.metrics import SubscriptionMetrics
from services.subscription.reader_consent import OptInTick, settle_at_opt_in
from services.subscription.records import (
    claim_confirmation_slot,
    confirm_consents,
    is_suppressed,
    release_confirmation_slot,
    set_languages,
    withdraw_consents,
)
from shared.db.tables import ConsentRecord, Subscriber, SubscriberStatus
from shared.db.tables.timestamps import utcnow

log = structlog.get_logger(__name__)


class LinkResult(StrEnum):
    DONE = "done"  # the change happened now
    ALREADY = "already"  # it had happened before: the same success page


async def subscriber_for(
    session: AsyncSession, *, subscriber_id: int, email_hash_prefix: str
) -> Subscriber:
    """The subscriber a token names, if the token is still bound to its address."""
    subscriber = await session.get(Subscriber, subscriber_id)
    if (
        subscriber is None
        or subscriber.email is None
        or subscriber.status == SubscriberStatus.ERASED
        or not email_hash_prefix
        or not subscriber.email_hash.startswith(email_hash_prefix)
    ):
        raise InvalidLinkToken("no subscriber for this token")
    return subscriber


def _issued_before(link: VerifiedLink, moment: datetime | None) -> bool:
    # Token timestamps have one-second resolution: compare at that resolution.
    return moment is not None and link.issued_at < moment.replace(microsecond=0)


async def confirm(
    *,
    session: AsyncSession,
    mail: TransactionalMail,
    metrics: SubscriptionMetrics,
    link: VerifiedLink,
    welcome: bool = True,
    reader_analytics: OptInTick | None = None,
) -> LinkResult:
    """The double opt-in. ``reader_analytics``: the per-reader analytics box was ticked on the
    confirmation page (a signup's waiting grant is confirmed only then, else withdrawn)."""
    subscriber = await subscriber_for(
        session, subscriber_id=link.subscriber_id, email_hash_prefix=link.email_hash_prefix
    )
    if subscriber.status == SubscriberStatus.ACTIVE:
        return LinkResult.ALREADY
    if subscriber.status != SubscriberStatus.PENDING or _issued_before(
        link, subscriber.unsubscribed_at
    ):
        raise InvalidLinkToken("confirmation token no longer applies")
    now = utcnow()
    result = await session.execute(
        update(Subscriber)
        .where(
            col(Subscriber.id) == link.subscriber_id,
            col(Subscriber.status) == SubscriberStatus.PENDING,
        )
        .values(status=SubscriberStatus.ACTIVE, confirmed_at=now, updated_at=now)
    )
    if getattr(result, "rowcount", 0) != 1:
        await session.rollback()
        return LinkResult.ALREADY
    await confirm_consents(session, subscriber_id=link.subscriber_id, now=now)
    await settle_at_opt_in(session, subscriber=subscriber, now=now, tick=reader_analytics)
    suppressed = await is_suppressed(session, subscriber.email_hash)
    await session.commit()
    metrics.confirmations.labels(language=subscriber.locale).inc()
    log.info("subscription_confirmed", subscriber_id=link.subscriber_id)
    if welcome and not suppressed:
        await _best_effort_mail(mail, "welcome", subscriber)
    return LinkResult.DONE


async def resend_confirmation(
    *,
    session: AsyncSession,
    mail: TransactionalMail,
    subscriber_id: int,
    email_hash_prefix: str,
    interval_s: int,
) -> bool:
    """A new confirmation mail for an expired link, within the hourly limit. Same answer always."""
    try:
        subscriber = await subscriber_for(
            session, subscriber_id=subscriber_id, email_hash_prefix=email_hash_prefix
        )
    except InvalidLinkToken:
        return False
    if subscriber.status != SubscriberStatus.PENDING or await is_suppressed(
        session, subscriber.email_hash
    ):
        return False
    now = utcnow()
    assert subscriber.email is not None
    variant = is_variant(subscriber.email)  # variants share one mail per interval
    mailbox = mailbox_hash(subscriber.email)
    if not await claim_confirmation_slot(
        session, subscriber_id=subscriber_id, now=now, interval_s=interval_s
    ) or (
        variant
        and not await mailbox_slots.claim(
            session, mailbox_hash=mailbox, now=now, interval_s=interval_s
        )
    ):
        await session.rollback()
        return False
    await session.commit()
    try:
        await mail.request(
            "confirmation",
            subscriber_id=subscriber_id,
            email=subscriber.email,
            email_hash=subscriber.email_hash,
            language=as_language(subscriber.locale),
        )
    except MailQueueUnavailable:
        await release_confirmation_slot(session, subscriber_id=subscriber_id, claimed_at=now)
        if variant:
            await mailbox_slots.release(session, mailbox_hash=mailbox, claimed_at=now)
        await session.commit()
        raise
    return True


async def unsubscribe(
    *,
    session: AsyncSession,
    mail: TransactionalMail,
    metrics: SubscriptionMetrics,
    link: VerifiedLink,
    method: str,
    send_goodbye: bool,
) -> LinkResult:
    """Stop every edition at once (committed before the answer); idempotent."""
    subscriber = await subscriber_for(
        session, subscriber_id=link.subscriber_id, email_hash_prefix=link.email_hash_prefix
    )
    return await unsubscribe_subscriber(
        session=session,
        mail=mail,
        metrics=metrics,
        subscriber=subscriber,
        method=method,
        send_goodbye=send_goodbye,
    )


async def unsubscribe_subscriber(
    *,
    session: AsyncSession,
    mail: TransactionalMail,
    metrics: SubscriptionMetrics,
    subscriber: Subscriber,
    method: str,
    send_goodbye: bool,
) -> LinkResult:
    assert subscriber.id is not None
    now = utcnow()
    result = await session.execute(
        update(Subscriber)
        .where(
            col(Subscriber.id) == subscriber.id,
            col(Subscriber.status).in_([SubscriberStatus.ACTIVE, SubscriberStatus.PENDING]),
        )
        .values(status=SubscriberStatus.UNSUBSCRIBED, unsubscribed_at=now, updated_at=now)
    )
    if getattr(result, "rowcount", 0) != 1:
        await session.rollback()
        return LinkResult.ALREADY
    await withdraw_consents(session, subscriber_id=subscriber.id, now=now, method=method)
    suppressed = await is_suppressed(session, subscriber.email_hash)
    await session.commit()
    metrics.unsubscribes.labels(language=subscriber.locale, method=method).inc()
    log.info("unsubscribed", subscriber_id=subscriber.id, method=method)
    if send_goodbye and not suppressed:
        await _best_effort_mail(mail, "goodbye", subscriber)
    return LinkResult.DONE


async def change_languages(
    *, session: AsyncSession, link: VerifiedLink, languages: list[str]
) -> Subscriber:
    """Replace the editions of an active or pending subscriber (no new opt-in needed)."""
    subscriber = await subscriber_for(
        session, subscriber_id=link.subscriber_id, email_hash_prefix=link.email_hash_prefix
    )
    if subscriber.status not in {SubscriberStatus.ACTIVE, SubscriberStatus.PENDING}:
        raise InvalidLinkToken("not subscribed")
    assert subscriber.id is not None
    now = utcnow()
    await set_languages(session, subscriber.id, languages)
    subscriber.updated_at = now
    session.add(subscriber)
    session.add(
        ConsentRecord(
            subscriber_id=subscriber.id,
            email_hash=subscriber.email_hash,
            consent_text_version="preferences",
            consent_language=subscriber.locale,
            languages=",".join(languages),
            form="preferences",
            source="preferences page",
            given_at=now,
            confirmed_at=now if subscriber.status == SubscriberStatus.ACTIVE else None,
        )
    )
    await session.commit()
    log.info("preferences_changed", subscriber_id=subscriber.id, languages=",".join(languages))
    return subscriber


async def _best_effort_mail(mail: TransactionalMail, kind: str, subscriber: Subscriber) -> None:
    """Welcome and goodbye mails are courtesy: their failure never undoes the change."""
    assert subscriber.id is not None
    assert subscriber.email is not None
    try:
        await mail.request(
            "welcome" if kind == "welcome" else "goodbye",
            subscriber_id=subscriber.id,
            email=subscriber.email,
            email_hash=subscriber.email_hash,
            language=as_language(subscriber.locale),
        )
    except MailQueueUnavailable:
        log.warning("courtesy_mail_not_queued", kind=kind, subscriber_id=subscriber.id)
