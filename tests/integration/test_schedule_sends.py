"""Scheduled sends on the real broker and database, with a fake clock: stored ``scheduled`` at
render time, started when due by one of two dispatchers, after every process restarted."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from structlog.testing import capture_logs

from services.dispatcher import scheduler, sends
from shared.clock import FakeClock
from shared.db.engine import create_engine, session_factory
from shared.db.tables.deliveries import Send
from shared.messaging.publisher import Publisher
from shared.messaging.schemas import RenderIssue, SendSchedule
from shared.messaging.topology import RENDER_ISSUE, connect
from shared.settings import load_settings
from tests.integration.renderer_harness import running_renderer, sample_sources
from tests.support import dispatch_seed, infra
from tests.support.schedule_clock import ClockedDispatcher, wait_until
from tests.support.test_mta import ScriptedMta

pytestmark = pytest.mark.integration

# In the future of the real clock, so deadlines the workers write in real time never look past.
START = datetime(2027, 3, 1, 6, 58, tzinfo=UTC)


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A database of this test's own: the audience is every active reader in it."""
    name, url = await dispatch_seed.fresh_postgres()
    try:
        yield url
    finally:
        await infra.drop_database(name)


@pytest.fixture
async def sessions(postgres_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(postgres_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def publish(amqp_url: str, command: RenderIssue) -> None:
    connection = await connect(amqp_url)
    try:
        await (await Publisher.open(connection)).publish(command, routing_key=RENDER_ISSUE)
    finally:
        await connection.close()


async def send_row(sessions: async_sessionmaker[AsyncSession], send_id: str) -> Send | None:
    async with sessions() as session:
        return await session.get(Send, send_id)


async def edition_count(sessions: async_sessionmaker[AsyncSession], send_id: str) -> int:
    async with sessions() as session:
        found = await session.execute(
            text("SELECT COUNT(*) FROM edition WHERE send_id = :s"), {"s": send_id}
        )
        return int(found.scalar_one())


async def test_a_send_scheduled_two_minutes_ahead_starts_on_time_once_after_a_restart(
    vhost_url: str,
    postgres_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    await dispatch_seed.add_subscribers(sessions, 5)
    clock = FakeClock(START)
    due = START + timedelta(minutes=2)
    send_id = str(uuid.uuid4())
    command = RenderIssue(
        send_id=send_id,
        issue_key=f"sched-{send_id[:8]}",
        sources=sample_sources("en", "be", "ru"),
        segments=["en", "be", "ru"],
        schedule=SendSchedule(start_at=due, time_zone="Europe/Minsk"),
    )
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=postgres_url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            schedule_poll_s=0.1,
        )
        renderer_settings = load_settings(
            mode="test",
            amqp_url=vhost_url,
            database_url=postgres_url,
            var_dir=tmp_path,
            secret_key="test-secret-key-" + "x" * 32,
        )
        with capture_logs() as logs:
            # Scheduling: the renderer renders and stores the editions now, the planner
            # records the send as scheduled and plans nothing.
            async with (
                running_renderer(renderer_settings, tmp_path),
                ClockedDispatcher(settings, clock=clock),
                ClockedDispatcher(settings, clock=clock),
            ):
                await publish(vhost_url, command)

                async def scheduled() -> bool:
                    row = await send_row(sessions, send_id)
                    return row is not None and row.status == "scheduled"

                await wait_until(scheduled, "the send recorded as scheduled")
                assert await edition_count(sessions, send_id) == 3, "rendered at schedule time"
            # Every process stopped; they start again (new connections, new state) and only
            # the database knows the send.
            async with (
                running_renderer(renderer_settings, tmp_path),
                ClockedDispatcher(settings, clock=clock) as first,
                ClockedDispatcher(settings, clock=clock) as second,
            ):
                for moment in (START + timedelta(minutes=1), due - timedelta(seconds=1)):
                    clock.set(moment)
                    await first.passes_after(2)
                    await second.passes_after(2)
                    row = await send_row(sessions, send_id)
                    assert row is not None
                    assert row.status == "scheduled", f"started early, at {moment} for {due}"
                    assert await dispatch_seed.status_counts(sessions, send_id) == {}
                listed = await sends.listing(sessions, statuses=["scheduled"])
                assert [s.send_id for s in listed] == [send_id]
                assert listed[0].scheduled_at == due
                clock.set(due)
                done = await dispatch_seed.wait_for_send(sessions, send_id)
        copies = mta.handler.copies()
    assert done.started_at == due, f"started at {done.started_at}, scheduled for {due}"
    assert done.total == 15
    assert await dispatch_seed.status_counts(sessions, send_id) == {"sent": 15}
    assert set(copies.values()) == {1}, f"a reader got the issue more than once: {copies}"
    starts = [e for e in logs if e["event"] == "scheduled_send_started"]
    published = [e for e in logs if e["event"] == "scheduled_send_due"]
    assert len(starts) == 1, f"the send started {len(starts)} times"
    assert len(published) == 1, f"{len(published)} dispatchers published its start"


async def test_a_scheduled_send_moves_or_is_cancelled_until_it_starts(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    send_id = str(uuid.uuid4())
    at = START + timedelta(days=1)
    async with sessions() as session:
        session.add(
            Send(
                id=send_id,
                issue_key="sched-move",
                languages="en",
                status="scheduled",
                scheduled_at=at,
            )
        )
        await session.commit()
    later = at + timedelta(hours=3)
    moved = await scheduler.reschedule(sessions, send_id=send_id, at=later, tz="Europe/Minsk")
    assert moved.scheduled_at == later
    assert moved.schedule_tz == "Europe/Minsk"
    # Not due at the old time any more; a start at the new time takes it, once.
    assert await scheduler.start_if_due(sessions, send_id=send_id, now=at) == "scheduled"
    assert await scheduler.start_if_due(sessions, send_id=send_id, now=later) == "planning"
    assert await scheduler.start_if_due(sessions, send_id=send_id, now=later) == "planning"
    async with sessions() as session:
        started = await session.get(Send, send_id)
    assert started is not None
    assert started.started_at == later, "a second start changed nothing"
    with pytest.raises(scheduler.NotScheduled):
        await scheduler.reschedule(sessions, send_id=send_id, at=later, tz=None)

    other = str(uuid.uuid4())
    async with sessions() as session:
        session.add(
            Send(
                id=other,
                issue_key="sched-cancel",
                languages="en",
                status="scheduled",
                scheduled_at=at,
            )
        )
        await session.commit()
    # Taken by a scheduler whose clock runs ahead of the planner's: it starts all the same.
    skewed = str(uuid.uuid4())
    async with sessions() as session:
        session.add(
            Send(
                id=skewed,
                issue_key="sched-skew",
                languages="en",
                status="scheduled",
                scheduled_at=at,
                start_requested_at=at,
            )
        )
        await session.commit()
    behind = at - timedelta(milliseconds=300)
    assert await scheduler.start_if_due(sessions, send_id=skewed, now=behind) == "planning"
    assert await sends.set_status(sessions, send_id=other, action="pause") == "scheduled"
    assert await sends.set_status(sessions, send_id=other, action="cancel") == "cancelled"
    assert await scheduler.start_if_due(sessions, send_id=other, now=at) == "cancelled"
