"""The database side of tracked links: targets written at render time, counts upserted in
batches by the flusher (``tracked_link``, ``link_click`` and ``mail_open``, all written by the
renderer); in per-reader mode the clicks of consenting readers (``reader_click``), written by
the same flusher and deleted on erasure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table, bindparam, delete, text
from sqlalchemy import insert as sa_insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.renderer.click_counter import CounterKey, ReaderEntry
from services.renderer.opens import OpenKey
from services.renderer.store import Sessions
from shared.db.tables import LinkClick, MailOpen, ReaderClick, TrackedLink
from shared.db.tables.timestamps import utcnow

TRACKED_LINK: Table = TrackedLink.__table__  # type: ignore[attr-defined]
LINK_CLICK: Table = LinkClick.__table__  # type: ignore[attr-defined]
MAIL_OPEN: Table = MailOpen.__table__  # type: ignore[attr-defined]
READER_CLICK: Table = ReaderClick.__table__  # type: ignore[attr-defined]
READER_ANALYTICS_FORM = "reader_analytics"  # the consent ledger's form of this consent

# The deliveries among a flush's per-reader clicks whose reader consents *now* (a confirmed
# ``reader_analytics`` consent not withdrawn), with their subscriber and issue. Read in the
# flush's own transaction: a click flushed after a withdrawal was committed is never written.
_CONSENTING = text(
    "SELECT d.id, d.subscriber_id, s.issue_number FROM delivery d "
    "JOIN issue_send s ON s.send_id = d.send_id "
    "WHERE d.id IN :ids AND d.subscriber_id IS NOT NULL "
    "AND EXISTS (SELECT 1 FROM consent_record c WHERE c.subscriber_id = d.subscriber_id "
    "AND c.form = :form AND c.confirmed_at IS NOT NULL AND c.withdrawn_at IS NULL)"
).bindparams(bindparam("ids", expanding=True))


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


_ID_CHUNK = 500  # deliveries per consent query (SQLite's and the planner's comfort)


async def flush_reader_clicks(sessions: Sessions, entries: Sequence[ReaderEntry]) -> int:
    """Write the per-reader clicks of readers who consent at this moment; drop the others.

    A reference is only good for links of the issue its delivery carried (a ref copied onto
    another issue's link is not that reader's click). Returns the rows written.
    """
    if not entries:
        return 0
    async with sessions() as session:
        ids = sorted({e.delivery_id for e in entries})
        readers: dict[int, tuple[int, int]] = {}
        for start in range(0, len(ids), _ID_CHUNK):
            found = await session.execute(
                _CONSENTING, {"ids": ids[start : start + _ID_CHUNK], "form": READER_ANALYTICS_FORM}
            )
            readers.update({int(row[0]): (int(row[1]), int(row[2])) for row in found})
        rows = [
            {
                "subscriber_id": readers[e.delivery_id][0],
                "delivery_id": e.delivery_id,
                "issue_number": e.ref.issue,
                "edition": e.ref.edition,
                "article": e.ref.article,
                "link": e.ref.link,
                "clicked_at": e.at,
            }
            for e in entries
            if e.delivery_id in readers and readers[e.delivery_id][1] == e.ref.issue
        ]
        if rows:
            await session.execute(sa_insert(READER_CLICK), rows)
        await session.commit()
        return len(rows)


# A per-reader click is kept only while a grant made before it still stands: a withdrawal
# (preference page, unsubscribe, complaint, erasure) deletes what was recorded under it, and a
# later grant does not bring it back.
_SWEEP = text(
    "DELETE FROM reader_click WHERE NOT EXISTS (SELECT 1 FROM consent_record c "
    "WHERE c.subscriber_id = reader_click.subscriber_id AND c.form = :form "
    "AND c.withdrawn_at IS NULL AND c.given_at <= reader_click.clicked_at)"
)


async def sweep_withdrawn(sessions: Sessions) -> int:
    """Delete the per-reader clicks no standing consent covers; returns how many."""
    async with sessions() as session:
        result = await session.execute(_SWEEP, {"form": READER_ANALYTICS_FORM})
        await session.commit()
        return int(getattr(result, "rowcount", 0) or 0)


async def forget_reader(sessions: Sessions, *, subscriber_id: int) -> int:
    """Delete every per-reader click of the subscriber (GDPR erasure); returns the count."""
    async with sessions() as session:
        result = await session.execute(
            delete(READER_CLICK).where(READER_CLICK.c.subscriber_id == subscriber_id)
        )
        await session.commit()
        return int(getattr(result, "rowcount", 0) or 0)
