"""A send never stays in ``planning``: a broker that refuses the planner's jobs does not stop the
planning, and a ``PlanSend`` that is gone (purged, dead-lettered) is published again.

Real RabbitMQ (a vhost per test), a PostgreSQL database of the test's own, an SMTP server over a
socket that records every copy it takes.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import structlog
from prometheus_client import CollectorRegistry
from sqlmodel import col, select

from services.dispatcher.metrics import DispatcherMetrics
from services.dispatcher.planner import Planner
from services.dispatcher.reconciler import Reconciler
from services.dispatcher.settings import DispatcherSettings
from shared.db.engine import create_engine, session_factory
from shared.db.tables.deliveries import Delivery, Send
from shared.db.tables.subscribers import Subscriber
from shared.db.tables.timestamps import utcnow
from shared.messaging.publisher import Publisher
from shared.messaging.schemas import PlanSend, decode
from shared.messaging.topology import (
    COMMANDS,
    DELIVER_ISSUE,
    DISPATCHER_DELIVERIES,
    DISPATCHER_PLANNER,
    connect,
)
from tests.support import dispatch_seed
from tests.support.own_database import OwnDatabase
from tests.support.test_mta import ScriptedMta

pytestmark = pytest.mark.integration
pytest_plugins = ("tests.support.dispatch_fixtures",)

FAST_LEDGER: dict[str, object] = {
    "dispatch_queued_deadline_s": 1.0,
    "dispatch_reconcile_grace_s": 0.3,
    "dispatch_reconcile_s": 0.3,
}


async def _bind_work_queue(amqp_url: str, *, bound: bool) -> None:
    """While the work queue is unbound, every issue job published comes back to the
    publisher: the broker does not take it (``PublishError``)."""
    connection = await connect(amqp_url)
    try:
        channel = await connection.channel()
        work = await channel.declare_queue(DISPATCHER_DELIVERIES.name, passive=True)
        if bound:
            await work.bind(COMMANDS, routing_key=DELIVER_ISSUE)
        else:
            await work.unbind(COMMANDS, routing_key=DELIVER_ISSUE)
    finally:
        await connection.close()


async def _send(own_database: OwnDatabase, send_id: str) -> Send:
    async with own_database.sessions() as session:
        send = await session.get(Send, send_id)
    assert send is not None, f"no send {send_id}"
    return send


async def _until_planned(own_database: OwnDatabase, send_id: str, *, timeout: float = 60) -> Send:
    """The send once it has left ``planning`` (fails after ``timeout``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with own_database.sessions() as session:
            send = await session.get(Send, send_id)
        if send is not None and send.status not in {"requested", "planning"}:
            return send
        counts = await dispatch_seed.status_counts(own_database.sessions, send_id)
        assert loop.time() < deadline, f"still planning after {timeout}s: {counts}"
        await asyncio.sleep(0.1)


async def test_a_broker_refusing_the_planners_jobs_does_not_stop_the_planning(
    vhost_url: str, own_database: OwnDatabase, tmp_path: Path
) -> None:
    """Every page is written while no job can be published (formerly the ``PlanSend`` failed
    at its first relay, was redelivered until dead-lettered, and the rest of the audience was
    never written); the send finishes once the broker takes jobs again."""
    sessions = own_database.sessions
    addresses = await dispatch_seed.add_subscribers(sessions, 23, languages=("en",))
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, ("en",))
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=own_database.url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            dispatch_planner_batch=5,  # five pages, each relayed as it is written
            **FAST_LEDGER,
        )
        with structlog.testing.capture_logs() as logs:
            async with dispatch_seed.RunningDispatcher(settings):
                await dispatch_seed.wait_until(
                    lambda: any(e["event"] == "dispatcher_started" for e in logs)
                )
                await _bind_work_queue(vhost_url, bound=False)
                await dispatch_seed.plan(vhost_url, send_id, ["en"])
                planned = await _until_planned(own_database, send_id)
                refused = await dispatch_seed.status_counts(sessions, send_id)
                mailed_while_refused = dict(mta.handler.copies())
                await _bind_work_queue(vhost_url, bound=True)
                await dispatch_seed.wait_for_send(sessions, send_id, timeout=60)
        copies = mta.handler.copies()
    relay_failures = sum(e["event"] == "planning_relay_failed" for e in logs)
    assert relay_failures >= 5, f"each page's relay was refused ({relay_failures} logged)"
    assert planned.status == "running", planned.status
    assert planned.total == len(addresses), f"{planned.total} rows planned"
    assert refused == {"pending": len(addresses)}, f"every row written, in the outbox: {refused}"
    assert mailed_while_refused == {}
    failed = [e for e in logs if e["event"] == "handler_failed"]
    assert failed == [], "the PlanSend handler failed (and was redelivered)"
    assert copies == dict.fromkeys(addresses, 1), "every reader mailed once"


