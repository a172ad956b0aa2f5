"""The renderer's database access: it writes ``edition`` rows and reads them for its pages."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db.tables import Edition, Subscriber, SubscriberLanguage, SubscriberStatus, Suppression

Sessions = async_sessionmaker[AsyncSession]


async def editions_of_send(sessions: Sessions, *, send_id: str) -> list[Edition]:
    async with sessions() as session:
        rows = await session.exec(select(Edition).where(Edition.send_id == send_id))
        return list(rows.all())


async def save_editions(sessions: Sessions, *, editions: Sequence[Edition]) -> bool:
    """Write a send's editions in one transaction; False when they were already written
    (a redelivered command), in which case nothing changes."""
    if not editions:
        return False
    send_id = editions[0].send_id
    async with sessions() as session:
        existing = await session.exec(select(Edition.language).where(Edition.send_id == send_id))
        if existing.first() is not None:
            return False
        session.add_all(editions)
        try:
            await session.commit()
        except IntegrityError:  # a concurrent copy of the same command committed first
            await session.rollback()
            return False
    return True


async def edition(sessions: Sessions, *, send_id: str, language: str) -> Edition | None:
    async with sessions() as session:
        rows = await session.exec(
            select(Edition).where(Edition.send_id == send_id, Edition.language == language)
        )
        return rows.first()


async def segment_sizes(sessions: Sessions, *, languages: Sequence[str]) -> dict[str, int]:
    """Active, unsuppressed subscribers per segment: what a send would reach (an estimate the
    dispatcher's planner makes exact when it plans)."""
    sizes = dict.fromkeys(languages, 0)
    suppressed = select(Suppression.email_hash).where(col(Suppression.lifted_at).is_(None))
    async with sessions() as session:
        rows = await session.exec(
            select(SubscriberLanguage.language, func.count())
            .join(Subscriber, col(Subscriber.id) == col(SubscriberLanguage.subscriber_id))
            .where(
                Subscriber.status == SubscriberStatus.ACTIVE,
                col(SubscriberLanguage.language).in_(list(languages)),
                col(Subscriber.email_hash).not_in(suppressed),
            )
            .group_by(SubscriberLanguage.language)
        )
        for language, count in rows.all():
            sizes[language] = int(count)
    return sizes
