"""Storing a signup: the double opt-in's first half.

Whatever the address's state, the caller shows the same answer; the :class:`SignupOutcome`
is only for logs and tests. A confirmation mail goes out only if the address is not
suppressed, still needs confirming, and neither the address nor its mailbox (any variant of it,
``mailbox_slots.py``) has had one in the last interval (one per hour by default, enforced in
the database so it holds across replicas).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import structlog
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from services.subscription import mailbox_slots
from services.subscription.address_rules import NormalizedAddress
from services.subscription.errors import MailQueueUnavailable
from services.subscription.languages import as_language
from services.subscription.mail_commands import TransactionalMail
from services.subscription.records import (
    claim_confirmation_slot,
    release_confirmation_slot,
    set_languages,
    signup_lookup,
)
from shared.db.tables import ConsentRecord, Subscriber, SubscriberLanguage, SubscriberStatus
from shared.db.tables.timestamps import utcnow

log = structlog.get_logger(__name__)
_ATTEMPTS = 3


class SignupOutcome(StrEnum):
    CREATED = "created"
    PENDING_AGAIN = "pending_again"
    RESUBSCRIBED = "resubscribed"
    ALREADY_ACTIVE = "already_active"
    SUPPRESSED = "suppressed"


@dataclass(frozen=True)
class SignupRequest:
    address: NormalizedAddress
    languages: list[str]
    locale: str
    consent_text_version: str
    form: str = "signup"
    source: str = ""
    client_ip_hash: str = ""
    shown_at: datetime | None = None
    time_zone: str | None = None  # IANA zone from the form; None: the language's default


@dataclass(frozen=True)
class SignupResult:
    outcome: SignupOutcome
    subscriber_id: int | None
    mailed: bool


async def sign_up(
    *,
    sessions: async_sessionmaker[AsyncSession],
    mail: TransactionalMail,
    request: SignupRequest,
    confirmation_interval_s: int,
) -> SignupResult:
    """Store or refresh the pending subscriber and request its confirmation mail.

    Raises :class:`MailQueueUnavailable` if the mail could not be queued (nothing promised).
    """
    for attempt in range(_ATTEMPTS):
        now = utcnow()
        try:
            async with sessions() as session:
                outcome, subscriber_id = await _store(session, request=request, now=now)
                if outcome == SignupOutcome.CREATED:
                    claimed = True  # the new row was inserted with the slot taken
                else:
                    claimed = subscriber_id is not None and await claim_confirmation_slot(
                        session,
                        subscriber_id=subscriber_id,
                        now=now,
                        interval_s=confirmation_interval_s,
                    )
                if claimed and subscriber_id is not None and request.address.is_variant:
                    claimed = await _claim_mailbox(
                        session,
                        request.address,
                        subscriber_id=subscriber_id,
                        now=now,
                        interval_s=confirmation_interval_s,
                    )
                await session.commit()
            break
        except IntegrityError:
            # Two signups of one new address raced; the loser finds the winner's row.
            if attempt == _ATTEMPTS - 1:
                raise
    if subscriber_id is None or not claimed:
        log.info("signup_stored", outcome=outcome, subscriber_id=subscriber_id, mailed=False)
        return SignupResult(outcome=outcome, subscriber_id=subscriber_id, mailed=False)
    try:
        await mail.request(
            "confirmation",
            subscriber_id=subscriber_id,
            email=request.address.email,
            email_hash=request.address.email_hash,
            language=as_language(request.locale),
        )
    except MailQueueUnavailable:
        async with sessions() as session:
            await release_confirmation_slot(session, subscriber_id=subscriber_id, claimed_at=now)
            if request.address.is_variant:
                await mailbox_slots.release(
                    session, mailbox_hash=request.address.mailbox_hash, claimed_at=now
                )
            await session.commit()
        raise
    log.info("signup_stored", outcome=outcome, subscriber_id=subscriber_id, mailed=True)
    return SignupResult(outcome=outcome, subscriber_id=subscriber_id, mailed=True)


async def _claim_mailbox(
    session: AsyncSession,
    address: NormalizedAddress,
    *,
    subscriber_id: int,
    now: datetime,
    interval_s: int,
) -> bool:
    """A variant's second slot (``mailbox_slots.py``); when another variant of the mailbox has
    it, the address's own slot is given back, so that a later try is not refused for it."""
    if await mailbox_slots.claim(
        session, mailbox_hash=address.mailbox_hash, now=now, interval_s=interval_s
    ):
        return True
    await release_confirmation_slot(session, subscriber_id=subscriber_id, claimed_at=now)
    return False


async def _store(
    session: AsyncSession, *, request: SignupRequest, now: datetime
) -> tuple[SignupOutcome, int | None]:
    """The state change of one signup; returns the subscriber to mail, if any."""
    address = request.address
    suppressed, found_id, status = await signup_lookup(
        session, email=address.email, email_hash=address.email_hash
    )
    if suppressed:
        return SignupOutcome.SUPPRESSED, None
    if status == SubscriberStatus.ACTIVE:
        return SignupOutcome.ALREADY_ACTIVE, None
    # Only a known, not active address needs the ORM object (and a row lock is not needed:
    # the confirmation slot is claimed by a conditional UPDATE afterwards).
    subscriber = await session.get(Subscriber, found_id) if found_id is not None else None
    if subscriber is None:
        # The rush path, written as three Core INSERTs: the ORM's unit of work (identity map,
        # flush, attribute events) was the largest single share of the CPU of a signup.
        inserted = await session.execute(
            insert(Subscriber)
            .values(
                email=address.email,
                email_hash=address.email_hash,
                email_domain=address.domain,
                status=SubscriberStatus.PENDING,
                locale=request.locale,
                created_at=now,
                updated_at=now,
                last_confirmation_sent_at=now,
                time_zone=request.time_zone,
            )
            .returning(col(Subscriber.id))
        )
        subscriber_id: int = inserted.scalar_one()
        if request.languages:
            await session.execute(
                insert(SubscriberLanguage),
                [{"subscriber_id": subscriber_id, "language": lang} for lang in request.languages],
            )
        await _record_consent(session, request=request, subscriber_id=subscriber_id, now=now)
        return SignupOutcome.CREATED, subscriber_id
    outcome = (
        SignupOutcome.RESUBSCRIBED
        if subscriber.status == SubscriberStatus.UNSUBSCRIBED
        else SignupOutcome.PENDING_AGAIN
    )
    subscriber.status = SubscriberStatus.PENDING
    subscriber.locale = request.locale
    subscriber.time_zone = request.time_zone or subscriber.time_zone
    subscriber.updated_at = now
    session.add(subscriber)
    assert subscriber.id is not None
    await set_languages(session, subscriber.id, request.languages)
    await _record_consent(session, request=request, subscriber_id=subscriber.id, now=now)
    return outcome, subscriber.id


async def _record_consent(
    session: AsyncSession, *, request: SignupRequest, subscriber_id: int, now: datetime
) -> None:
    """The consent ledger's row of this signup (a Core INSERT, every column given)."""
    await session.execute(
        insert(ConsentRecord).values(
            subscriber_id=subscriber_id,
            email_hash=request.address.email_hash,
            consent_text_version=request.consent_text_version,
            consent_language=request.locale,
            languages=",".join(request.languages),
            form=request.form,
            source=request.source[:255],
            client_ip_hash=request.client_ip_hash,
            shown_at=request.shown_at,
            given_at=now,
        )
    )
