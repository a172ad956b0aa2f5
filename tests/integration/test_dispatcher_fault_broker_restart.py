"""RabbitMQ stopped and started in the middle of a send (``rabbitmqctl stop_app/start_app``).

This stops the broker for everyone on the machine: the outage is kept to a few seconds and
``start_app`` always runs. Afterwards every audience member has exactly one terminal state,
the SMTP server received every sent delivery, and duplicates stay within the in-flight window.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db.engine import create_engine, session_factory
from shared.db.tables.deliveries import TERMINAL_STATUSES
from tests.support import dispatch_seed, infra
from tests.support.test_mta import ScriptedMta

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
PREFETCH = 40
SEGMENTS = ["en", "be", "ru"]
OUTAGE_S = 3.0


@pytest.fixture
async def own_database() -> AsyncIterator[tuple[str, async_sessionmaker[AsyncSession]]]:
    name, url = await dispatch_seed.fresh_postgres()
    engine = create_engine(url)
    try:
        yield url, session_factory(engine)
    finally:
        await engine.dispose()
        await infra.drop_database(name)


async def test_a_broker_restart_mid_send_loses_nobody(
    vhost_url: str,
    own_database: tuple[str, async_sessionmaker[AsyncSession]],
    tmp_path: Path,
) -> None:
    url, sessions = own_database
    await dispatch_seed.add_subscribers(sessions, 150)
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, SEGMENTS)
    log = tmp_path / "dispatcher.log"
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            dispatch_prefetch=PREFETCH,
            dispatch_rate_limit=100.0,
        )
        process = dispatch_seed.spawn_dispatcher(settings=settings, log_path=log)
        try:
            await asyncio.sleep(1.5)
            await dispatch_seed.plan(vhost_url, send_id, SEGMENTS)
            await dispatch_seed.wait_until(lambda: len(mta.handler.accepted) >= 100, timeout=60)
            try:
                await asyncio.to_thread(infra.rabbitmqctl, "stop_app")
                await asyncio.sleep(OUTAGE_S)
            finally:
                await asyncio.to_thread(infra.rabbitmqctl, "start_app")
            stopped_at = len(mta.handler.accepted)
            await dispatch_seed.wait_for_send(sessions, send_id, timeout=120)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        copies = dict(mta.handler.copies())
    assert stopped_at < 450, "the broker stopped in the middle of the send"
    audience = await dispatch_seed.expected_audience(sessions, SEGMENTS)
    rows = await dispatch_seed.deliveries(sessions, send_id)
    assert {d.email for d in rows} == audience
    assert len(rows) == len(audience)
    assert all(d.status in TERMINAL_STATUSES for d in rows)
    sent = {d.email for d in rows if d.status == "sent"}
    assert sent == audience
    assert all(copies.get(e, 0) >= 1 for e in sent)
    duplicates = sum(n - 1 for n in copies.values() if n > 1)
    assert duplicates <= PREFETCH
    assert duplicates <= dispatch_seed.log_events(log, "possible_duplicate_resend")
