"""The database side of tracked links: targets written at render time, counts upserted in
batches by the flusher (``tracked_link``, ``link_click`` and ``mail_open``, all written by the
renderer)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy import insert as sa_insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.renderer.click_counter import CounterKey
from services.renderer.opens import OpenKey
from services.renderer.store import Sessions
from shared.db.tables import LinkClick, MailOpen, TrackedLink
from shared.db.tables.timestamps import utcnow

TRACKED_LINK: Table = TrackedLink.__table__  # type: ignore[attr-defined]
LINK_CLICK: Table = LinkClick.__table__  # type: ignore[attr-defined]
MAIL_OPEN: Table = MailOpen.__table__  # type: ignore[attr-defined]


def _insert(session: AsyncSession, table: Table) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return pg_insert(table)
    if dialect == "sqlite":
        return sqlite_insert(table)
    return sa_insert(table)  # pragma: no cover - the suite runs on SQLite and PostgreSQL


async def save_tracked_links(sessions: Sessions, *, links: Sequence[TrackedLink]) -> None:
    """Upsert the targets of an edition's links: a later send of the issue with a corrected
    link sends its old mails' clicks to the corrected target too (it is the same link)."""
    if not links:
        return
    async with sessions() as session:
        statement = _insert(session, TRACKED_LINK)
        now = utcnow()
        rows = [
            {
                "issue_number": link.issue_number,
                "edition": link.edition,
                "article": link.article,
                "link": link.link,
                "article_key": link.article_key,
                "article_title": link.article_title,
                "url": link.url,
                "updated_at": now,
            }
            for link in links
        ]
        statement = statement.on_conflict_do_update(
            index_elements=["issue_number", "edition", "article", "link"],
            set_={
                "article_key": statement.excluded.article_key,
                "article_title": statement.excluded.article_title,
                "url": statement.excluded.url,
                "updated_at": statement.excluded.updated_at,
            },
        )
        await session.execute(statement, rows)
        await session.commit()


async def tracked_link(
    sessions: Sessions, *, issue: int, edition: str, article: int, link: int
) -> TrackedLink | None:
    async with sessions() as session:
        return await session.get(TrackedLink, (issue, edition, article, link))


async def flush_counts(sessions: Sessions, counts: Mapping[CounterKey, int]) -> None:
    """Add ``counts`` to their rows in one transaction (insert, or add on conflict)."""
    if not counts:
        return
    async with sessions() as session:
        statement = _insert(session, LINK_CLICK)
        statement = statement.on_conflict_do_update(
            index_elements=["issue_number", "edition", "article", "link", "day", "verdict"],
            set_={"count": LINK_CLICK.c.count + statement.excluded["count"]},
        )
        rows = [
            {
                "issue_number": issue,
                "edition": edition,
                "article": article,
                "link": link,
                "day": day,
                "verdict": verdict,
                "count": n,
            }
            for (issue, edition, article, link, day, verdict), n in sorted(counts.items())
        ]
        await session.execute(statement, rows)
        await session.commit()


async def links_of_issue(sessions: Sessions, *, issue: int) -> list[TrackedLink]:
    async with sessions() as session:
        rows = await session.exec(select(TrackedLink).where(TrackedLink.issue_number == issue))
        return list(rows.all())


async def clicks_of_issue(sessions: Sessions, *, issue: int) -> list[LinkClick]:
    async with sessions() as session:
        rows = await session.exec(select(LinkClick).where(LinkClick.issue_number == issue))
        return list(rows.all())


async def flush_open_counts(sessions: Sessions, counts: Mapping[OpenKey, int]) -> None:
    """Add the open pixel's ``counts`` to their rows in one transaction."""
    if not counts:
        return
    async with sessions() as session:
        statement = _insert(session, MAIL_OPEN)
        statement = statement.on_conflict_do_update(
            index_elements=["issue_number", "edition", "day", "verdict"],
            set_={"count": MAIL_OPEN.c.count + statement.excluded["count"]},
        )
        rows = [
            {"issue_number": issue, "edition": edition, "day": day, "verdict": verdict, "count": n}
            for (issue, edition, day, verdict), n in sorted(counts.items())
        ]
        await session.execute(statement, rows)
        await session.commit()


async def opens_of_issue(sessions: Sessions, *, issue: int) -> list[MailOpen]:
    async with sessions() as session:
        rows = await session.exec(select(MailOpen).where(MailOpen.issue_number == issue))
        return list(rows.all())
