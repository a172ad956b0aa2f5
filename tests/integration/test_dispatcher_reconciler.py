"""The ledger decides, the broker only carries: leases, deadlines and the reconciler.

Real RabbitMQ (a vhost per test), SQLite and PostgreSQL, an SMTP server over a socket. Queues
are purged and unbound under a running dispatcher; every send must still end with each reader
mailed exactly once, without immediate retries to the receiving server and without held jobs
cycling through the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import structlog
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from typer.testing import CliRunner

from newsletter_cli.main import app as cli
from services.dispatcher import ledger
from services.dispatcher import sends as sends_module
from shared.db.engine import create_engine, session_factory
from shared.db.tables.deliveries import TERMINAL_STATUSES, Delivery, Send
from shared.db.tables.timestamps import UTCDateTime, utcnow
from shared.messaging.publisher import to_amqp
from shared.messaging.schemas import DeliverIssue, DomainPolicyAlerted
from shared.messaging.topology import (
    COMMANDS,
    DELIVER_ISSUE,
    DISPATCHER_DELIVERIES,
    DOMAIN_POLICY_ALERTED,
    EVENTS,
    RETRY_TIERS,
    connect,
)
from tests.support import dispatch_seed
from tests.support.test_mta import MtaScript, ScriptedMta

pytestmark = pytest.mark.integration
# The fixtures own_database, own_database_url, one_node and cluster
pytest_plugins = ("tests.support.dispatch_fixtures",)

_PROCESS = text(
    "INSERT INTO dispatcher_process (id, started_at, seen_at) VALUES (:id, :seen, :seen)"
).bindparams(bindparam("seen", type_=UTCDateTime()))
_DUE = text("UPDATE delivery SET due_at = :due WHERE id = :id").bindparams(
    bindparam("due", type_=UTCDateTime())
)
_LEASE_ONE = text(
    "UPDATE delivery SET status = 'sending', attempts = 1, lease_until = :lease, "
    "claimed_by = :owner WHERE id = :id"
).bindparams(bindparam("lease", type_=UTCDateTime()))

# Deadlines short enough for a test: a queued job not consumed within 1 s (plus 0.3 s) is lost.
FAST_LEDGER: dict[str, object] = {
    "dispatch_queued_deadline_s": 1.0,
    "dispatch_reconcile_grace_s": 0.3,
    "dispatch_reconcile_s": 0.3,
}


async def _ready_jobs(amqp_url: str, queue: str) -> int:
    connection = await connect(amqp_url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def _purge(amqp_url: str, queues: list[str]) -> int:
    connection = await connect(amqp_url)
    try:
        channel = await connection.channel()
        purged = 0
        for name in queues:
            queue = await channel.declare_queue(name, passive=True)
            result = await queue.purge()
            purged += int(getattr(result, "message_count", 0) or 0)
        return purged
    finally:
        await connection.close()


async def _set_bindings(amqp_url: str, *, bound: bool) -> None:
    """Bind or unbind the work queue of issue jobs and every delay tier: while unbound, the
    broker returns whatever is published to them (a publish that cannot be taken)."""
    connection = await connect(amqp_url)
    try:
        channel = await connection.channel()
        work = await channel.declare_queue(DISPATCHER_DELIVERIES.name, passive=True)
        tiers = [
            (await channel.declare_queue(tier.queue, passive=True), tier.exchange)
            for tier in RETRY_TIERS
        ]
        if bound:
            await work.bind(COMMANDS, routing_key=DELIVER_ISSUE)
            for queue, exchange in tiers:
                await queue.bind(exchange, routing_key="")
        else:
            await work.unbind(COMMANDS, routing_key=DELIVER_ISSUE)
            for queue, exchange in tiers:
                await queue.unbind(exchange, routing_key="")
    finally:
        await connection.close()


async def _plan_without_workers(
    settings: object, amqp_url: str, sessions: async_sessionmaker[AsyncSession], send_id: str
) -> int:
    """Plan the send with a planner-only dispatcher: every row queued, every job waiting."""
    planner_only = settings.model_copy(update={"dispatch_roles": "planner"})  # type: ignore[attr-defined]
    async with dispatch_seed.RunningDispatcher(planner_only):
        await dispatch_seed.plan(amqp_url, send_id, ["en"])
        counts: dict[str, int] = {}

        async def all_queued() -> bool:
            nonlocal counts
            counts = await dispatch_seed.status_counts(sessions, send_id)
            async with sessions() as session:
                send = await session.get(Send, send_id)
            return send is not None and send.status == "running" and set(counts) == {"queued"}

        await _until(all_queued)
    return counts["queued"]


async def _until(condition: object, *, timeout: float = 30.0) -> None:
    """Poll an async condition until it holds (or fail after ``timeout``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"condition not met in {timeout}s")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def engine_of(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _into_queue(amqp_url: str, queue: str, job: DeliverIssue) -> None:
    """Publish straight into a queue (the default exchange), whatever its bindings."""
    connection = await connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.default_exchange.publish(to_amqp(job), routing_key=queue)
    finally:
        await connection.close()


async def _row(sessions: async_sessionmaker[AsyncSession], delivery_id: int) -> Delivery:
    async with sessions() as session:
        row = await session.get(Delivery, delivery_id)
        assert row is not None
        return row


async def test_a_claimed_delivery_is_not_claimed_again_while_its_lease_runs(
    own_database_url: str,
) -> None:
    """A redelivered copy (the outcome write failed after the 250, the job was requeued) finds
    the row in ``sending`` under a live lease: not claimed, so not mailed twice. Once the lease
    has ended, a redelivered copy may take it."""
    engine = create_engine(own_database_url)
    sessions = session_factory(engine)
    key = f"lease:{uuid.uuid4()}"
    try:
        async with sessions() as session:
            row = Delivery(
                dedupe_key=key,
                send_id=None,
                subscriber_id=None,
                email="lease@example.org",
                email_domain="example.org",
                language="en",
                status="queued",
            )
            session.add(row)
            await session.commit()
            assert row.id is not None
            ident = row.id
        async with engine.begin() as connection:  # the claiming process, alive and beating
            await connection.execute(_PROCESS, {"id": "worker-a", "seen": utcnow()})
        first = await ledger.claim(
            engine, [ledger.ClaimRequest(ident, redelivered=False)], owner="worker-a"
        )
        again = await ledger.claim(
            engine, [ledger.ClaimRequest(ident, redelivered=True)], owner="worker-b"
        )
        leased = await _row(sessions, ident)
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE delivery SET lease_until = :lease WHERE id = :id").bindparams(
                    bindparam("lease", type_=UTCDateTime())
                ),
                {"lease": utcnow() - timedelta(seconds=1), "id": ident},
            )
        after_expiry = await ledger.claim(
            engine, [ledger.ClaimRequest(ident, redelivered=True)], owner="worker-b"
        )
        final = await _row(sessions, ident)
        # worker-b is killed: it stops beating, and after owner_stale_s its row is taken over
        # although its lease runs for another 15 minutes.
        async with engine.begin() as connection:
            await connection.execute(
                _PROCESS, {"id": "worker-b", "seen": utcnow() - timedelta(seconds=60)}
            )
        live_owner_gone = await ledger.claim(
            engine, [ledger.ClaimRequest(ident, redelivered=True)], owner="worker-c"
        )
        taken_over = await _row(sessions, ident)
    finally:
        await engine.dispose()
    assert first == [ledger.Claim(claimed=True)]
    assert again == [ledger.Claim(claimed=False, status="sending")], "live lease re-claimed"
    assert leased.lease_until is not None
    assert leased.lease_until > utcnow()
    assert leased.attempts == 1
    assert after_expiry == [ledger.Claim(claimed=True, reclaimed=True)]
    assert final.attempts == 2
    assert final.lease_until is not None
    assert final.lease_until > utcnow(), "the new claimer holds a new lease"
    assert final.claimed_by == "worker-b"
    assert live_owner_gone == [ledger.Claim(claimed=True, reclaimed=True)], "dead claimer kept it"
    assert taken_over.claimed_by == "worker-c"


