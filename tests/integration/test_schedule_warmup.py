"""Warm-up with two dispatcher processes on one database (issue 17): a new sending domain with
caps 50, 100, 200 sends exactly that many per receiving domain on each day, carries the rest to
the next day in the ledger, and is warm after the last cap.

Two sends (the en and the ru edition of two issues) reach the same receiving domains at once:
each dispatcher plans one of them and relays it in batches of 10 while the other does the same,
and both outbox sweepers relay the carried rows of both every 0.2 s, so a day's cap holds only if
the reservations are atomic across processes. The dispatchers run as OS processes on the real
broker, database and SMTP server; the days pass on their shared clock file.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Date, bindparam, text

from services.dispatcher import warmup
from services.dispatcher.metrics import DispatcherMetrics
from services.dispatcher.planner import Planner
from shared.clock import FakeClock
from shared.db.engine import create_engine, session_factory
from shared.db.tables.deliveries import Send
from shared.db.tables.timestamps import UTCDateTime
from shared.messaging.publisher import Publisher
from shared.messaging.schemas import PlanSend
from shared.messaging.topology import PLAN_SEND, connect, declare_topology
from shared.settings import load_settings
from tests.support import dispatch_seed, schedule_seed
from tests.support.own_database import OwnDatabase
from tests.support.schedule_clock import wait_until
from tests.support.schedule_processes import Suite
from tests.support.test_mta import ScriptedMta

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
pytest_plugins = ("tests.support.dispatch_fixtures",)  # own_database

FIRST_DAY = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
_DAILY = text(
    "SELECT email_domain, CAST(queued_at AS DATE), COUNT(*) FROM delivery "
    "WHERE status = 'sent' AND kind = 'issue' GROUP BY email_domain, CAST(queued_at AS DATE)"
)
EDITIONS = ("en", "ru")
# Each crosses its cap once a day: a crossing is where two relays at once could overshoot.
BIG = ("big-1.test", "big-2.test", "big-3.test")


async def test_caps_50_100_200_hold_exactly_with_two_dispatcher_processes(
    vhost_url: str, own_database: OwnDatabase, tmp_path: Path
) -> None:
    sessions = own_database.sessions
    await schedule_seed.add_readers(
        sessions, 400 * len(BIG), prefix="big", languages=EDITIONS, domains=BIG
    )
    await schedule_seed.add_readers(
        sessions, 20, prefix="small", languages=EDITIONS, domains=("small.test",)
    )
    await warmup.mark_new(
        sessions, domain="example.org", started_on=FIRST_DAY.date(), caps="50,100,200"
    )
    sends = {language: str(uuid.uuid4()) for language in EDITIONS}
    for language, send_id in sends.items():
        await dispatch_seed.add_editions(sessions, send_id, (language,), paragraphs=1)
    status_lines: list[str] = []
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=own_database.url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            dispatch_outbox_sweep_s=0.2,
            dispatch_planner_batch=10,  # many relay batches a day, from both processes at once
        )
        suite = Suite(settings, log_dir=tmp_path, dispatchers=2)
        suite.set_clock(FIRST_DAY)
        try:
            await suite.start()
            # One planner consumer per process takes one message at a time: one send each.
            await asyncio.gather(
                *(
                    dispatch_seed.publish(
                        vhost_url,
                        PlanSend(send_id=send_id, issue_key=f"2027-w09-{lang}", segments=[lang]),
                        routing_key=PLAN_SEND,
                    )
                    for lang, send_id in sends.items()
                )
            )

            async def planned() -> bool:
                states = [await schedule_seed.send_status(sessions, s) for s in sends.values()]
                return states == [("running", (400 * len(BIG) + 20) // 2)] * len(sends)

            await wait_until(planned, "both sends planned", timeout=120)
            for day in range(4):
                if day:
                    midnight = datetime.combine(
                        FIRST_DAY.date() + timedelta(days=day), datetime.min.time(), tzinfo=UTC
                    )
                    suite.set_clock(midnight + timedelta(minutes=1))

                async def settled() -> bool:
                    now = suite.clock.now()
                    for send_id in sends.values():
                        if await schedule_seed.unsettled(sessions, send_id, now=now):
                            return False
                    return True

                await wait_until(settled, f"day {day + 1} sent", timeout=120)
                status_lines += await warmup.describe(
                    sessions,
                    settings=load_settings(mode="test", secret_key="k" * 40),
                    now=suite.clock.now(),
                )
            for send_id in sends.values():
                await dispatch_seed.wait_for_send(sessions, send_id, timeout=120)
        finally:
            codes = suite.stop()
        copies = mta.handler.copies()
    assert codes == [0, 0], f"a dispatcher did not stop cleanly: {codes}\n{suite.logs_tail()}"
    async with sessions() as session:
        daily = {
            (str(d), day): int(n) for d, day, n in await session.execute(_DAILY, {"s": send_id})
        }
    days = [FIRST_DAY.date() + timedelta(days=n) for n in range(4)]
    for domain in BIG:
        assert {day: n for (d, day), n in daily.items() if d == domain} == {
            days[0]: 50,
            days[1]: 100,
            days[2]: 200,
            days[3]: 50,  # warm: the rest at once
        }, f"{domain} per day: {daily}"
    assert daily[("small.test", days[0])] == 20, "a domain under the cap gets all on day 1"
    assert sum(copies.values()) == 400 * len(BIG) + 20
    assert set(copies.values()) == {1}
    planners = [dispatch_seed.log_events(p.log_path, "send_planned") for p in suite.dispatchers]
    assert planners == [1, 1], f"each dispatcher planned one send: {planners}"
    assert status_lines[0].startswith("warm-up: example.org day 1 of 3 (caps 50,100,200)")
    assert "big-1.test 50" in status_lines[1]
    assert "warm-up: example.org day 4 of 3 (caps 50,100,200): warm, no cap" in status_lines


_BURST_DELIVERIES = text(
    "INSERT INTO delivery (dedupe_key, kind, send_id, subscriber_id, email, email_domain, "
    "language, status, attempts, smtp_reply, message_id, created_at, updated_at, retries, "
    "redriven) SELECT 'send:' || :s || ':' || id || ':' || 'en', 'issue', :s, id, email, "
    "email_domain, 'en', 'pending', 0, '', '', now(), now(), 0, 0 FROM subscriber"
)
_QUEUED = text(
    "SELECT COUNT(*) FROM delivery WHERE status = 'queued' AND CAST(queued_at AS DATE) = :day"
).bindparams(bindparam("day", type_=Date()))
_CARRIED = text(
    "SELECT COUNT(*) FROM delivery WHERE status = 'pending' AND queued_at IS NULL "
    "AND due_at = :next_day"
).bindparams(bindparam("next_day", type_=UTCDateTime()))


async def test_eight_relays_at_once_reserve_a_days_cap_exactly(
    vhost_url: str, own_database: OwnDatabase, tmp_path: Path
) -> None:
    """Eight relays (as eight dispatcher processes would run) publish eight sends to one
    receiving domain at the same moment, each on a connection of its own: every one reads its
    first page while the others read theirs, and only the database can keep the day to 25."""
    sessions = own_database.sessions
    await schedule_seed.add_readers(sessions, 40, prefix="burst", domains=("burst.test",))
    await warmup.mark_new(sessions, domain="example.org", started_on=FIRST_DAY.date(), caps="25")
    sends = [str(uuid.uuid4()) for _ in range(8)]
    async with sessions() as session:
        for send_id in sends:
            session.add(Send(id=send_id, issue_key=f"burst-{send_id[:8]}", languages="en"))
            await session.flush()
            await session.execute(
                text("UPDATE send SET status = 'running' WHERE id = :s"), {"s": send_id}
            )
            await session.execute(_BURST_DELIVERIES, {"s": send_id})
        await session.commit()
    settings = dispatch_seed.make_settings(
        amqp_url=vhost_url,
        database_url=own_database.url,
        smtp_url="smtp://127.0.0.1:9",  # nothing is sent: the jobs stay in the queue
        tmp_path=tmp_path,
        dispatch_planner_batch=10,
    )
    connection = await connect(vhost_url)
    engines = [create_engine(own_database.url) for _ in sends]
    try:
        channel = await connection.channel()
        await declare_topology(channel)
        publisher = await Publisher.open(connection)
        clock = FakeClock(FIRST_DAY)
        planners = [
            Planner(
                settings=settings,  # type: ignore[arg-type]
                engine=engine,
                sessions=session_factory(engine),
                publisher=publisher,
                raw_channel=channel,
                metrics=DispatcherMetrics.create(CollectorRegistry()),
                clock=clock,
            )
            for engine in engines
        ]
        published = await asyncio.gather(
            *(planner.relay(send_id) for planner, send_id in zip(planners, sends, strict=True))
        )
    finally:
        for engine in engines:
            await engine.dispose()
        await connection.close()
    async with sessions() as session:
        queued = int((await session.execute(_QUEUED, {"day": FIRST_DAY.date()})).scalar_one())
        next_day = datetime.combine(
            FIRST_DAY.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC
        )
        carried = int((await session.execute(_CARRIED, {"next_day": next_day})).scalar_one())
    assert sum(published) == 25, f"published {published}: the day's cap is 25"
    assert queued == 25, f"{queued} deliveries queued on a day capped at 25"
    assert carried == 8 * 40 - 25, "what is over the cap waits for the next day"
