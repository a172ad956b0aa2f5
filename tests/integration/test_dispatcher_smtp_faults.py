"""Faults inside DATA: only what the server may have taken is ``unknown``.

A connection that breaks before the server could have read the final dot (reset by the server
with the message unread, or lost while part of the message was still in our write buffer) is
deferred and retried; a reply that never comes after the complete end of data is ``unknown``;
a non-2xx reply to the final dot is classified like any reply. Real sockets throughout: the
raw server of ``tests/support/raw_mta.py``, RabbitMQ and SQLite for the dispatcher runs.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dispatcher.smtp import SmtpPool
from shared.db.tables.deliveries import Delivery
from shared.messaging.schemas import DeliverTransactional
from shared.messaging.topology import DELIVER_TRANSACTIONAL
from shared.settings import SmtpTarget
from tests.support import dispatch_seed
from tests.support.pipelining_servers import asyncio_and_uvloop, message
from tests.support.raw_mta import RawMta, RawScript

pytestmark = pytest.mark.integration

SENDER = "bounces@news.example"


# Every test on asyncio's loop and on uvloop, the dispatcher's loop in production.
event_loop_policy = asyncio_and_uvloop


# The client's timeout, with room on a loaded machine: a stall meant to come in under it (or to
# outlast it) does so by a wide margin, whatever the scheduler does to the server's thread.
CLIENT_TIMEOUT_S = 2.0


async def _send_once(mta: RawMta, recipient: str, *, size: int = 60_000) -> tuple[str, str]:
    pool = SmtpPool(target=SmtpTarget(mta.url), size=1, timeout=CLIENT_TIMEOUT_S)
    try:
        outcome = await pool.send(
            sender=SENDER,
            recipient=recipient,
            data=message(recipient, size=size, message_id=True),
            dot_safe=True,
        )
    finally:
        await pool.close()
    return outcome.status, outcome.reply


async def test_a_connection_reset_mid_data_is_deferred_not_unknown() -> None:
    with RawMta(RawScript(drop_mid_data={"a@example.org": 1})) as mta:
        status, reply = await _send_once(mta, "a@example.org")
        assert mta.events["dropped_mid_data"] == 1, "the server closed before the final dot"
        assert (status, reply) == (
            "deferred",
            "connection reset by the server: it closed with the end of data unread",
        )
        # The retry goes out on a new connection and is taken once.
        assert (await _send_once(mta, "a@example.org"))[0] == "sent"
        assert mta.accepted() == {"a@example.org": 1}


@pytest.mark.parametrize("stall_s", [0.3, 6.0], ids=["closed", "past-the-timeout"])
async def test_a_connection_lost_while_the_end_of_data_is_still_buffered_is_deferred(
    stall_s: float,
) -> None:
    # 8 MB: more than loopback's kernel buffers take while the server does not read. The server
    # closes after 0.3 s, or stalls past the client's 2 s timeout.
    with RawMta(RawScript(stall_reading={"big@example.org"}, stall_s=stall_s)) as mta:
        status, reply = await _send_once(mta, "big@example.org", size=8_000_000)
    assert status == "deferred"
    assert reply.startswith("connection lost before the end of data was written"), reply


async def test_no_reply_after_the_complete_end_of_data_is_unknown() -> None:
    with RawMta(RawScript(silent_after_dot={"s@example.org"})) as mta:
        status, reply = await _send_once(mta, "s@example.org")
        assert mta.complete_messages() == {"s@example.org": 1}, "the server read the final dot"
    assert status == "unknown"
    assert "Timed out" in reply


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        ("451 4.3.0 temporary failure, try again", "deferred"),
        ("552 5.2.2 mailbox full", "deferred"),
        ("554 5.7.1 message refused by policy", "failed"),
        ("550 5.1.1 <r@example.org>: user unknown", "bounced"),
    ],
)
async def test_a_non_2xx_reply_to_the_final_dot_is_classified(reply: str, status: str) -> None:
    with RawMta(RawScript(replies_after_dot={"r@example.org": [reply]})) as mta:
        assert (await _send_once(mta, "r@example.org"))[0] == status
        assert mta.accepted() == {}


async def test_issue_mail_dropped_mid_data_is_retried_until_each_reader_has_one_copy(
    vhost_url: str, sqlite_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    addresses = await dispatch_seed.add_subscribers(sessions, 100)  # 300 readers
    silent = {addresses[0], addresses[1]}
    refused = addresses[2]
    later = addresses[3]
    gone = addresses[5]
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, ("en", "be", "ru"))
    script = RawScript(
        drop_mid_data_ratio=0.1,
        drop_mid_data={addresses[4]: 2},  # dropped on two attempts in a row
        silent_after_dot=silent,
        replies_after_dot={
            refused: ["554 5.7.1 message refused by policy"],
            later: ["451 4.3.0 try again later"],
            gone: [f"550 5.1.1 <{gone}>: user unknown"],
        },
    )
    with RawMta(script) as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=sqlite_url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            # the silent readers cost one timeout each; the others must never meet it
            smtp_timeout_s=3.0,
        )
        async with dispatch_seed.RunningDispatcher(settings):
            await dispatch_seed.plan(vhost_url, send_id, ["en", "be", "ru"])
            await dispatch_seed.wait_for_send(sessions, send_id, timeout=90)
        accepted = mta.accepted()
        complete = mta.complete_messages()
        message_ids = mta.accepted_message_ids()
        dropped = mta.events["dropped_mid_data"]
    rows = {d.email: d for d in await dispatch_seed.deliveries(sessions, send_id)}
    assert dropped >= 20, f"the server dropped {dropped} connections mid-DATA"
    statuses = {a: rows[a].status for a in addresses}
    assert {a for a, s in statuses.items() if s == "unknown"} == silent
    assert statuses[refused] == "failed"
    assert statuses[later] == "sent"
    assert statuses[gone] == "bounced"
    assert rows[addresses[4]].attempts >= 3
    sent = set(addresses) - silent - {refused, gone}
    assert {a for a, s in statuses.items() if s == "sent"} == sent, "nobody lost"
    assert {a: accepted[a] for a in sent} == dict.fromkeys(sent, 1), "one accepted copy each"
    assert all(complete[a] == 1 for a in silent), "unknown is never resent for an issue"
    assert all(rows[a].attempts == 1 for a in silent)
    assert sum(message_ids.values()) == len(sent) == len(message_ids), "one Message-ID each"


async def test_a_confirmation_without_reply_after_the_dot_is_retried_once_then_unknown(
    vhost_url: str, sqlite_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    command = DeliverTransactional(
        kind="confirmation",
        language="en",
        subscriber_id=7,
        to="quiet@example.org",
        subject="Confirm your subscription",
        html='<html lang="en"><a href="https://x.example/confirm?token=abc">Confirm</a></html>',
        text="Confirm:\nhttps://x.example/confirm?token=abc\n",
    )
    with RawMta(RawScript(silent_after_dot={"quiet@example.org"})) as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=sqlite_url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            smtp_timeout_s=2.0,
        )
        async with dispatch_seed.RunningDispatcher(settings):
            await dispatch_seed.publish(vhost_url, command, routing_key=DELIVER_TRANSACTIONAL)
            # unknown is written only after the retry also went unanswered, and is final.
            row = await _wait_for_transactional(sessions, {"unknown"}, timeout=60)
        complete = mta.complete_messages()
    assert row.status == "unknown"
    assert row.attempts == 2
    assert complete == {"quiet@example.org": 2}


async def _wait_for_transactional(
    sessions: async_sessionmaker[AsyncSession], statuses: set[str], *, timeout: float
) -> Delivery:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with sessions() as session:
            row = (
                await session.exec(select(Delivery).where(Delivery.kind == "transactional"))
            ).first()
        if row is not None and row.status in statuses:
            return row
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"transactional row is {row and row.status}, not {statuses}")
        await asyncio.sleep(0.1)
