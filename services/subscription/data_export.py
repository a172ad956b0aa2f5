"""The GDPR data export of one subscriber (admin API ``GET /api/subscribers/{id}/data``).

Everything the suite keeps that names the person: the subscriber row and editions, every
consent ledger row (the subscription itself, preference changes, per-reader analytics grants
and withdrawals) and, when per-reader analytics was on and they consented, each of their
recorded clicks (``reader_click``, the renderer's table, read here) with the link's target.
Their deliveries are the dispatcher's and are not listed (address, status and time of each
mail sent to them; the send reports cover them).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.subscription.directory import SubscriberPublic, get_subscriber
from shared.db.tables import ConsentRecord, ReaderClick, TrackedLink


class ConsentEntry(BaseModel):
    form: str
    consent_text_version: str
    consent_language: str
    languages: str
    source: str
    given_at: datetime
    confirmed_at: datetime | None
    withdrawn_at: datetime | None
    withdrawal_method: str | None


class ClickEntry(BaseModel):
    issue_number: int
    edition: str
    article: int
    link: int
    url: str | None
    clicked_at: datetime


class SubscriberData(BaseModel):
    subscriber: SubscriberPublic
    consents: list[ConsentEntry]
    reader_clicks: list[ClickEntry]


async def subscriber_data(*, session: AsyncSession, subscriber_id: int) -> SubscriberData | None:
    subscriber = await get_subscriber(session=session, subscriber_id=subscriber_id)
    if subscriber is None:
        return None
    consents = await session.exec(
        select(ConsentRecord)
        .where(ConsentRecord.subscriber_id == subscriber_id)
        .order_by(col(ConsentRecord.given_at), col(ConsentRecord.id))
    )
    clicks = await session.exec(
        select(ReaderClick, TrackedLink.url)
        .outerjoin(
            TrackedLink,
            (col(TrackedLink.issue_number) == col(ReaderClick.issue_number))
            & (col(TrackedLink.edition) == col(ReaderClick.edition))
            & (col(TrackedLink.article) == col(ReaderClick.article))
            & (col(TrackedLink.link) == col(ReaderClick.link)),
        )
        .where(ReaderClick.subscriber_id == subscriber_id)
        .order_by(col(ReaderClick.clicked_at), col(ReaderClick.id))
    )
    return SubscriberData(
        subscriber=subscriber,
        consents=[ConsentEntry.model_validate(c, from_attributes=True) for c in consents.all()],
        reader_clicks=[
            ClickEntry(
                issue_number=click.issue_number,
                edition=click.edition,
                article=click.article,
                link=click.link,
                url=url,
                clicked_at=click.clicked_at,
            )
            for click, url in clicks.all()
        ],
    )