async def test_purged_queues_mid_send_still_finish_with_every_reader_mailed_once(
    vhost_url: str, own_database_url: str, tmp_path: Path
) -> None:
    engine = create_engine(own_database_url)
    sessions = session_factory(engine)
    try:
        addresses = set(await dispatch_seed.add_subscribers(sessions, 60, languages=("en",)))
        send_id = str(uuid.uuid4())
        await dispatch_seed.add_editions(sessions, send_id, ("en",))
        # A greylisting server: deferrals are in flight when the queues go.
        with ScriptedMta(MtaScript(throttle_ratio=0.15)) as mta:
            settings = dispatch_seed.make_settings(
                amqp_url=vhost_url,
                database_url=own_database_url,
                smtp_url=mta.url,
                tmp_path=tmp_path,
                dispatch_rate_limit=30.0,
                dispatch_prefetch=4,
                **FAST_LEDGER,
            )
            async with dispatch_seed.RunningDispatcher(settings):
                await dispatch_seed.plan(vhost_url, send_id, ["en"])
                await dispatch_seed.wait_until(lambda: len(mta.handler.accepted) >= 10)
                purged = await _purge(
                    vhost_url,
                    [DISPATCHER_DELIVERIES.name, *(tier.queue for tier in RETRY_TIERS)],
                )
                await dispatch_seed.wait_for_send(sessions, send_id, timeout=60)
            copies = mta.handler.copies()
            throttled = mta.handler.replies["421"] + mta.handler.replies["451"]
        report = await sends_module.report(sessions, send_id=send_id)
        counts = await dispatch_seed.status_counts(sessions, send_id)
        # On the session's PostgreSQL database the segment also holds earlier tests' readers.
        audience = {d.email for d in await dispatch_seed.deliveries(sessions, send_id)}
    finally:
        await engine.dispose()
    assert purged > 0, "the queues held jobs when they were purged"
    assert throttled > 0, "some deliveries were deferred"
    assert set(counts) <= set(TERMINAL_STATUSES), counts
    assert counts.get("sent") == len(audience), counts
    assert addresses <= audience
    assert set(copies) == audience, "every reader was mailed"
    assert all(n == 1 for n in copies.values()), "nobody mailed twice"
    assert report.redriven >= purged, "every purged job was re-driven"


