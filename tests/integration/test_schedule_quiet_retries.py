"""Quiet hours (22:00-07:00 local) hold for every later attempt of an issue mail, not only the
planned one, on the real broker, database and SMTP with a fake clock: a 451 at 21:59 local is
retried at 07:00, a job the reconciler re-drives at 23:30 local waits until 07:00, and so does
one that waited in the queue past 22:00. Readers elsewhere (London, three hours behind Minsk)
get theirs meanwhile, and transactional mail is never held."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dispatcher.local_hours import in_quiet_hours
from shared.clock import FakeClock
from shared.db.tables.deliveries import Delivery, Send
from shared.messaging.schemas import DeliverTransactional, PlanSend
from shared.messaging.topology import (
    DELIVER_TRANSACTIONAL,
    DISPATCHER_DELIVERIES,
    PLAN_SEND,
    connect,
)
from tests.support import dispatch_seed
from tests.support.own_database import OwnDatabase
from tests.support.schedule_clock import ClockedDispatcher, wait_until
from tests.support.test_mta import Accepted, MtaScript, ScriptedMta

pytest_plugins = ("tests.support.dispatch_fixtures",)  # own_database
pytestmark = pytest.mark.integration

MINSK = ZoneInfo("Europe/Minsk")  # the be edition's default zone (UTC+3 all year)
LONDON = ZoneInfo("Europe/London")  # the en edition's default (UTC+0 until 28 March 2027)
QUIET = (time(22, 0), time(7, 0))


def minsk(day: int, hour: int, minute: int, second: int = 0) -> datetime:
    """A moment of March 2027 on the wall clocks of Minsk, in UTC (ahead of the real clock)."""
    return datetime(2027, 3, day, hour, minute, second, tzinfo=MINSK).astimezone(UTC)


SEVEN_IN_MINSK = minsk(2, 7, 0)


def parked_until_seven(
    sessions: async_sessionmaker[AsyncSession], send_id: str, addresses: list[str]
) -> Callable[[], Awaitable[bool]]:
    """Whether every one of ``addresses`` waits ``pending`` until 07:00 in Minsk."""

    async def parked() -> bool:
        rows = await rows_by_address(sessions, send_id)
        return all(
            rows[a].status == "pending" and rows[a].due_at == SEVEN_IN_MINSK for a in addresses
        )

    return parked


def settings_for(
    vhost_url: str, postgres_url: str, mta: ScriptedMta, tmp_path: Path, **extra: object
) -> object:
    values: dict[str, object] = {
        "quiet_hours": "22:00-07:00",
        "dispatch_retry_tiers": "1m",  # 21:59 + 1 min is inside the quiet hours
        "dispatch_outbox_sweep_s": 0.1,
        "dispatch_reconcile_s": 0.2,
        **extra,
    }
    return dispatch_seed.make_settings(
        amqp_url=vhost_url,
        database_url=postgres_url,
        smtp_url=mta.url,
        tmp_path=tmp_path,
        **values,
    )


async def readers(sessions: async_sessionmaker[AsyncSession]) -> tuple[list[str], list[str]]:
    """Three readers of the be edition (no zone of their own: Minsk) and two of en (London)."""
    be = await dispatch_seed.add_subscribers(sessions, 3, languages=("be",), prefix="quiet")
    en = await dispatch_seed.add_subscribers(sessions, 2, languages=("en",), prefix="quiet")
    return be, en


async def plan(vhost_url: str, sessions: async_sessionmaker[AsyncSession]) -> str:
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, ("be", "en"))
    await dispatch_seed.publish(
        vhost_url,
        PlanSend(send_id=send_id, issue_key="2027-w09", segments=["be", "en"]),
        routing_key=PLAN_SEND,
    )
    return send_id


async def rows_by_address(
    sessions: async_sessionmaker[AsyncSession], send_id: str
) -> dict[str, Delivery]:
    return {row.email: row for row in await dispatch_seed.deliveries(sessions, send_id)}


def counts_are(
    sessions: async_sessionmaker[AsyncSession], send_id: str, expected: dict[str, int]
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await dispatch_seed.status_counts(sessions, send_id) == expected

    return check


def published(
    sessions: async_sessionmaker[AsyncSession], send_id: str
) -> Callable[[], Awaitable[bool]]:
    """Planned and every job confirmed by the broker: the send runs (its planning's relay has
    returned) and all five rows are queued."""

    async def check() -> bool:
        async with sessions() as session:
            send = await session.get(Send, send_id)
        return (
            send is not None
            and send.status == "running"
            and await dispatch_seed.status_counts(sessions, send_id) == {"queued": 5}
        )

    return check


async def planned_and_published(
    settings: object,
    clock: FakeClock,
    vhost_url: str,
    sessions: async_sessionmaker[AsyncSession],
) -> str:
    """Plan the send with a planner-only dispatcher (no worker takes a job) until every job is
    published; the send's id."""
    planner_only = settings.model_copy(update={"dispatch_roles": "planner"})  # type: ignore[attr-defined]
    async with ClockedDispatcher(planner_only, clock=clock):
        send_id = await plan(vhost_url, sessions)
        await wait_until(published(sessions, send_id), "every job published")
    return send_id


