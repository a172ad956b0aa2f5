"""A redelivered issue command racing its first delivery records the send once and raises
nothing, on SQLite and PostgreSQL.

The race is made deterministic: the second delivery's sessions are hooked so that the first
delivery runs to its commit at the exact point of the interleaving under test (after the second
has looked the send up and found nothing, or just before the second commits its insert).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.renderer.issue_sends import (
    IssueAlreadySent,
    IssueIdentity,
    SendRefused,
    record_command,
)
from shared.db.engine import create_engine, session_factory
from shared.db.tables import IssueSend, SendIntent

pytestmark = pytest.mark.integration

Hook = Callable[[], Awaitable[None]]


def hooked_sessions(engine: Any, *, at: str, hook: Hook) -> async_sessionmaker[AsyncSession]:
    """Sessions that run ``hook`` once: after the first lookup of an issue send that finds
    nothing (``at="lookup"``), or before the first commit that inserts one (``at="insert"``)."""
    fired = False

    async def fire() -> None:
        nonlocal fired
        if not fired:
            fired = True
            await hook()

    class Hooked(AsyncSession):
        async def get(self, entity: Any, ident: Any, **kwargs: Any) -> Any:
            row = await super().get(entity, ident, **kwargs)
            if at == "lookup" and entity is IssueSend and row is None:
                await fire()
            return row

        async def commit(self) -> None:
            if at == "insert" and any(isinstance(o, IssueSend) for o in self.new):
                await fire()
            await super().commit()

    return async_sessionmaker(engine, class_=Hooked, expire_on_commit=False)


def an_issue() -> IssueIdentity:
    number = random.randint(100_000, 999_999_999)  # the PostgreSQL database is shared
    return IssueIdentity(f"issue-{number}", number, date(2021, 12, 20), date(2021, 12, 26))


@pytest.mark.parametrize("at", ["lookup", "insert"])
async def test_a_redelivered_command_racing_its_first_delivery_is_recorded_once(
    database_url: str, at: str
) -> None:
    issue = an_issue()
    send_id = str(uuid.uuid4())
    engine = create_engine(database_url)
    plain = session_factory(engine)
    first_delivery_done = False

    async def first_delivery() -> None:
        nonlocal first_delivery_done
        await record_command(
            plain, identity=issue, send_id=send_id, intent=SendIntent.FIRST, segments=["en"]
        )
        first_delivery_done = True

    try:
        # The redelivered copy: the first delivery commits in the middle of it.
        await record_command(
            hooked_sessions(engine, at=at, hook=first_delivery),
            identity=issue,
            send_id=send_id,
            intent=SendIntent.FIRST,
            segments=["en"],
        )
        assert first_delivery_done, f"the first delivery never ran at {at!r}: the test is void"
        async with plain() as session:
            rows = (
                await session.exec(select(IssueSend).where(IssueSend.issue_key == issue.issue_key))
            ).all()
        assert [r.send_id for r in rows] == [send_id]
    finally:
        await engine.dispose()


async def test_another_send_of_the_issue_racing_the_first_is_still_refused(
    database_url: str,
) -> None:
    """Idempotence is for the same send id only: a second first send loses, as before."""
    issue = an_issue()
    engine = create_engine(database_url)
    plain = session_factory(engine)

    async def other_send() -> None:
        await record_command(
            plain,
            identity=issue,
            send_id=str(uuid.uuid4()),
            intent=SendIntent.FIRST,
            segments=["en"],
        )

    try:
        with pytest.raises(IssueAlreadySent, match="already has 1 send"):
            await record_command(
                hooked_sessions(engine, at="insert", hook=other_send),
                identity=issue,
                send_id=str(uuid.uuid4()),
                intent=SendIntent.FIRST,
                segments=["en"],
            )
    finally:
        await engine.dispose()


async def test_a_send_id_reused_for_another_issue_is_refused(database_url: str) -> None:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    send_id = str(uuid.uuid4())
    try:
        await record_command(
            sessions, identity=an_issue(), send_id=send_id, intent=SendIntent.FIRST, segments=["en"]
        )
        with pytest.raises(SendRefused, match="is already a send of issue-"):
            await record_command(
                sessions,
                identity=an_issue(),
                send_id=send_id,
                intent=SendIntent.FIRST,
                segments=["en"],
            )
    finally:
        await engine.dispose()