async def test_a_sending_row_whose_lease_ended_is_re_driven_and_mailed_once(
    vhost_url: str, own_database_url: str, tmp_path: Path
) -> None:
    """A worker died in the middle of a delivery (no outcome): its job is gone, its row stays
    ``sending``. A duplicate job is skipped while the lease runs; once it has ended the
    reconciler publishes the delivery again."""
    engine = create_engine(own_database_url)
    sessions = session_factory(engine)
    try:
        addresses = await dispatch_seed.add_subscribers(sessions, 3, languages=("en",))
        send_id = str(uuid.uuid4())
        await dispatch_seed.add_editions(sessions, send_id, ("en",))
        with ScriptedMta() as mta:
            settings = dispatch_seed.make_settings(
                amqp_url=vhost_url,
                database_url=own_database_url,
                smtp_url=mta.url,
                tmp_path=tmp_path,
                **FAST_LEDGER,
            )
            await _plan_without_workers(settings, vhost_url, sessions, send_id)
            rows = await dispatch_seed.deliveries(sessions, send_id)
            audience = {d.email for d in rows}  # PostgreSQL: earlier tests' readers too
            assert set(addresses) <= audience
            orphan, killed = rows[0], rows[1]
            assert orphan.id is not None
            assert killed.id is not None
            async with engine.begin() as connection:
                await connection.execute(
                    _LEASE_ONE,
                    {"lease": utcnow() + timedelta(seconds=5), "id": orphan.id, "owner": None},
                )
                # Claimed by a process that was killed (it never beat again): a lease of an
                # hour does not keep the row.
                await connection.execute(
                    _PROCESS, {"id": "killed-worker", "seen": utcnow() - timedelta(minutes=5)}
                )
                await connection.execute(
                    _LEASE_ONE,
                    {
                        "lease": utcnow() + timedelta(hours=1),
                        "id": killed.id,
                        "owner": "killed-worker",
                    },
                )
            with structlog.testing.capture_logs() as logs:
                async with dispatch_seed.RunningDispatcher(settings):
                    await dispatch_seed.wait_until(
                        lambda: set(mta.handler.copies()) >= audience - {orphan.email, killed.email}
                    )
                    during_lease = await _row(sessions, orphan.id)
                    await dispatch_seed.wait_for_send(sessions, send_id, timeout=30)
            copies = mta.handler.copies()
        final = await _row(sessions, orphan.id)
        final_killed = await _row(sessions, killed.id)
    finally:
        await engine.dispose()
    assert during_lease.status == "sending", "a duplicate job took a row under a live lease"
    assert copies == dict.fromkeys(audience, 1)
    assert final.status == "sent", final.status
    assert final.redriven == 1, final.redriven
    assert final_killed.status == "sent", final_killed.status
    assert final_killed.redriven == 1, "the killed claimer's row was re-driven once"
    assert any(
        e["event"] == "possible_duplicate_resend" and e.get("delivery_id") == orphan.id
        for e in logs
    )


