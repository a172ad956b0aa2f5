"""What the public archive reads: the published (non-test) issues of each language.

An issue is its number (with its week, from ``issue_send``); however often it was sent, the
archive shows it once per language, with the text of its latest edition (a resend after a
correction shows the corrected text) and the date of its first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlmodel import col, select

from services.renderer.store import Sessions
from shared.db.tables import Edition, IssueSend, SendIntent


@dataclass(frozen=True)
class PublishedIssue:
    number: int
    date_from: date
    date_to: date
    latest: Edition
    first_rendered_at: datetime

    @property
    def language(self) -> str:
        return self.latest.language


async def published_issues(
    sessions: Sessions, *, language: str | None = None, number: int | None = None
) -> list[PublishedIssue]:
    """Published issues (of one language, or of one number), newest issue first."""
    query = (
        select(Edition, IssueSend)
        .join(IssueSend, col(IssueSend.send_id) == col(Edition.send_id))
        .where(col(Edition.is_test).is_(False), col(IssueSend.intent) != SendIntent.TEST)
        .order_by(col(Edition.id))
    )
    if language is not None:
        query = query.where(Edition.language == language)
    if number is not None:
        query = query.where(IssueSend.issue_number == number)
    async with sessions() as session:
        rows = list((await session.exec(query)).all())
    found: dict[tuple[str, int], PublishedIssue] = {}
    for row, request in rows:
        key = (row.language, request.issue_number)
        earlier = found.get(key)
        first = earlier.first_rendered_at if earlier is not None else row.rendered_at
        found[key] = PublishedIssue(
            number=request.issue_number,
            date_from=request.date_from,
            date_to=request.date_to,
            latest=row,
            first_rendered_at=min(first, row.rendered_at),
        )
    return sorted(found.values(), key=lambda i: (i.number, i.date_to, i.language), reverse=True)


async def issue_of_send(sessions: Sessions, *, send_id: str) -> IssueSend | None:
    async with sessions() as session:
        return await session.get(IssueSend, send_id)
