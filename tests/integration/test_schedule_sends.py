"""Scheduled sends on the real broker and database, with a fake clock: stored ``scheduled`` at
render time, started when due by one of two dispatchers, after every process restarted."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from structlog.testing import capture_logs

from services.dispatcher import scheduler, sends
from shared.clock import FakeClock
from shared.db.tables.deliveries import Send
from shared.messaging.schemas import RenderIssue, SendSchedule
from shared.messaging.topology import RENDER_ISSUE
from shared.settings import load_settings
from tests.integration.renderer_harness import running_renderer, sample_sources
from tests.support import dispatch_seed, schedule_seed
from tests.support.own_database import OwnDatabase
from tests.support.schedule_clock import ClockedDispatcher, wait_until
from tests.support.test_mta import ScriptedMta

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
pytest_plugins = ("tests.support.dispatch_fixtures",)  # own_database

# In the future of the real clock, so deadlines the workers write in real time never look past.
START = datetime(2027, 3, 1, 6, 58, tzinfo=UTC)


async def test_a_send_scheduled_two_minutes_ahead_starts_on_time_once_after_a_restart(
    vhost_url: str, own_database: OwnDatabase, tmp_path: Path
) -> None:
    sessions, postgres_url = own_database.sessions, own_database.url
    await schedule_seed.add_readers(sessions, 15, prefix="sched", languages=("en", "be", "ru"))
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
                await dispatch_seed.publish(vhost_url, command, routing_key=RENDER_ISSUE)

                async def scheduled() -> bool:
                    row = await schedule_seed.send_row(sessions, send_id)
                    return row is not None and row.status == "scheduled"

                await wait_until(scheduled, "the send recorded as scheduled")
                assert await schedule_seed.edition_count(sessions, send_id) == 3, (
                    "rendered at schedule time"
                )
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
                    row = await schedule_seed.send_row(sessions, send_id)
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


async def add_scheduled(
    sessions: async_sessionmaker[AsyncSession], *, at: datetime, taken_at: datetime | None = None
) -> str:
    """A send stored ``scheduled`` for ``at`` (taken by a scheduler at ``taken_at``)."""
    send_id = str(uuid.uuid4())
    async with sessions() as session:
        session.add(
            Send(
                id=send_id,
                issue_key=f"sched-{send_id[:8]}",
                languages="en",
                status="scheduled",
                scheduled_at=at,
                start_requested_at=taken_at,
            )
        )
        await session.commit()
    return send_id


async def test_a_scheduled_send_moves_or_is_cancelled_until_it_starts(
    own_database: OwnDatabase,
) -> None:
    sessions = own_database.sessions
    at = START + timedelta(days=1)
    send_id = await add_scheduled(sessions, at=at)
    later = at + timedelta(hours=3)
    moved = await scheduler.reschedule(sessions, send_id=send_id, at=later, tz="Europe/Minsk")
    assert moved.scheduled_at == later
    assert moved.schedule_tz == "Europe/Minsk"
    # Not due at the old time any more; a start at the new time takes it, once.
    assert await scheduler.start_if_due(sessions, send_id=send_id, now=at) == "scheduled"
    assert await scheduler.start_if_due(sessions, send_id=send_id, now=later) == "planning"
    assert await scheduler.start_if_due(sessions, send_id=send_id, now=later) == "planning"
    started = await schedule_seed.send_row(sessions, send_id)
    assert started is not None
    assert started.started_at == later, "a second start changed nothing"
    with pytest.raises(scheduler.NotScheduled):
        await scheduler.reschedule(sessions, send_id=send_id, at=later, tz=None)

    # Taken by a scheduler whose clock runs ahead of the planner's: it starts all the same.
    skewed = await add_scheduled(sessions, at=at, taken_at=at)
    behind = at - timedelta(milliseconds=300)
    assert await scheduler.start_if_due(sessions, send_id=skewed, now=behind) == "planning"

    other = await add_scheduled(sessions, at=at)
    assert await sends.set_status(sessions, send_id=other, action="pause") == "scheduled"
    assert await sends.set_status(sessions, send_id=other, action="cancel") == "cancelled"
    assert await scheduler.start_if_due(sessions, send_id=other, now=at) == "cancelled"