async def test_a_deferral_the_broker_cannot_take_waits_in_the_outbox_not_at_the_server(
    vhost_url: str, sqlite_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """The server answers 451 while the broker takes no job for the work queue or the delay
    tiers: the delivery waits in the ledger, and the server sees no immediate retry."""
    [reader] = await dispatch_seed.add_subscribers(sessions, 1, languages=("en",))
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, ("en",))
    script = MtaScript(defer={reader})
    with ScriptedMta(script) as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=sqlite_url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            **FAST_LEDGER,
        )
        await _plan_without_workers(settings, vhost_url, sessions, send_id)
        [row] = await dispatch_seed.deliveries(sessions, send_id)
        assert row.id is not None
        # Keep the job out of the workers' way until the routes are gone (a dispatcher binds
        # its queue when it starts): taken out of the queue, put back straight into it.
        await _purge(vhost_url, [DISPATCHER_DELIVERIES.name])
        async with engine_of(sqlite_url) as engine, engine.begin() as connection:
            await connection.execute(_DUE, {"due": utcnow() + timedelta(hours=1), "id": row.id})
        job = DeliverIssue(
            delivery_id=row.id,
            send_id=send_id,
            subscriber_id=row.subscriber_id,
            to=row.email,
            language="en",
        )
        with structlog.testing.capture_logs() as logs:
            async with dispatch_seed.RunningDispatcher(settings):
                # Its consumers bind their queues as they start: unbind after that.
                await dispatch_seed.wait_until(
                    lambda: any(e["event"] == "dispatcher_started" for e in logs)
                )
                await _set_bindings(vhost_url, bound=False)
                await _into_queue(vhost_url, DISPATCHER_DELIVERIES.name, job)
                await dispatch_seed.wait_until(
                    lambda: (
                        mta.handler.replies["451"] >= 2
                        or sum(e["event"] == "outbox_relay_failed" for e in logs) >= 3
                    ),
                    timeout=20,
                )
                deferrals_while_unroutable = mta.handler.replies["451"]
                [parked] = await dispatch_seed.deliveries(sessions, send_id)
                script.defer.clear()
                await _set_bindings(vhost_url, bound=True)
                await dispatch_seed.wait_for_send(sessions, send_id, timeout=30)
        copies = mta.handler.copies()
    assert deferrals_while_unroutable == 1, "the server saw retries while the broker refused"
    assert parked.status == "pending", "the delivery waits in the outbox"
    assert copies == {reader: 1}
    [final] = await dispatch_seed.deliveries(sessions, send_id)
    assert final.status == "sent"
    assert final.retries == 1, "one deferral"
    assert final.attempts == 2, "two SMTP attempts in all"


