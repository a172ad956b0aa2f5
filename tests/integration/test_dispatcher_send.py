"""A whole send through the real planner, RabbitMQ, workers and an SMTP server over a socket."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dispatcher.settings import DispatcherSettings, load_dispatcher_settings
from shared.messaging.publisher import Publisher
from shared.messaging.schemas import PlanSend
from shared.messaging.topology import PLAN_SEND, connect
from tests.support import dispatch_seed
from tests.support.database import sessions_on
from tests.support.test_mta import ScriptedMta

pytestmark = pytest.mark.integration


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    async with sessions_on(database_url) as factory:
        yield factory


def make_settings(
    *, amqp_url: str, database_url: str, smtp_url: str, tmp_path: Path, **extra: object
) -> DispatcherSettings:
    return load_dispatcher_settings(
        mode="test",
        amqp_url=amqp_url,
        database_url=database_url,
        smtp_url=smtp_url,
        var_dir=tmp_path,
        secret_key="test-secret-key-" + "x" * 32,
        dispatch_retry_tiers="1s",
        dispatch_outbox_sweep_s=1.0,
        smtp_timeout_s=2.0,
        **extra,
    )


async def publish_plan(amqp_url: str, plan: PlanSend) -> None:
    connection = await connect(amqp_url)
    try:
        publisher = await Publisher.open(connection)
        await publisher.publish(plan, routing_key=PLAN_SEND)
    finally:
        await connection.close()


async def test_every_active_subscriber_of_each_segment_gets_one_copy_in_its_language(
    vhost_url: str,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    await dispatch_seed.add_subscribers(sessions, 10)
    pending = await dispatch_seed.add_subscribers(sessions, 3, status="pending", prefix="pending")
    # The PostgreSQL database is shared by the test session: the audience is whoever is active.
    addresses = await dispatch_seed.expected_audience(sessions, ["en", "be", "ru"])
    # Other tests may leave readers of two editions in the shared database: one copy each.
    expected = await dispatch_seed.expected_copies(sessions, ["en", "be", "ru"])
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, ("en", "be", "ru"))
    with ScriptedMta() as mta:
        settings = make_settings(
            amqp_url=vhost_url, database_url=database_url, smtp_url=mta.url, tmp_path=tmp_path
        )
        async with dispatch_seed.RunningDispatcher(settings):
            await publish_plan(
                vhost_url,
                PlanSend(send_id=send_id, issue_key="2026-w48", segments=["en", "be", "ru"]),
            )
            send = await dispatch_seed.wait_for_send(sessions, send_id)
        copies = mta.handler.copies()
        accepted = list(mta.handler.accepted)
    assert send.total == sum(expected.values()) >= 30
    assert not set(pending) & addresses
    assert await dispatch_seed.status_counts(sessions, send_id) == {"sent": send.total}
    assert copies == expected, "each active subscriber exactly once per chosen edition"
    by_rcpt = {a.rcpt: a for a in accepted}
    ru = next(a for a in sorted(addresses) if "-ru-" in a and a.startswith("reader-"))
    mail = by_rcpt[ru].parsed()
    assert mail["Content-Language"] == "ru"
    assert str(mail["Subject"]) == dispatch_seed.SUBJECTS["ru"]
    assert "=?utf-8?" in by_rcpt[ru].data.split(b"\r\n\r\n")[0].decode().lower()
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "/unsubscribe/one-click?token=" in mail["List-Unsubscribe"]
    assert "mailto:unsubscribe+" in mail["List-Unsubscribe"]
    assert by_rcpt[ru].mail_from.startswith("bounces+")
    assert not mail.defects
    text_part = mail.get_body(("plain",))
    html_part = mail.get_body(("html",))
    assert text_part is not None
    assert html_part is not None
    assert "@@NL_" not in text_part.get_content() + html_part.get_content()
    assert "/unsubscribe?token=" in text_part.get_content()
    assert dispatch_seed.LEADING_DOT_LINE in text_part.get_content().splitlines()
    assert ru in html_part.get_content()
    assert max(len(line) for line in by_rcpt[ru].data.split(b"\r\n")) < 998
