"""Transactional mail follows issue mail's lease rule: a redelivered confirmation takes over a
``sending`` row only once its claimer's lease has ended or its claimer stopped beating.

The ledger row of a confirmation is left in ``sending`` by "another dispatcher" (a row in
``dispatcher_process``), as after a database hiccup between its 250 and its outcome write. The
command is then really redelivered by RabbitMQ (a consumer of the test's own takes it and
closes its connection without an ack), and a real dispatcher consumes the redelivered copy.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db.tables.deliveries import Delivery, DispatcherProcess
from shared.db.tables.timestamps import utcnow
from shared.messaging.schemas import DeliverTransactional
from shared.messaging.topology import DELIVER_TRANSACTIONAL, DISPATCHER_TRANSACTIONAL, connect
from tests.support import dispatch_seed
from tests.support.test_mta import ScriptedMta

pytestmark = pytest.mark.integration
LEASE_S = 900.0
STALE_S = 30.0


def confirmation() -> DeliverTransactional:
    return DeliverTransactional(
        kind="confirmation",
        language="en",
        subscriber_id=7,
        to="new.reader@example.org",
        subject="Confirm your subscription",
        html='<html lang="en"><a href="https://x.example/confirm?token=abc">Confirm</a></html>',
        text="Confirm:\nhttps://x.example/confirm?token=abc\n",
    )


async def leave_sending(
    sessions: async_sessionmaker[AsyncSession],
    command: DeliverTransactional,
    *,
    lease_left_s: float,
    claimer_seen_s_ago: float,
) -> int:
    """The command's ledger row in ``sending``, claimed by another process; its id."""
    now = utcnow()
    claimer = str(uuid.uuid4())
    async with sessions() as session:
        session.add(
            DispatcherProcess(
                id=claimer,
                started_at=now - timedelta(hours=1),
                seen_at=now - timedelta(seconds=claimer_seen_s_ago),
            )
        )
        row = Delivery(
            dedupe_key=f"tx:{command.message_id}",
            kind="transactional",
            send_id=None,
            subscriber_id=command.subscriber_id,
            email=command.to,
            email_domain="example.org",
            language=command.language,
            status="sending",
            attempts=1,
        )
        session.add(row)
        await session.flush()
        assert row.id is not None
        await session.execute(
            text("UPDATE delivery SET lease_until = :lease, claimed_by = :owner WHERE id = :id"),
            {"lease": now + timedelta(seconds=lease_left_s), "owner": claimer, "id": row.id},
        )
        await session.commit()
        return row.id


async def redeliver(amqp_url: str, command: DeliverTransactional) -> None:
    """Publish the command, take it without an ack and drop the connection: the broker puts it
    back flagged ``redelivered``."""
    await dispatch_seed.publish(amqp_url, command, routing_key=DELIVER_TRANSACTIONAL)
    connection = await connect(amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(DISPATCHER_TRANSACTIONAL.name, passive=True)
        taken = None
        for _ in range(100):
            taken = await queue.get(no_ack=False, fail=False)
            if taken is not None:
                break
            await asyncio.sleep(0.05)
        assert taken is not None, "the command reached its queue"
    finally:
        await connection.close()  # unacked: requeued, redelivered


async def status_of(sessions: async_sessionmaker[AsyncSession], delivery_id: int) -> str:
    async with sessions() as session:
        row = (await session.exec(select(Delivery).where(Delivery.id == delivery_id))).one()
        return str(row.status)


@pytest.mark.parametrize(
    ("lease_left_s", "claimer_seen_s_ago", "mailed"),
    [
        pytest.param(LEASE_S, 0.0, 0, id="live-claimer-keeps-it"),
        pytest.param(LEASE_S, 10 * STALE_S, 1, id="stale-claimer-loses-it"),
        pytest.param(-60.0, 0.0, 1, id="ended-lease-loses-it"),
    ],
)
async def test_a_redelivered_confirmation_takes_a_sending_row_only_by_the_lease_rule(
    vhost_url: str,
    sqlite_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
    lease_left_s: float,
    claimer_seen_s_ago: float,
    mailed: int,
) -> None:
    command = confirmation()
    delivery_id = await leave_sending(
        sessions, command, lease_left_s=lease_left_s, claimer_seen_s_ago=claimer_seen_s_ago
    )
    await redeliver(vhost_url, command)
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=sqlite_url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            dispatch_roles="transactional",
            dispatch_lease_s=LEASE_S,
            dispatch_owner_stale_s=STALE_S,
        )
        with structlog.testing.capture_logs() as logs:
            async with dispatch_seed.RunningDispatcher(settings):
                await dispatch_seed.wait_until(
                    lambda: any(
                        e["event"] in {"duplicate_job_skipped", "email_sent"} for e in logs
                    ),
                    timeout=30,
                )
        copies = sum(mta.handler.copies().values())
    assert copies == mailed, f"the server got {copies} copies, expected {mailed}"
    status = await status_of(sessions, delivery_id)
    if mailed:
        assert status == "sent", "the redelivered copy took the row over and recorded it"
    else:
        assert status == "sending", "the live claimer's row is left to its claimer"
        skipped = [e for e in logs if e["event"] == "duplicate_job_skipped"]
        assert skipped, "the redelivered copy was skipped, and says so"
        assert skipped[0]["found_status"] == "sending"
