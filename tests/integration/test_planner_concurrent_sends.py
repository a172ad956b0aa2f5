"""Planner races: two sends of one issue planned at once; a cancel while planning ends.

The planner's ``NOT EXISTS`` (``--only-new``) only sees committed rows: without the issue lock,
a page written while another send's page of the same issue is still uncommitted would take the
same readers again. The test holds one send's page open in its own transaction and checks that
the other send's page waits for it (an advisory lock wait in ``pg_locks``), then that no reader
has two deliveries of the issue.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, cast

from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dispatcher.planner import Planner, audience_insert, write_audience_page
from shared.clock import SYSTEM_CLOCK
from shared.db.engine import async_url
from shared.db.tables.deliveries import (
    RECEIVED_STATUSES,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Send,
)
from shared.db.tables.timestamps import utcnow
from tests.support import infra
from tests.support.dispatch_seed import add_subscribers, fresh_postgres

ISSUE = "2026-w49"

_WAITING_FOR_ISSUE_LOCK = text(
    "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
)


def _page(send_id: str) -> dict[str, object]:
    return {
        "send_id": send_id,
        "kind": str(DeliveryKind.ISSUE),
        "language": "en",
        "pending": str(DeliveryStatus.PENDING),
        "now": utcnow(),
        "after": 0,
        "last": 10**9,
        "issue_key": ISSUE,
        "received": sorted(str(s) for s in RECEIVED_STATUSES),
    }


async def test_two_only_new_sends_planned_at_once_mail_each_reader_once() -> None:
    name, url = await fresh_postgres()
    engine = create_async_engine(async_url(url))
    sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
    try:
        await add_subscribers(sessions, 30, languages=("en",))
        async with sessions() as session:
            for send_id in ("send-a", "send-b"):
                session.add(Send(id=send_id, issue_key=ISSUE, languages="en", intent="only_new"))
            await session.commit()
        insert = audience_insert(skip_edition_segment=False, only_new=True)

        async with sessions() as first:
            await write_audience_page(first, insert, _page("send-a"), issue_key=ISSUE)

            async def second_send() -> None:
                async with sessions() as second:
                    await write_audience_page(second, insert, _page("send-b"), issue_key=ISSUE)
                    await second.commit()

            racing = asyncio.create_task(second_send())

            async def second_is_waiting() -> bool:
                async with engine.connect() as probe:
                    return int((await probe.execute(_WAITING_FOR_ISSUE_LOCK)).scalar_one()) == 1

            waiting = False
            for _ in range(200):
                if racing.done() or await second_is_waiting():
                    waiting = not racing.done()
                    break
                await asyncio.sleep(0.05)
            assert waiting, "the second send's page did not wait for the first one's commit"
            await first.commit()
        await asyncio.wait_for(racing, timeout=30)

        async with sessions() as session:
            rows = (await session.exec(select(Delivery))).all()
        per_reader = Counter(row.subscriber_id for row in rows)
        assert len(per_reader) == 30
        assert set(per_reader.values()) == {1}, "a reader got the issue from both sends"
        assert {row.send_id for row in rows} == {"send-a"}
    finally:
        await engine.dispose()
        await infra.drop_database(name)


_WAITING_FOR_A_ROW = text(
    "SELECT COUNT(*) FROM pg_locks WHERE locktype IN ('transactionid', 'tuple') AND NOT granted"
)


async def test_a_cancel_that_lands_while_planning_ends_is_not_overwritten() -> None:
    """The cancel is written (not yet committed) while the planner finishes: the planner's
    write waits for it and must keep ``cancelled``, not set ``running`` from what it read."""
    name, url = await fresh_postgres()
    engine = create_async_engine(async_url(url))
    sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
    nothing = cast(Any, None)
    planner = Planner(
        settings=nothing,
        engine=engine,
        sessions=sessions,
        publisher=nothing,
        raw_channel=None,
        metrics=nothing,
        clock=SYSTEM_CLOCK,
    )
    try:
        async with sessions() as session:
            session.add(Send(id="send-c", issue_key=ISSUE, languages="en", status="planning"))
            await session.commit()
        async with engine.connect() as cancel:
            await cancel.execute(text("UPDATE send SET status = 'cancelled' WHERE id = 'send-c'"))
            finishing = asyncio.create_task(planner._finish_planning("send-c"))

            async def planner_waits() -> bool:
                async with engine.connect() as probe:
                    return int((await probe.execute(_WAITING_FOR_A_ROW)).scalar_one()) >= 1

            for _ in range(200):
                if finishing.done() or await planner_waits():
                    break
                await asyncio.sleep(0.05)
            assert not finishing.done(), "the planner did not wait for the cancel's row lock"
            await cancel.commit()
        await asyncio.wait_for(finishing, timeout=30)
        async with sessions() as session:
            send = await session.get(Send, "send-c")
        assert send is not None
        assert send.status == "cancelled"
    finally:
        await engine.dispose()
        await infra.drop_database(name)
