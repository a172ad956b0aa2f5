"""Read side of the admin API: listing, searching, counting and exporting subscribers."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from shared.db.tables import Subscriber, SubscriberLanguage, SubscriberStatus


class SubscriberPublic(BaseModel):
    id: int
    email: str
    status: str
    locale: str
    languages: list[str]
    created_at: datetime
    confirmed_at: datetime | None
    unsubscribed_at: datetime | None


class SubscriberPage(BaseModel):
    total: int
    items: list[SubscriberPublic]


class SegmentCount(BaseModel):
    language: str
    active: int = 0
    pending: int = 0
    unsubscribed: int = 0


def _filtered(
    query: SelectOfScalar[Subscriber],
    *,
    status: str | None,
    language: str | None,
    search: str | None,
) -> SelectOfScalar[Subscriber]:
    query = query.where(col(Subscriber.status) != SubscriberStatus.ERASED)
    if status:
        query = query.where(Subscriber.status == status)
    if language:
        members = select(SubscriberLanguage.subscriber_id).where(
            SubscriberLanguage.language == language
        )
        query = query.where(col(Subscriber.id).in_(members))
    if search:
        escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(col(Subscriber.email).like(f"%{escaped}%", escape="\\"))
    return query


async def _languages_by_id(session: AsyncSession, ids: list[int]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = defaultdict(list)
    if ids:
        rows = await session.exec(
            select(SubscriberLanguage).where(col(SubscriberLanguage.subscriber_id).in_(ids))
        )
        for row in rows:
            found[row.subscriber_id].append(row.language)
    return found


def _public(subscriber: Subscriber, languages: list[str]) -> SubscriberPublic:
    assert subscriber.id is not None
    return SubscriberPublic(
        id=subscriber.id,
        email=subscriber.email or "",
        status=subscriber.status,
        locale=subscriber.locale,
        languages=sorted(languages),
        created_at=subscriber.created_at,
        confirmed_at=subscriber.confirmed_at,
        unsubscribed_at=subscriber.unsubscribed_at,
    )


async def list_subscribers(
    *,
    session: AsyncSession,
    status: str | None = None,
    language: str | None = None,
    search: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> SubscriberPage:
    base = _filtered(select(Subscriber), status=status, language=language, search=search)
    total = (await session.exec(select(func.count()).select_from(base.subquery()))).one()
    rows = list(await session.exec(base.order_by(col(Subscriber.id)).limit(limit).offset(offset)))
    languages = await _languages_by_id(session, [s.id for s in rows if s.id is not None])
    return SubscriberPage(
        total=int(total), items=[_public(s, languages.get(s.id or 0, [])) for s in rows]
    )


async def get_subscriber(*, session: AsyncSession, subscriber_id: int) -> SubscriberPublic | None:
    subscriber = await session.get(Subscriber, subscriber_id)
    if subscriber is None or subscriber.status == SubscriberStatus.ERASED:
        return None
    languages = await _languages_by_id(session, [subscriber_id])
    return _public(subscriber, languages.get(subscriber_id, []))


async def segment_counts(*, session: AsyncSession) -> list[SegmentCount]:
    rows = await session.exec(
        select(SubscriberLanguage.language, Subscriber.status, func.count())
        .join(Subscriber, col(Subscriber.id) == col(SubscriberLanguage.subscriber_id))
        .group_by(col(SubscriberLanguage.language), col(Subscriber.status))
    )
    counts: dict[str, SegmentCount] = {}
    for language, status, count in rows:
        segment = counts.setdefault(language, SegmentCount(language=language))
        if status in {"active", "pending", "unsubscribed"}:
            setattr(segment, status, int(count))
    return [counts[key] for key in sorted(counts)]


async def export_subscribers(
    *,
    session: AsyncSession,
    status: str | None = None,
    language: str | None = None,
    batch: int = 500,
) -> AsyncIterator[SubscriberPublic]:
    """Every matching subscriber, in id order, fetched in batches (keyset pagination)."""
    last_id = 0
    while True:
        query = _filtered(select(Subscriber), status=status, language=language, search=None)
        rows = list(
            await session.exec(
                query.where(col(Subscriber.id) > last_id).order_by(col(Subscriber.id)).limit(batch)
            )
        )
        if not rows:
            return
        languages = await _languages_by_id(session, [s.id for s in rows if s.id is not None])
        for subscriber in rows:
            yield _public(subscriber, languages.get(subscriber.id or 0, []))
        last_id = rows[-1].id or last_id
