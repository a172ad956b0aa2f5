"""Warm-up on the real broker, database and SMTP with a fake clock: a new sending domain with
caps 50, 100, 200 sends at most that many per receiving domain on each day, carries the rest
to the next day in the ledger, and is warm after the last cap."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dispatcher import warmup
from shared.clock import FakeClock
from shared.db.engine import create_engine, session_factory
from shared.db.tables.timestamps import UTCDateTime
from shared.messaging.publisher import Publisher
from shared.messaging.schemas import PlanSend
from shared.messaging.topology import PLAN_SEND, connect
from shared.settings import load_settings
from tests.support import dispatch_seed, infra
from tests.support.schedule_clock import ClockedDispatcher, wait_until
from tests.support.test_mta import ScriptedMta

pytestmark = pytest.mark.integration

FIRST_DAY = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
_UNSETTLED = text(
    "SELECT COUNT(*) FROM delivery WHERE send_id = :s AND (status IN ('queued', 'sending', "
    "'deferred') OR (status = 'pending' AND (due_at IS NULL OR due_at <= :now)))"
).bindparams(bindparam("now", type_=UTCDateTime()))
_DAILY = text(
    "SELECT email_domain, CAST(queued_at AS DATE), COUNT(*) FROM delivery WHERE send_id = :s "
    "AND status = 'sent' GROUP BY email_domain, CAST(queued_at AS DATE)"
)


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
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


async def test_caps_50_100_200_show_in_the_ledgers_daily_counts(
    vhost_url: str,
    postgres_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    await dispatch_seed.add_subscribers(sessions, 400, languages=("en",), domains=("big.test",))
    await dispatch_seed.add_subscribers(
        sessions, 20, languages=("en",), domains=("small.test",), prefix="small"
    )
    await warmup.mark_new(
        sessions, domain="example.org", started_on=FIRST_DAY.date(), caps="50,100,200"
    )
    clock = FakeClock(FIRST_DAY)
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, ("en",))
    status_lines: list[str] = []
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=postgres_url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            dispatch_outbox_sweep_s=0.2,
            dispatch_planner_batch=30,  # several relay batches per day: the cap holds across them
        )
        async with ClockedDispatcher(settings, clock=clock):
            connection = await connect(vhost_url)
            try:
                await (await Publisher.open(connection)).publish(
                    PlanSend(send_id=send_id, issue_key="2027-w09", segments=["en"]),
                    routing_key=PLAN_SEND,
                )
            finally:
                await connection.close()

            async def planned() -> bool:
                async with sessions() as session:
                    found = await session.execute(
                        text("SELECT total FROM send WHERE id = :s AND status = 'running'"),
                        {"s": send_id},
                    )
                    return found.scalar() == 420

            await wait_until(planned, "the send planned", timeout=300)
            for day in range(4):
                if day:
                    clock.set(
                        datetime.combine(
                            FIRST_DAY.date() + timedelta(days=day), datetime.min.time(), tzinfo=UTC
                        )
                        + timedelta(minutes=1)
                    )

                async def settled() -> bool:
                    async with sessions() as session:
                        found = await session.execute(
                            _UNSETTLED, {"s": send_id, "now": clock.now()}
                        )
                        return not found.scalar_one()

                await wait_until(settled, f"day {day + 1} sent", timeout=300)
                status_lines += await warmup.describe(
                    sessions,
                    settings=load_settings(mode="test", secret_key="k" * 40),
                    now=clock.now(),
                )
            await dispatch_seed.wait_for_send(sessions, send_id, timeout=300)
        copies = mta.handler.copies()
    async with sessions() as session:
        daily = {
            (str(d), day): int(n) for d, day, n in await session.execute(_DAILY, {"s": send_id})
        }
    days = [FIRST_DAY.date() + timedelta(days=n) for n in range(4)]
    assert {k: v for k, v in daily.items() if k[0] == "big.test"} == {
        ("big.test", days[0]): 50,
        ("big.test", days[1]): 100,
        ("big.test", days[2]): 200,
        ("big.test", days[3]): 50,  # warm: the rest at once
    }, daily
    assert daily[("small.test", days[0])] == 20, "a domain under the cap gets all on day 1"
    assert sum(copies.values()) == 420
    assert set(copies.values()) == {1}
    assert status_lines[0].startswith("warm-up: example.org day 1 of 3 (caps 50,100,200)")
    assert "big.test 50" in status_lines[1]
    assert "warm-up: example.org day 4 of 3 (caps 50,100,200): warm, no cap" in status_lines