def accepted_for(mta: ScriptedMta, *addresses: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        copies = mta.handler.copies()
        return all(copies[a] >= 1 for a in addresses)

    return check


CONFIRM_SUBJECT = "Пацвердзіце падпіску"


def issue_mails(mta: ScriptedMta) -> list[Accepted]:
    return [a for a in mta.handler.accepted if a.parsed()["Subject"] != CONFIRM_SUBJECT]


def assert_none_in_quiet_hours(mails: list[Accepted], zones: dict[str, ZoneInfo]) -> None:
    for mail in mails:
        assert mail.clock_at is not None
        local = mail.clock_at.astimezone(zones[mail.rcpt])
        assert not in_quiet_hours(local.time(), QUIET), f"{mail.rcpt} mailed at {local}"


async def purge_jobs(vhost_url: str) -> int:
    """Empty ``dispatcher.deliveries``: the jobs are lost, as in a purge or a lost node."""
    connection = await connect(vhost_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(DISPATCHER_DELIVERIES.name, passive=True)
        purged = await queue.purge()
        return int(purged.message_count or 0)
    finally:
        await connection.close()


async def test_a_451_at_21_59_local_is_retried_at_seven_and_nothing_goes_out_in_quiet_hours(
    vhost_url: str,
    own_database: OwnDatabase,
    tmp_path: Path,
) -> None:
    sessions, postgres_url = own_database.sessions, own_database.url
    be, en = await readers(sessions)
    night_owl, londoner = be[0], en[0]
    zones = {**dict.fromkeys(be, MINSK), **dict.fromkeys(en, LONDON)}
    clock = FakeClock(minsk(1, 21, 59))
    with ScriptedMta(MtaScript(defer_once={night_owl, londoner})) as mta:
        mta.handler.clock = clock
        settings = settings_for(vhost_url, postgres_url, mta, tmp_path)
        async with ClockedDispatcher(settings, clock=clock) as dispatcher:
            send_id = await plan(vhost_url, sessions)
            await wait_until(counts_are(sessions, send_id, {"sent": 3, "deferred": 2}), "1st try")
            rows = await rows_by_address(sessions, send_id)
            # 21:59 + the 1-minute tier is 22:00 in Minsk: moved to 07:00; in London it is 19:00.
            assert rows[night_owl].due_at == SEVEN_IN_MINSK, rows[night_owl].due_at
            assert rows[londoner].due_at == minsk(1, 22, 0), rows[londoner].due_at

            clock.set(minsk(1, 22, 0, 1))
            await wait_until(accepted_for(mta, londoner), "the Londoner's retry at 19:00 there")
            clock.set(minsk(1, 23, 30))
            await dispatcher.reconciled_after(3)
            # A confirmation at 23:30 local is not held: transactional mail never is.
            confirmation = DeliverTransactional(
                kind="confirmation",
                language="be",
                subscriber_id=1,
                to=be[1],
                subject=CONFIRM_SUBJECT,
                html="<p>confirm</p>",
                text="confirm\n",
            )
            await dispatch_seed.publish(vhost_url, confirmation, routing_key=DELIVER_TRANSACTIONAL)

            async def confirmed() -> bool:
                return mta.handler.copies()[be[1]] == 2

            await wait_until(confirmed, "the confirmation sent at 23:30 local")
            clock.set(minsk(2, 6, 59))
            await dispatcher.reconciled_after(3)
            assert night_owl not in mta.handler.copies(), "mailed inside the quiet hours"
            assert (await rows_by_address(sessions, send_id))[night_owl].status == "deferred"

            clock.set(minsk(2, 7, 1))
            await dispatch_seed.wait_for_send(sessions, send_id)
        deferred = list(mta.handler.deferred)
        mails = issue_mails(mta)
        tx = [a for a in mta.handler.accepted if a not in mails]
    assert sorted(a for a, _ in deferred) == sorted([night_owl, londoner])
    assert all(at == minsk(1, 21, 59) for _, at in deferred), deferred
    assert sorted(m.rcpt for m in mails) == sorted(be + en), "one issue mail each"
    assert_none_in_quiet_hours(mails, zones)
    [owl] = [m for m in mails if m.rcpt == night_owl]
    assert owl.clock_at is not None
    assert owl.clock_at >= SEVEN_IN_MINSK
    [sent_at_night] = tx
    assert sent_at_night.clock_at == minsk(1, 23, 30)


async def test_jobs_the_reconciler_re_drives_at_23_30_local_wait_until_seven(
    vhost_url: str,
    own_database: OwnDatabase,
    tmp_path: Path,
) -> None:
    sessions, postgres_url = own_database.sessions, own_database.url
    be, en = await readers(sessions)
    zones = {**dict.fromkeys(be, MINSK), **dict.fromkeys(en, LONDON)}
    clock = FakeClock(minsk(1, 21, 50))
    with ScriptedMta() as mta:
        mta.handler.clock = clock
        settings = settings_for(vhost_url, postgres_url, mta, tmp_path)
        send_id = await planned_and_published(settings, clock, vhost_url, sessions)
        assert await purge_jobs(vhost_url) == 5
        clock.set(minsk(1, 23, 30))  # the jobs' deadlines are long past: the reconciler acts
        async with ClockedDispatcher(settings, clock=clock) as dispatcher:
            await wait_until(accepted_for(mta, *en), "the Londoners' mail at 20:30 there")

            await wait_until(
                parked_until_seven(sessions, send_id, be), "the Minsk readers parked until 07:00"
            )
            await dispatcher.reconciled_after(3)
            assert not set(be) & set(mta.handler.copies()), "mailed inside the quiet hours"
            rows = await rows_by_address(sessions, send_id)
            assert {a: rows[a].redriven for a in be + en} == dict.fromkeys(be + en, 1)

            clock.set(minsk(2, 7, 1))
            await dispatch_seed.wait_for_send(sessions, send_id)
        mails = issue_mails(mta)
    assert sorted(m.rcpt for m in mails) == sorted(be + en), "one mail each"
    assert_none_in_quiet_hours(mails, zones)
    assert all(m.clock_at == minsk(1, 23, 30) for m in mails if m.rcpt in en)
    assert all(
        m.clock_at is not None and m.clock_at >= SEVEN_IN_MINSK for m in mails if m.rcpt in be
    )


async def test_a_job_that_waited_in_the_queue_past_22_00_local_is_parked_until_seven(
    vhost_url: str,
    own_database: OwnDatabase,
    tmp_path: Path,
) -> None:
    sessions, postgres_url = own_database.sessions, own_database.url
    be, en = await readers(sessions)
    zones = {**dict.fromkeys(be, MINSK), **dict.fromkeys(en, LONDON)}
    clock = FakeClock(minsk(1, 21, 59))
    with ScriptedMta() as mta:
        mta.handler.clock = clock
        # Long job deadlines: the jobs are in the queue, nothing is re-driven.
        settings = settings_for(
            vhost_url, postgres_url, mta, tmp_path, dispatch_queued_deadline_s=3600.0
        )
        send_id = await planned_and_published(settings, clock, vhost_url, sessions)
        # Published at 21:59, taken by a worker at 22:10 (a backlog, a slow start).
        clock.set(minsk(1, 22, 10))
        async with ClockedDispatcher(settings, clock=clock) as dispatcher:
            await wait_until(accepted_for(mta, *en), "the Londoners' mail at 19:10 there")

            await wait_until(
                parked_until_seven(sessions, send_id, be),
                "the Minsk readers' jobs parked until 07:00",
            )
            await dispatcher.reconciled_after(3)
            assert not set(be) & set(mta.handler.copies()), "mailed inside the quiet hours"
            rows = await rows_by_address(sessions, send_id)
            assert all(rows[a].attempts == 0 and rows[a].redriven == 0 for a in be)

            clock.set(minsk(2, 7, 1))
            await dispatch_seed.wait_for_send(sessions, send_id)
        mails = issue_mails(mta)
    assert sorted(m.rcpt for m in mails) == sorted(be + en), "one mail each"
    assert_none_in_quiet_hours(mails, zones)
    assert all(
        m.clock_at is not None and m.clock_at >= SEVEN_IN_MINSK for m in mails if m.rcpt in be
    )
