"""Operating the dispatcher: probes and metrics, transactional mail during a campaign, dead
letters listed and replayed, send status from the CLI."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from typer.testing import CliRunner

from newsletter_cli.main import app as cli
from services.dispatcher import dead_letters, service
from shared.db.engine import create_engine, session_factory
from shared.db.tables.deliveries import Delivery, Send
from shared.messaging.schemas import DeliverIssue, DeliverTransactional
from shared.messaging.topology import DELIVER_ISSUE, DELIVER_TRANSACTIONAL
from tests.support import dispatch_seed
from tests.support.ports import free_port
from tests.support.test_mta import ScriptedMta

pytestmark = pytest.mark.integration


async def test_a_confirmation_overtakes_a_running_campaign_and_probes_report_it(
    vhost_url: str, sqlite_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    await dispatch_seed.add_subscribers(sessions, 100)
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, ("en", "be", "ru"))
    port = free_port()
    confirmation = DeliverTransactional(
        kind="confirmation",
        language="ru",
        subscriber_id=1,
        to="newcomer@example.org",
        subject="Подтвердите подписку",
        html="<p>confirm</p>",
        text="confirm\n",
    )
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=sqlite_url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            dispatch_rate_limit=40.0,
            dispatcher_probe_port=port,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(settings, stop=stop))
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                for _ in range(600):  # 60 s: a loaded machine starts slowly
                    try:
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)
                ready = await client.get("/readyz")
                assert ready.status_code == 200, ready.text
                assert ready.json()["checks"] == {"database": "ok", "rabbitmq": "ok", "smtp": "ok"}
                await dispatch_seed.plan(vhost_url, send_id, ["en", "be", "ru"])
                await dispatch_seed.wait_until(lambda: len(mta.handler.accepted) >= 20)
                await dispatch_seed.publish(
                    vhost_url, confirmation, routing_key=DELIVER_TRANSACTIONAL
                )
                await dispatch_seed.wait_until(
                    lambda: "newcomer@example.org" in mta.handler.copies()
                )
                campaign_so_far = len(mta.handler.accepted) - 1
                assert campaign_so_far < 300, "the confirmation did not wait for the campaign"
                await dispatch_seed.wait_for_send(sessions, send_id)
                metrics = (await client.get("/metrics")).text
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    assert 'newsletter_deliveries_total{domain="example.org",language="ru",outcome="sent"}' in (
        metrics
    )
    assert "newsletter_planned_deliveries_total" in metrics
    assert "newsletter_smtp_transaction_seconds_count" in metrics
    assert "newsletter_publish_confirms_total 300.0" in metrics


async def test_poison_jobs_are_dead_lettered_with_their_reason_and_replay_after_a_fix(
    vhost_url: str, sqlite_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    import aio_pika

    from shared.messaging.topology import COMMANDS, connect

    ghost_send = str(uuid.uuid4())
    async with sessions() as session:
        row = Delivery(
            dedupe_key=f"send:{ghost_send}:1",
            send_id=None,
            subscriber_id=1,
            email="ghost@example.org",
            email_domain="example.org",
            language="en",
            status="queued",
        )
        session.add(row)
        await session.commit()
        delivery_id = row.id
    assert delivery_id is not None
    job = DeliverIssue(
        delivery_id=delivery_id,
        send_id=ghost_send,
        subscriber_id=1,
        to="ghost@example.org",
        language="en",
    )
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url, database_url=sqlite_url, smtp_url=mta.url, tmp_path=tmp_path
        )
        async with dispatch_seed.RunningDispatcher(settings):
            connection = await connect(vhost_url)
            try:
                channel = await connection.channel()
                exchange = await channel.get_exchange(COMMANDS)
                await exchange.publish(
                    aio_pika.Message(b"{not json", message_id="garbage-1"),
                    routing_key=DELIVER_ISSUE,
                )
            finally:
                await connection.close()
            await dispatch_seed.publish(vhost_url, job, routing_key=DELIVER_ISSUE)
            letters: list[dead_letters.DeadLetter] = []
            for _ in range(600):
                letters = await dead_letters.peek(vhost_url, limit=10)
                if len(letters) >= 2:
                    break
                await asyncio.sleep(0.1)
            reasons = {letter.message_id: letter.reason for letter in letters}
            assert "deliver_issue" in reasons["garbage-1"]
            assert reasons[job.message_id] == f"unknown send {ghost_send}"
            assert all(letter.routing_key == DELIVER_ISSUE for letter in letters)
            assert not mta.handler.accepted
            # The operator creates what was missing, then replays that one letter.
            async with sessions() as session:
                session.add(Send(id=ghost_send, issue_key="w48", languages="en", status="running"))
                await session.commit()
            await dispatch_seed.add_editions(sessions, ghost_send, ("en",))
            replayed = await dead_letters.replay(vhost_url, limit=10, message_id=job.message_id)
            assert replayed == 1
            await dispatch_seed.wait_until(lambda: bool(mta.handler.accepted))
            remaining = await dead_letters.peek(vhost_url, limit=10)
    assert [a.rcpt for a in mta.handler.accepted] == ["ghost@example.org"]
    assert [letter.message_id for letter in remaining] == ["garbage-1"]


def test_the_cli_shows_a_send_per_language_and_lists_dead_letters(
    vhost_url: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    send_id = str(uuid.uuid4())

    async def seed() -> None:
        engine = create_engine(sqlite_url)
        sessions = session_factory(engine)
        async with sessions() as session:
            session.add(Send(id=send_id, issue_key="w48", languages="en,be", status="running"))
            await session.flush()
            for n, (language, status) in enumerate(
                [("en", "sent"), ("en", "sent"), ("be", "deferred"), ("be", "bounced")]
            ):
                session.add(
                    Delivery(
                        dedupe_key=f"send:{send_id}:{n}",
                        send_id=send_id,
                        subscriber_id=n,
                        email=f"r{n}@example.org",
                        email_domain="example.org",
                        language=language,
                        status=status,
                    )
                )
            await session.commit()
        await engine.dispose()

    asyncio.run(seed())
    monkeypatch.setenv("NEWSLETTER_MODE", "test")
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("NEWSLETTER_AMQP_URL", vhost_url)
    runner = CliRunner()
    status = runner.invoke(cli, ["send", "status", send_id])
    assert status.exit_code == 0, status.output
    lines = status.output.splitlines()
    assert lines[0].startswith(f"w48 send {send_id}: running, started ")
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:5]}
    # planned, sent, deferred, failed, bounced, other, percent done, rate, time left
    assert rows["en"][:7] == ["2", "2", "0", "0", "0", "0", "100"]
    assert rows["be"][:7] == ["2", "0", "1", "0", "1", "0", "50"]
    assert rows["be"][-1] == "stalled", "nothing sent lately: no time left to promise"
    assert rows["all"][:7] == ["4", "2", "1", "0", "1", "0", "75"]
    paused = runner.invoke(cli, ["send", "pause", send_id])
    assert paused.exit_code == 0, paused.output
    assert f"send {send_id} paused" in paused.output
    missing = runner.invoke(cli, ["send", "status", "no-such-send"])
    assert missing.exit_code == 1
    listed = runner.invoke(cli, ["dlq", "list"])
    assert listed.exit_code == 0, listed.output