async def test_a_send_left_in_planning_without_its_plan_send_is_re_planned_and_finishes(
    vhost_url: str, own_database: OwnDatabase, tmp_path: Path
) -> None:
    """Half the audience written an hour ago (some rows pending, some queued whose jobs are
    gone), the ``PlanSend`` dead-lettered: the reconciler of one of two dispatchers publishes
    it again, and every reader is mailed once. A scheduled send and a planning send that is
    still writing rows are left alone."""
    sessions = own_database.sessions
    addresses = await dispatch_seed.add_subscribers(sessions, 20, languages=("en",))
    send_id, scheduled_id, busy_id = (str(uuid.uuid4()) for _ in range(3))
    await dispatch_seed.add_editions(sessions, send_id, ("en",))
    hour_ago = utcnow() - timedelta(hours=1)
    async with sessions() as session:
        readers = (await session.exec(select(Subscriber).order_by(col(Subscriber.id)))).all()
        session.add(
            Send(
                id=send_id,
                issue_key="w48",
                languages="en",
                status="planning",
                created_at=hour_ago,
                started_at=hour_ago,
            )
        )
        session.add(
            Send(
                id=scheduled_id,
                issue_key="w49",
                languages="en",
                status="scheduled",
                created_at=hour_ago,
                scheduled_at=utcnow() + timedelta(days=1),
            )
        )
        session.add(
            Send(
                id=busy_id, issue_key="w50", languages="en", status="planning", created_at=hour_ago
            )
        )
        await session.flush()
        for n, reader in enumerate(readers[:10]):
            session.add(
                Delivery(
                    dedupe_key=f"send:{send_id}:{reader.id}:en",
                    send_id=send_id,
                    subscriber_id=reader.id,
                    email=reader.email,
                    email_domain=reader.email_domain,
                    language="en",
                    status="pending" if n < 5 else "queued",
                    created_at=hour_ago,
                    updated_at=hour_ago,
                    queued_at=None if n < 5 else hour_ago,
                    due_at=None if n < 5 else hour_ago,
                )
            )
        # Its planner is at work: a row written a moment ago.
        session.add(
            Delivery(
                dedupe_key=f"send:{busy_id}:{readers[0].id}:en",
                send_id=busy_id,
                subscriber_id=readers[0].id,
                email=readers[0].email,
                email_domain=readers[0].email_domain,
                language="en",
                status="pending",
            )
        )
        await session.commit()
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=own_database.url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            dispatch_planning_stale_s=600.0,
            **FAST_LEDGER,
        )
        with structlog.testing.capture_logs() as logs:
            async with (
                dispatch_seed.RunningDispatcher(settings),
                dispatch_seed.RunningDispatcher(settings),
            ):
                done = await dispatch_seed.wait_for_send(sessions, send_id, timeout=60)
            copies = mta.handler.copies()
    scheduled = await _send(own_database, scheduled_id)
    busy = await _send(own_database, busy_id)
    redriven = [e["send_id"] for e in logs if e["event"] == "planning_redriven"]
    assert redriven == [send_id], f"re-planned: {redriven}"
    assert done.total == len(addresses), done.total
    assert copies == dict.fromkeys(addresses, 1), "every reader mailed once"
    assert scheduled.status == "scheduled", "a scheduled send is not stuck"
    assert busy.status == "planning", "a send still being planned was left to its planner"


async def test_a_stalled_send_is_re_planned_once_with_the_plan_its_row_records(
    vhost_url: str, own_database_url: str, tmp_path: Path
) -> None:
    """The re-published ``PlanSend`` carries what the send row holds (segments, fallbacks,
    intent, test address, local hour); the claim makes a second pass publish nothing."""
    engine = create_engine(own_database_url)
    sessions = session_factory(engine)
    issue_id, test_id = str(uuid.uuid4()), str(uuid.uuid4())
    hour_ago = utcnow() - timedelta(hours=1)
    connection = await connect(vhost_url)
    try:
        async with sessions() as session:
            session.add(
                Send(
                    id=issue_id,
                    issue_key="w51",
                    languages="ru,be",
                    fallbacks="be=ru",
                    intent="only_new",
                    local_time="09:00",
                    status="planning",
                    created_at=hour_ago,
                    started_at=hour_ago,
                )
            )
            session.add(
                Send(
                    id=test_id,
                    issue_key="w51",
                    languages="en",
                    intent="test",
                    test_to="editor@example.org",
                    status="planning",
                    created_at=hour_ago,
                )
            )
            await session.commit()
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=own_database_url,
            smtp_url="smtp://127.0.0.1:1",
            tmp_path=tmp_path,
        )
        assert isinstance(settings, DispatcherSettings)
        registry = CollectorRegistry()
        metrics = DispatcherMetrics.create(registry)
        planner = Planner(
            settings=settings,
            engine=engine,
            sessions=sessions,
            publisher=await Publisher.open(connection),
            raw_channel=None,
            metrics=metrics,
        )
        first = await Reconciler(engine=engine, planner=planner, metrics=metrics).reconcile()
        again = await Reconciler(engine=engine, planner=planner, metrics=metrics).reconcile()
        channel = await connection.channel()
        queue = await channel.declare_queue(DISPATCHER_PLANNER.name, passive=True)
        commands: dict[str, PlanSend] = {}
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            command = decode(PlanSend, message.body)
            assert command.send_id not in commands, f"{command.send_id} published twice"
            commands[command.send_id] = command
    finally:
        await connection.close()
        await engine.dispose()
    assert (first.replanned, again.replanned) == (2, 0)
    replanned = registry.get_sample_value(
        "newsletter_planning_recoveries_total", {"event": "replanned"}
    )
    assert replanned == 2, f"metric says {replanned}"
    issue, test = commands[issue_id], commands[test_id]
    assert (issue.issue_key, issue.segments, issue.fallbacks) == ("w51", ["ru", "be"], {"be": "ru"})
    assert issue.intent == "only_new"
    assert issue.test_to is None
    assert issue.schedule is not None
    assert issue.schedule.local_time == "09:00"
    assert (test.segments, test.test_to) == (["en"], "editor@example.org")