async def test_jobs_held_by_an_open_breaker_wait_in_the_outbox_and_return_after_it(
    vhost_url: str, sqlite_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    held_domain, open_domain = "held.example", "open.example"
    addresses = await dispatch_seed.add_subscribers(
        sessions, 12, languages=("en",), domains=(held_domain, open_domain)
    )
    held = {a for a in addresses if a.endswith("@" + held_domain)}
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, ("en",))
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=sqlite_url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            **FAST_LEDGER,
        )
        with structlog.testing.capture_logs() as logs:
            async with dispatch_seed.RunningDispatcher(settings):
                # Made once the dispatcher runs: the pause counts from the alert's creation,
                # and a slow start on a loaded machine must not use it up.
                alert = DomainPolicyAlerted(
                    domain=held_domain, policy_bounces=5, window_s=60, threshold=5, pause_s=6
                )
                await dispatch_seed.publish(
                    vhost_url, alert, routing_key=DOMAIN_POLICY_ALERTED, exchange=EVENTS
                )
                await dispatch_seed.wait_until(
                    lambda: any(e.get("reason") == "policy_alert" for e in logs)
                )
                await dispatch_seed.plan(vhost_url, send_id, ["en"])
                await dispatch_seed.wait_until(
                    lambda: (
                        sum(e["event"] == "email_held" for e in logs) >= len(held)
                        and set(mta.handler.copies()) >= set(addresses) - held
                    )
                )
                read_at = utcnow()
                mailed_during_pause = set(mta.handler.copies())
                rows = {d.email: d for d in await dispatch_seed.deliveries(sessions, send_id)}
                queued_jobs = await _ready_jobs(vhost_url, DISPATCHER_DELIVERIES.name)
                tier_jobs = [await _ready_jobs(vhost_url, t.queue) for t in RETRY_TIERS]
                await dispatch_seed.wait_for_send(sessions, send_id, timeout=30)
        copies = mta.handler.copies()
    assert {rows[a].status for a in held} == {"pending"}, "held deliveries wait in the outbox"
    due = [rows[a].due_at for a in held]
    assert all(at is not None and at > read_at for at in due), "parked until the pause ends"
    assert not mailed_during_pause & held, "the held domain got nothing during its pause"
    assert queued_jobs == 0, "no held job waits in the work queue"
    assert tier_jobs == [0] * len(RETRY_TIERS), "no held job cycles through a delay tier"
    assert sum(e["event"] == "email_held" for e in logs) == len(held), "each job held once"
    assert copies == dict.fromkeys(addresses, 1), "held mail went out once after the pause"


def test_send_repair_re_drives_a_purged_sends_jobs_and_status_counts_them(
    vhost_url: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    send_id = str(uuid.uuid4())
    lost_since = utcnow() - timedelta(hours=1)

    async def seed() -> None:
        engine = create_engine(sqlite_url)
        async with session_factory(engine)() as session:
            session.add(Send(id=send_id, issue_key="w48", languages="en", status="running"))
            await session.flush()
            for n, status in enumerate(["queued", "queued", "queued", "sent"]):
                session.add(
                    Delivery(
                        dedupe_key=f"send:{send_id}:{n}",
                        send_id=send_id,
                        subscriber_id=n,
                        email=f"r{n}@example.org",
                        email_domain="example.org",
                        language="en",
                        status=status,
                        due_at=lost_since if status == "queued" else None,
                        queued_at=lost_since,
                    )
                )
            await session.commit()
        await engine.dispose()

    asyncio.run(seed())
    monkeypatch.setenv("NEWSLETTER_MODE", "test")
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("NEWSLETTER_AMQP_URL", vhost_url)
    runner = CliRunner()
    repaired = runner.invoke(cli, ["send", "repair", send_id])
    assert repaired.exit_code == 0, repaired.output
    assert "lost jobs re-driven 3" in repaired.output, repaired.output
    assert "jobs published 3" in repaired.output, repaired.output
    assert asyncio.run(_ready_jobs(vhost_url, DISPATCHER_DELIVERIES.name)) == 3
    again = runner.invoke(cli, ["send", "repair", send_id])
    assert again.exit_code == 0, again.output
    assert "lost jobs re-driven 0" in again.output, "a fresh job has a fresh deadline"
    status = runner.invoke(cli, ["send", "status", send_id])
    assert status.exit_code == 0, status.output
    assert "ledger: open=3 redriven=3 (3 deliveries)" in status.output, status.output
    assert re.search(r"^  en +4 +1 .* 25 %", status.output, re.M), status.output
    missing = runner.invoke(cli, ["send", "repair", "no-such-send"])
    assert missing.exit_code == 1
