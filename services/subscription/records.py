"""Small queries over the subscription tables shared by the signup, link and admin flows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Table, delete, literal, or_, update
from sqlalchemy import select as core_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.subscription.reader_consent import FORM as READER_ANALYTICS_FORM
from shared.db.tables import ConsentRecord, Subscriber, SubscriberLanguage, Suppression


async def is_suppressed(session: AsyncSession, email_hash: str) -> bool:
    found = await session.exec(
        select(Suppression.email_hash).where(
            Suppression.email_hash == email_hash, col(Suppression.lifted_at).is_(None)
        )
    )
    return found.first() is not None


async def signup_lookup(
    session: AsyncSession, *, email: str, email_hash: str
) -> tuple[bool, int | None, str | None]:
    """One Core round trip for a signup: is the address suppressed, and its subscriber's id
    and status (None, None if there is none yet)."""
    suppression: Table = Suppression.__table__  # type: ignore[attr-defined]
    subscriber: Table = Subscriber.__table__  # type: ignore[attr-defined]
    suppressed = (
        core_select(literal(1))
        .where(suppression.c.email_hash == email_hash, suppression.c.lifted_at.is_(None))
        .exists()
    )
    anchor = core_select(literal(1).label("one")).subquery()
    row = (
        await session.execute(
            core_select(
                suppressed.label("suppressed"), subscriber.c.id, subscriber.c.status
            ).select_from(anchor.outerjoin(subscriber, subscriber.c.email == email))
        )
    ).one()
    return bool(row[0]), row[1], row[2]


async def languages_of(session: AsyncSession, subscriber_id: int) -> list[str]:
    rows = await session.exec(
        select(SubscriberLanguage.language).where(SubscriberLanguage.subscriber_id == subscriber_id)
    )
    return sorted(rows.all())


async def set_languages(
    session: AsyncSession, subscriber_id: int, languages: Sequence[str]
) -> None:
    await session.execute(
        delete(SubscriberLanguage).where(col(SubscriberLanguage.subscriber_id) == subscriber_id)
    )
    session.add_all(
        SubscriberLanguage(subscriber_id=subscriber_id, language=language) for language in languages
    )


async def claim_confirmation_slot(
    session: AsyncSession, *, subscriber_id: int, now: datetime, interval_s: int
) -> bool:
    """Atomically take the address's one-confirmation-mail-per-interval slot.

    A conditional UPDATE, so two replicas racing for the same address cannot both win.
    """
    result = await session.execute(
        update(Subscriber)
        .where(
            col(Subscriber.id) == subscriber_id,
            or_(
                col(Subscriber.last_confirmation_sent_at).is_(None),
                col(Subscriber.last_confirmation_sent_at) <= now - timedelta(seconds=interval_s),
            ),
        )
        .values(last_confirmation_sent_at=now)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def release_confirmation_slot(
    session: AsyncSession, *, subscriber_id: int, claimed_at: datetime
) -> None:
    """Give the slot back when the mail could not be queued (so a retry is not refused)."""
    await session.execute(
        update(Subscriber)
        .where(
            col(Subscriber.id) == subscriber_id,
            col(Subscriber.last_confirmation_sent_at) == claimed_at,
        )
        .values(last_confirmation_sent_at=None)
    )


async def withdraw_consents(
    session: AsyncSession, *, subscriber_id: int, now: datetime, method: str
) -> None:
    await session.execute(
        update(ConsentRecord)
        .where(
            col(ConsentRecord.subscriber_id) == subscriber_id,
            col(ConsentRecord.withdrawn_at).is_(None),
        )
        .values(withdrawn_at=now, withdrawal_method=method)
    )


async def confirm_consents(session: AsyncSession, *, subscriber_id: int, now: datetime) -> None:
    """The double opt-in confirms the signup's consent to the mailing. Not the per-reader
    analytics box: that one is confirmed only by its own tick at the opt-in
    (``reader_consent.settle_at_opt_in``)."""
    await session.execute(
        update(ConsentRecord)
        .where(
            col(ConsentRecord.subscriber_id) == subscriber_id,
            col(ConsentRecord.form) != READER_ANALYTICS_FORM,
            col(ConsentRecord.confirmed_at).is_(None),
            col(ConsentRecord.withdrawn_at).is_(None),
        )
        .values(confirmed_at=now)
    )
