"""Cadence over a simulated month on the real broker, database and SMTP, with a fake clock:
four weekly issues in March and the first of April. ``every`` readers get all five,
``monthly`` readers the first issue of each month, readers who paused for four weeks on
1 March nothing until the pause ends, then every issue again."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.clock import FakeClock
from shared.db.engine import create_engine, session_factory
from shared.db.tables.timestamps import UTCDateTime
from shared.messaging.publisher import Publisher
from shared.messaging.schemas import PlanSend
from shared.messaging.topology import PLAN_SEND, connect
from tests.support import dispatch_seed, infra
from tests.support.schedule_clock import ClockedDispatcher
from tests.support.test_mta import ScriptedMta

pytestmark = pytest.mark.integration

ISSUES = [
    datetime(2027, 3, 1, 8, 0, tzinfo=UTC),
    datetime(2027, 3, 8, 8, 0, tzinfo=UTC),
    datetime(2027, 3, 15, 8, 0, tzinfo=UTC),
    datetime(2027, 3, 22, 8, 0, tzinfo=UTC),
    datetime(2027, 4, 5, 8, 0, tzinfo=UTC),
]
PAUSED_ON = datetime(2027, 3, 1, 7, 0, tzinfo=UTC)
_CHOOSE = text(
    "UPDATE subscriber SET cadence = :cadence, paused_until = :until WHERE email LIKE :prefix"
).bindparams(bindparam("until", type_=UTCDateTime()))


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


async def test_every_monthly_and_paused_readers_over_a_month_of_four_issues(
    vhost_url: str,
    postgres_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    groups = {
        cadence: await dispatch_seed.add_subscribers(
            sessions, 4, languages=("en", "ru"), prefix=cadence
        )
        for cadence in ("every", "monthly", "paused")
    }
    async with sessions() as session:
        await session.execute(_CHOOSE, {"cadence": "monthly", "until": None, "prefix": "monthly-%"})
        await session.execute(
            _CHOOSE,
            {"cadence": "paused", "until": PAUSED_ON + timedelta(weeks=4), "prefix": "paused-%"},
        )
        await session.commit()
    clock = FakeClock(ISSUES[0] - timedelta(hours=1))
    got: dict[str, list[int]] = {a: [] for addresses in groups.values() for a in addresses}
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url, database_url=postgres_url, smtp_url=mta.url, tmp_path=tmp_path
        )
        async with ClockedDispatcher(settings, clock=clock):
            connection = await connect(vhost_url)
            try:
                publisher = await Publisher.open(connection)
                for number, when in enumerate(ISSUES):
                    clock.set(when)
                    send_id = str(uuid.uuid4())
                    await dispatch_seed.add_editions(sessions, send_id, ("en", "ru"))
                    before = Counter(mta.handler.copies())
                    await publisher.publish(
                        PlanSend(
                            send_id=send_id, issue_key=f"2027-{number}", segments=["en", "ru"]
                        ),
                        routing_key=PLAN_SEND,
                    )
                    await dispatch_seed.wait_for_send(sessions, send_id)
                    after = Counter(mta.handler.copies())
                    for address in after - before:
                        got[address].append(number)
            finally:
                await connection.close()
    every = {a: got[a] for a in groups["every"]}
    monthly = {a: got[a] for a in groups["monthly"]}
    paused = {a: got[a] for a in groups["paused"]}
    assert set(map(tuple, every.values())) == {(0, 1, 2, 3, 4)}, every
    assert set(map(tuple, monthly.values())) == {(0, 4)}, f"first issue of each month: {monthly}"
    # Paused on 1 March for four weeks (until 29 March): back for the April issue only.
    assert set(map(tuple, paused.values())) == {(4,)}, paused
