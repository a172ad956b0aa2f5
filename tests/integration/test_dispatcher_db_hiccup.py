"""Database hiccups during a send never re-send: the outcome write is retried, not the mail.

The dispatcher runs on a PostgreSQL database of this test's own; the test terminates that
database's backends (never another database's) while the send runs, or closes the database to
new connections for a while. The SMTP server (aiosmtpd over a socket) counts every copy and
Message-ID it accepts; RabbitMQ is a vhost of the test's own.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
import structlog

from shared.messaging.topology import DISPATCHER_DELIVERIES, connect
from tests.support import dispatch_seed, infra
from tests.support.own_database import OBSERVER, OwnDatabase
from tests.support.test_mta import ScriptedMta

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
# The fixtures own_database, own_database_url, one_node and cluster
pytest_plugins = ("tests.support.dispatch_fixtures",)
SEGMENTS = ["en", "be", "ru"]


async def terminate_backends(admin: asyncpg.Connection, database: str) -> int:
    """Terminate the dispatcher's backends on the test's own database; returns how many."""
    return int(
        await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid() AND application_name <> $2",
            database,
            OBSERVER,
        )
    )


# The dispatcher's outcome write (services/dispatcher/ledger.py ``_RECORD``) as PostgreSQL
# shows it in pg_stat_activity, waiting for a row lock the test holds.
_OUTCOME_WRITE_WAITING = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name <> $2 "
    "AND wait_event_type = 'Lock' AND query LIKE 'UPDATE delivery SET status = %smtp_code%'"
)


async def terminate_during_an_outcome_write(
    admin: asyncpg.Connection, observer: asyncpg.Connection, database: str, send_id: str
) -> int:
    """Terminate the dispatcher's backends while one of them is in the middle of writing an
    outcome; returns how many were terminated.

    The observer row-locks the deliveries being sent (``sending``: claimed, their outcome not
    yet written); the next outcome write for one of them waits on that lock, visibly in
    pg_stat_activity. Terminating then cannot land on an idle pool (which pre-ping would heal
    unseen): the write in flight fails and must be retried. Rolling back frees the rows.
    """
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        async with observer.transaction():
            locked = await observer.fetch(
                # SKIP LOCKED: the observer never waits for a row, so it can never be one
                # side of a deadlock with the dispatcher's batch writes.
                "SELECT id FROM delivery WHERE send_id = $1 AND status = 'sending' "
                "FOR UPDATE SKIP LOCKED",
                send_id,
            )
            if not locked:
                await asyncio.sleep(0.01)
                continue
            while time.monotonic() < deadline:
                if await admin.fetchval(_OUTCOME_WRITE_WAITING, database, OBSERVER):
                    return await terminate_backends(admin, database)
                await asyncio.sleep(0.005)
    raise AssertionError("no outcome write came for the deliveries being sent within 60 s")


def message_ids(mta: ScriptedMta) -> Counter[str]:
    with mta.handler.lock:
        return Counter(str(a.parsed()["Message-ID"]) for a in mta.handler.accepted)


async def wait_for(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout}s: {what}")
        await asyncio.sleep(0.01)


async def test_backends_terminated_ten_times_during_a_send_mail_nobody_twice(
    vhost_url: str,
    own_database: OwnDatabase,
    tmp_path: Path,
) -> None:
    name, url, sessions = own_database
    await dispatch_seed.add_subscribers(sessions, 100)  # 300 readers
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, SEGMENTS)
    audience = await dispatch_seed.expected_audience(sessions, SEGMENTS)
    admin = await asyncpg.connect(infra.POSTGRES_ADMIN_URL)
    observer = await asyncpg.connect(url, server_settings={"application_name": OBSERVER})
    terminated: list[int] = []
    try:
        with ScriptedMta() as mta:
            settings = dispatch_seed.make_settings(
                amqp_url=vhost_url,
                database_url=url,
                smtp_url=mta.url,
                tmp_path=tmp_path,
                dispatch_rate_limit=150.0,
                dispatch_db_retry_initial_s=0.02,
                dispatch_db_retry_max_s=0.5,
            )
            with structlog.testing.capture_logs() as logs:
                async with dispatch_seed.RunningDispatcher(settings):
                    await dispatch_seed.plan(vhost_url, send_id, SEGMENTS)
                    # every 25 accepted mails, from the 25th to the 250th, a termination in
                    # the middle of an outcome write
                    for n in range(10):
                        await wait_for(
                            lambda n=n: len(mta.handler.accepted) >= 25 * (n + 1),
                            timeout=60,
                            what=f"{25 * (n + 1)} mails accepted",
                        )
                        terminated.append(
                            await terminate_during_an_outcome_write(admin, observer, name, send_id)
                        )
                    await dispatch_seed.wait_for_send(sessions, send_id, timeout=90)
            copies = mta.handler.copies()
            ids = message_ids(mta)
    finally:
        await observer.close()
        await admin.close()
    rows = {d.email: d for d in await dispatch_seed.deliveries(sessions, send_id)}
    retried = [
        e
        for e in logs
        if e["event"] == "database_write_retried" and e["what"] == "delivery_outcome"
    ]
    assert min(terminated) >= 1, f"backends terminated per round: {terminated}"
    assert {e: d.status for e, d in rows.items()} == dict.fromkeys(audience, "sent"), "none lost"
    duplicates = {a: n for a, n in copies.items() if n > 1}
    assert not duplicates, f"{len(duplicates)} readers mailed twice"
    assert set(copies) == audience
    assert ids == Counter({message_id: 1 for message_id in ids}), "each Message-ID once"
    assert len(ids) == len(audience)
    assert len(retried) >= len(terminated), f"{len(retried)} outcome writes retried"


async def _queue_state(amqp_url: str) -> tuple[int, int]:
    """(messages ready, consumers) of the deliveries queue."""
    connection = await connect(amqp_url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(DISPATCHER_DELIVERIES.name, passive=True)
        result = declared.declaration_result
        return int(result.message_count or 0), int(result.consumer_count or 0)
    finally:
        await connection.close()


async def test_while_the_database_stays_away_jobs_wait_in_the_queue_and_outcomes_in_memory(
    vhost_url: str,
    own_database: OwnDatabase,
    tmp_path: Path,
) -> None:
    name, url, sessions = own_database
    await dispatch_seed.add_subscribers(sessions, 60)  # 180 readers
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, SEGMENTS)
    audience = await dispatch_seed.expected_audience(sessions, SEGMENTS)
    admin = await asyncpg.connect(infra.POSTGRES_ADMIN_URL)
    closed = False
    try:
        with ScriptedMta() as mta:
            settings = dispatch_seed.make_settings(
                amqp_url=vhost_url,
                database_url=url,
                smtp_url=mta.url,
                tmp_path=tmp_path,
                dispatch_prefetch=20,
                dispatch_rate_limit=60.0,
                dispatch_db_retry_initial_s=0.02,
                dispatch_db_retry_max_s=0.3,
            )
            with structlog.testing.capture_logs() as logs:
                async with dispatch_seed.RunningDispatcher(settings):
                    await dispatch_seed.plan(vhost_url, send_id, SEGMENTS)
                    await wait_for(
                        lambda: len(mta.handler.accepted) >= 30, timeout=30, what="30 accepted"
                    )
                    await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                    closed = True
                    before = len(mta.handler.accepted)
                    await terminate_backends(admin, name)
                    # The worker stops taking jobs: it cancels its consumer, the jobs wait in
                    # the queue (a quorum queue still lists a cancelled consumer while it holds
                    # unacked messages, so the ready count is what tells).
                    await wait_for(
                        lambda: (
                            ("consumer_paused", DISPATCHER_DELIVERIES.name)
                            in {(e["event"], e.get("queue")) for e in logs}
                        ),
                        timeout=15,
                        what="deliveries consumer paused",
                    )
                    waiting = (await _queue_state(vhost_url))[0]
                    await asyncio.sleep(2.0)  # a window in which no job may be taken
                    during = len(mta.handler.accepted) - before
                    assert during <= 20, f"{during} mails went out with no database (prefetch 20)"
                    ready = (await _queue_state(vhost_url))[0]
                    assert ready >= waiting, f"jobs taken with no database: {waiting} -> {ready}"
                    await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
                    closed = False
                    await dispatch_seed.wait_for_send(sessions, send_id, timeout=60)
            copies = mta.handler.copies()
    finally:
        if closed:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    assert waiting > 0, "the jobs not yet taken waited in the queue"
    rows = {d.email: d for d in await dispatch_seed.deliveries(sessions, send_id)}
    assert {e: d.status for e, d in rows.items()} == dict.fromkeys(audience, "sent"), "none lost"
    assert copies == dict.fromkeys(audience, 1), "exactly one copy each"
    events = Counter(e["event"] for e in logs)
    assert events["consumer_paused"] >= 1
    assert events["consumer_resumed"] >= 1
    assert events["database_write_retried"] >= 1, "outcomes were held and written later"
