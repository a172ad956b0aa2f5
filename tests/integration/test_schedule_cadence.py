"""Cadence over a simulated month on the real broker, database and SMTP, with a fake clock:
four weekly issues in March and the first of April. ``every`` readers get all five,
``monthly`` readers the first issue of each month, readers who paused for four weeks on
1 March nothing until the pause ends, then every issue again."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.clock import FakeClock
from shared.messaging.schemas import PlanSend
from shared.messaging.topology import PLAN_SEND
from tests.support import dispatch_seed, schedule_seed
from tests.support.own_database import OwnDatabase
from tests.support.schedule_clock import ClockedDispatcher
from tests.support.test_mta import ScriptedMta

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
pytest_plugins = ("tests.support.dispatch_fixtures",)  # own_database

ISSUES = [
    datetime(2027, 3, 1, 8, 0, tzinfo=UTC),
    datetime(2027, 3, 8, 8, 0, tzinfo=UTC),
    datetime(2027, 3, 15, 8, 0, tzinfo=UTC),
    datetime(2027, 3, 22, 8, 0, tzinfo=UTC),
    datetime(2027, 4, 5, 8, 0, tzinfo=UTC),
]
PAUSED_ON = datetime(2027, 3, 1, 7, 0, tzinfo=UTC)
PAUSED_UNTIL = {"every": None, "monthly": None, "paused": PAUSED_ON + timedelta(weeks=4)}


async def test_every_monthly_and_paused_readers_over_a_month_of_four_issues(
    vhost_url: str, own_database: OwnDatabase, tmp_path: Path
) -> None:
    sessions = own_database.sessions
    groups = {
        cadence: await schedule_seed.add_readers(
            sessions,
            8,
            prefix=cadence,
            languages=("en", "ru"),
            domains=("example.org", "example.net", "example.com"),
            cadence=cadence,
            paused_until=until,
        )
        for cadence, until in PAUSED_UNTIL.items()
    }
    clock = FakeClock(ISSUES[0] - timedelta(hours=1))
    got: dict[str, list[int]] = {a: [] for addresses in groups.values() for a in addresses}
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url, database_url=own_database.url, smtp_url=mta.url, tmp_path=tmp_path
        )
        async with ClockedDispatcher(settings, clock=clock):
            for number, when in enumerate(ISSUES):
                clock.set(when)
                send_id = str(uuid.uuid4())
                await dispatch_seed.add_editions(sessions, send_id, ("en", "ru"))
                before = Counter(mta.handler.copies())
                await dispatch_seed.publish(
                    vhost_url,
                    PlanSend(send_id=send_id, issue_key=f"2027-{number}", segments=["en", "ru"]),
                    routing_key=PLAN_SEND,
                )
                await dispatch_seed.wait_for_send(sessions, send_id)
                for address in Counter(mta.handler.copies()) - before:
                    got[address].append(number)
    every = {a: got[a] for a in groups["every"]}
    monthly = {a: got[a] for a in groups["monthly"]}
    paused = {a: got[a] for a in groups["paused"]}
    assert set(map(tuple, every.values())) == {(0, 1, 2, 3, 4)}, every
    assert set(map(tuple, monthly.values())) == {(0, 4)}, f"first issue of each month: {monthly}"
    # Paused on 1 March for four weeks (until 29 March): back for the April issue only.
    assert set(map(tuple, paused.values())) == {(4,)}, paused
