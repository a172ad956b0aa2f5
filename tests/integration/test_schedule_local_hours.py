"""``--local-time 09:00`` for 10,000 readers in 24 time zones, on the real broker and database,
with a fake clock moved minute by minute through a day: each reader's delivery becomes due from
the ledger at 09:00 their time (nothing waits in a queue), none goes out early, none in the
quiet hours."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from services.dispatcher.local_hours import in_quiet_hours
from shared.clock import FakeClock
from shared.messaging.schemas import PlanSend, SendSchedule
from shared.messaging.topology import PLAN_SEND
from tests.support import dispatch_seed, schedule_seed
from tests.support.own_database import OwnDatabase
from tests.support.schedule_clock import ClockedDispatcher, wait_until
from tests.support.test_mta import ScriptedMta

# 10,000 mails through one dispatcher and a real SMTP server: minutes on a loaded machine.
pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.timeout(1800)]
pytest_plugins = ("tests.support.dispatch_fixtures",)  # own_database

READERS = 10_000
# 24 zones, whole, half and three-quarter hours, both sides of the date line, with and without
# daylight saving time.
ZONES = (
    "Europe/Minsk",
    "Europe/London",
    "Europe/Warsaw",
    "Europe/Vilnius",
    "Europe/Berlin",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
    "America/St_Johns",
    "America/Sao_Paulo",
    "Atlantic/Azores",
    "Asia/Tbilisi",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Almaty",
    "Asia/Bangkok",
    "Asia/Tokyo",
    "Australia/Adelaide",
    "Pacific/Auckland",
    "Pacific/Chatham",
    "Pacific/Kiritimati",
)
START = datetime(2027, 3, 1, 0, 0, tzinfo=UTC)  # ahead of the real clock (real deadlines)
STEP = timedelta(minutes=1)
QUIET = (time(22, 0), time(7, 0))

_SENT = text(
    "SELECT d.id, s.time_zone FROM delivery d JOIN subscriber s ON s.id = d.subscriber_id "
    "WHERE d.send_id = :s AND d.status = 'sent'"
)


async def test_ten_thousand_readers_get_the_issue_at_nine_in_their_own_time_zone(
    vhost_url: str, own_database: OwnDatabase, tmp_path: Path
) -> None:
    sessions = own_database.sessions
    await schedule_seed.add_readers(
        sessions,
        READERS,
        prefix="tz",
        languages=("en", "be", "ru"),
        domains=[f"d{n}.example.org" for n in range(40)],
        zones=ZONES,
    )
    send_id = str(uuid.uuid4())
    # Short editions: the test is about hours, not bytes.
    await dispatch_seed.add_editions(sessions, send_id, ("en", "be", "ru"), paragraphs=1)
    clock = FakeClock(START)
    sent_at: dict[int, tuple[datetime, str]] = {}
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=own_database.url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            quiet_hours="22:00-07:00",
            dispatch_outbox_sweep_s=0.1,
            dispatch_smtp_connections=8,
        )
        async with ClockedDispatcher(settings, clock=clock):
            await dispatch_seed.publish(
                vhost_url,
                PlanSend(
                    send_id=send_id,
                    issue_key="2027-w09",
                    segments=["en", "be", "ru"],
                    schedule=SendSchedule(local_time="09:00"),
                ),
                routing_key=PLAN_SEND,
            )

            async def planned() -> bool:
                return (await schedule_seed.send_status(sessions, send_id))[0] == "running"

            await wait_until(planned, "the send planned", timeout=600)
            now = START
            while now <= START + timedelta(hours=26):
                # Readers whose 09:00 is the start itself went out with the planning.
                if now == START or await schedule_seed.unsettled(sessions, send_id, now=now):

                    async def settled(at: datetime = now) -> bool:
                        return not await schedule_seed.unsettled(sessions, send_id, now=at)

                    await wait_until(settled, f"the deliveries due by {now} sent", timeout=600)
                    # Whatever went out since the last step went out at this fake minute.
                    async with sessions() as session:
                        for delivery_id, zone in await session.execute(_SENT, {"s": send_id}):
                            sent_at.setdefault(int(delivery_id), (now, str(zone)))
                now = clock.advance(STEP)
            send = await dispatch_seed.wait_for_send(sessions, send_id, timeout=600)
        copies = mta.handler.copies()
    assert send.total == READERS
    assert len(sent_at) == READERS, f"{READERS - len(sent_at)} deliveries never went out"
    assert set(copies.values()) == {1}
    late = []
    for moment, zone in sent_at.values():
        local = moment.astimezone(ZoneInfo(zone))
        nine = local.replace(hour=9, minute=0, second=0, microsecond=0)
        assert not in_quiet_hours(local.time(), QUIET), f"sent at {local} in {zone}: quiet hours"
        if not timedelta(0) <= local - nine < timedelta(minutes=5):
            late.append((zone, local.isoformat()))
    assert not late, f"{len(late)} deliveries not within 5 minutes after 09:00 local: {late[:5]}"
    assert {zone for _, zone in sent_at.values()} == set(ZONES)
