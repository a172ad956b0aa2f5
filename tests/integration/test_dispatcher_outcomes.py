"""Outcomes against a misbehaving SMTP server: bounces, policy refusals, throttling, drops,
stalls; duplicate jobs; the transactional path; test sends; pause, resume and cancel."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import structlog
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dispatcher import sends as sends_module
from shared.addresses import address_hash
from shared.db.tables.deliveries import TERMINAL_STATUSES, Delivery, Send
from shared.db.tables.subscribers import Subscriber, Suppression
from shared.messaging.schemas import (
    BounceReceived,
    DeliverIssue,
    DeliverTransactional,
    PlanSend,
    SendControlled,
    decode,
)
from shared.messaging.topology import (
    BOUNCE_RECEIVED,
    DELIVER_ISSUE,
    DELIVER_TRANSACTIONAL,
    EVENTS,
    PLAN_SEND,
    SEND_CONTROLLED,
    connect,
)
from tests.support import dispatch_seed
from tests.support.test_mta import MtaScript, ScriptedMta

pytestmark = pytest.mark.integration


async def _messages_in(amqp_url: str, queue: str) -> int:
    connection = await connect(amqp_url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()


def _events(logs: list[dict[str, object]], event: str) -> int:
    return sum(1 for e in logs if e["event"] == event)


async def bounce_listener(amqp_url: str) -> tuple[object, list[BounceReceived]]:
    """A private queue bound to bounce events, to see what the dispatcher announces."""
    connection = await connect(amqp_url)
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(EVENTS, routing_key=BOUNCE_RECEIVED)
    events: list[BounceReceived] = []

    async def on_message(message: object) -> None:
        events.append(decode(BounceReceived, message.body))  # type: ignore[attr-defined]
        await message.ack()  # type: ignore[attr-defined]

    await queue.consume(on_message)
    return connection, events


async def test_a_faulty_server_leaves_every_subscriber_in_exactly_one_terminal_state(
    vhost_url: str, sqlite_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    addresses = await dispatch_seed.add_subscribers(sessions, 20)
    hard = set(addresses[0:3])
    policy = {addresses[3]}
    stalled = {addresses[4]}
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, ("en", "be", "ru"))
    script = MtaScript(
        hard_bounce=hard,
        policy_reject=policy,
        throttle_ratio=0.2,
        drop_ratio=0.05,
        stall_data=stalled,
        stall_seconds=3.0,
    )
    connection, bounces = await bounce_listener(vhost_url)
    try:
        with ScriptedMta(script) as mta:
            settings = dispatch_seed.make_settings(
                amqp_url=vhost_url, database_url=sqlite_url, smtp_url=mta.url, tmp_path=tmp_path
            )
            with structlog.testing.capture_logs() as logs:
                async with dispatch_seed.RunningDispatcher(settings):
                    await dispatch_seed.plan(vhost_url, send_id, ["en", "be", "ru"])
                    await dispatch_seed.wait_for_send(sessions, send_id, timeout=90)
            copies = mta.handler.copies()
            replies = dict(mta.handler.replies)
    finally:
        await connection.close()  # type: ignore[attr-defined]
    rows = {d.email: d for d in await dispatch_seed.deliveries(sessions, send_id)}
    assert set(rows) == set(addresses)
    assert all(d.status in TERMINAL_STATUSES for d in rows.values())
    assert {rows[a].status for a in hard} == {"bounced"}
    assert rows[addresses[3]].status == "failed", "policy refusal: failed, not suppressed"
    assert rows[addresses[4]].status == "unknown", "timeout after DATA: unknown, not resent"
    assert copies[addresses[4]] == 1
    sent = {a for a, d in rows.items() if d.status == "sent"}
    assert sent == set(addresses) - hard - policy - stalled
    assert all(copies[a] == 1 for a in sent), "every sent delivery arrived exactly once"
    assert replies.get("421", 0) + replies.get("451", 0) > 0, "the server did throttle"
    assert any(d.attempts > 1 for d in rows.values()), "throttled deliveries were retried"
    assert sorted(e.recipient for e in bounces) == sorted(hard)
    assert all(e.bounce_class == "hard" and e.status == "5.1.1" for e in bounces)
    assert any(entry["event"] == "email_deferred" for entry in logs)


async def test_the_same_job_delivered_twice_is_sent_once_and_logged(
    vhost_url: str, sqlite_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    addresses = await dispatch_seed.add_subscribers(sessions, 3, languages=("en",))
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, ("en",))
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url, database_url=sqlite_url, smtp_url=mta.url, tmp_path=tmp_path
        )
        with structlog.testing.capture_logs() as logs:
            async with dispatch_seed.RunningDispatcher(settings):
                await dispatch_seed.plan(vhost_url, send_id, ["en"])
                await dispatch_seed.wait_for_send(sessions, send_id)
                first = (await dispatch_seed.deliveries(sessions, send_id))[0]
                assert first.id is not None
                duplicate = DeliverIssue(
                    delivery_id=first.id,
                    send_id=send_id,
                    subscriber_id=first.subscriber_id,
                    to=first.email,
                    language="en",
                )
                for _ in range(2):
                    await dispatch_seed.publish(vhost_url, duplicate, routing_key=DELIVER_ISSUE)
                await dispatch_seed.wait_until(
                    lambda: _events(logs, "duplicate_job_skipped") >= 2, timeout=60
                )
        copies = mta.handler.copies()
    assert copies == {a: 1 for a in addresses}
    assert _events(logs, "duplicate_job_skipped") == 2


async def test_a_confirmation_travels_its_own_queue_and_is_recorded_once(
    vhost_url: str, sqlite_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    command = DeliverTransactional(
        kind="confirmation",
        language="be",
        subscriber_id=42,
        to="new.reader@example.org",
        subject="Пацвердзіце падпіску",
        html='<html lang="be"><a href="https://x.example/confirm?token=abc">Пацвердзіць</a></html>',
        text="Пацвердзіце:\nhttps://x.example/confirm?token=abc\n",
        list_unsubscribe_url="https://x.example/unsubscribe/one-click?token=def",
    )
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url, database_url=sqlite_url, smtp_url=mta.url, tmp_path=tmp_path
        )
        with structlog.testing.capture_logs() as logs:
            async with dispatch_seed.RunningDispatcher(settings):
                for _ in range(2):  # the same command twice: one mail
                    await dispatch_seed.publish(
                        vhost_url, command, routing_key=DELIVER_TRANSACTIONAL
                    )
                # both commands handled: one sent, the other found its ledger row taken
                await dispatch_seed.wait_until(
                    lambda: (
                        _events(logs, "email_sent") + _events(logs, "duplicate_job_skipped") >= 2
                    ),
                    timeout=60,
                )
        accepted = list(mta.handler.accepted)
    assert len(accepted) == 1
    mail = accepted[0].parsed()
    assert str(mail["Subject"]) == "Пацвердзіце падпіску"
    assert mail["Content-Language"] == "be"
    assert mail["List-Unsubscribe"].startswith(
        "<https://x.example/unsubscribe/one-click?token=def>"
    )
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "https://x.example/confirm?token=abc" in text.splitlines(), "the link on its own line"
    async with sessions() as session:
        from sqlmodel import select

        rows = (await session.exec(select(Delivery).where(Delivery.kind == "transactional"))).all()
    assert [(r.status, r.dedupe_key) for r in rows] == [("sent", f"tx:{command.message_id}")]


async def test_a_test_send_mails_each_edition_once_to_the_test_address_only(
    vhost_url: str, sqlite_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    await dispatch_seed.add_subscribers(sessions, 5)
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, ("en", "ru"))
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url, database_url=sqlite_url, smtp_url=mta.url, tmp_path=tmp_path
        )
        async with dispatch_seed.RunningDispatcher(settings):
            await dispatch_seed.publish(
                vhost_url,
                PlanSend(
                    send_id=send_id,
                    issue_key="w48",
                    segments=["en", "ru"],
                    test_to="editor@example.org",
                ),
                routing_key=PLAN_SEND,
            )
            await dispatch_seed.wait_for_send(sessions, send_id)
        accepted = list(mta.handler.accepted)
    assert [a.rcpt for a in accepted] == ["editor@example.org"] * 2
    subjects = sorted(str(a.parsed()["Subject"]) for a in accepted)
    assert subjects == sorted(f"[TEST] {dispatch_seed.SUBJECTS[lang]}" for lang in ("en", "ru"))


async def test_pause_holds_work_resume_never_resends_and_cancel_stops_the_rest(
    vhost_url: str, sqlite_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    addresses = await dispatch_seed.add_subscribers(sessions, 30, languages=("en",))
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, ("en",))
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=sqlite_url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            dispatch_rate_limit=5.0,  # slow enough to pause in the middle
        )
        async with dispatch_seed.RunningDispatcher(settings):
            await dispatch_seed.plan(vhost_url, send_id, ["en"])
            await dispatch_seed.wait_until(lambda: len(mta.handler.copies()) >= 5)
            await sends_module.set_status(sessions, send_id=send_id, action="pause")
            await dispatch_seed.publish(
                vhost_url,
                SendControlled(send_id=send_id, action="pause"),
                routing_key=SEND_CONTROLLED,
                exchange=EVENTS,
            )

            async def parked() -> bool:
                """The jobs in hand have settled: each delivery is sent or back in the outbox
                (``pending``), and no job is left in the queue."""
                counts = await dispatch_seed.status_counts(sessions, send_id)
                if not set(counts) <= {"sent", "pending"}:
                    return False
                return await _messages_in(vhost_url, "dispatcher.deliveries") == 0

            await dispatch_seed.eventually(parked, timeout=90, what="the paused send parked")
            during_pause = len(mta.handler.accepted)
            # Settled, so nothing may change now: watch for longer than the outbox takes to
            # find rows parked for its settle time (2 s) on its 1 s sweep, so a sweep that
            # wrongly relayed a paused send would be seen.
            await asyncio.sleep(3.5)
            assert len(mta.handler.accepted) == during_pause, "nothing is sent while paused"
            assert during_pause < 30
            counts = await dispatch_seed.status_counts(sessions, send_id)
            assert counts == {"sent": during_pause, "pending": 30 - during_pause}, counts
            assert await _messages_in(vhost_url, "dispatcher.deliveries") == 0
            await sends_module.set_status(sessions, send_id=send_id, action="resume")
            await dispatch_seed.publish(
                vhost_url,
                SendControlled(send_id=send_id, action="resume"),
                routing_key=SEND_CONTROLLED,
                exchange=EVENTS,
            )
            await dispatch_seed.wait_for_send(sessions, send_id)
        copies = mta.handler.copies()
    assert copies == {a: 1 for a in addresses}, "resume sent the rest, and nothing twice"
    report = await sends_module.report(sessions, send_id=send_id)
    assert report.status == "done"
    assert report.by_language == {"en": {"sent": 30}}


async def test_cancel_marks_what_has_not_gone_out_and_sends_nothing_more(
    vhost_url: str, sqlite_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    await dispatch_seed.add_subscribers(sessions, 30, languages=("en",))
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, ("en",))
    open_statuses = {"pending", "queued", "deferred", "sending"}

    async def settled() -> bool:
        """No delivery open any more and no job left waiting in the queue: whatever jobs the
        dispatcher still holds are in flight, and stopping it waits for them."""
        counts = await dispatch_seed.status_counts(sessions, send_id)
        if open_statuses & set(counts):
            return False
        return await _messages_in(vhost_url, "dispatcher.deliveries") == 0

    with ScriptedMta() as mta:
        # Five mails go out; the sixth and later wait at DATA, unanswered, until the cancel is
        # in: the test, not the machine's speed, decides how far the send got.
        mta.handler.hold_after(5)
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=sqlite_url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            smtp_timeout_s=120.0,  # a held mail waits for the test, never for a timeout
            # A job looks at its send's status once it has a slot of its domain: with two per
            # domain (three domains), at most six are past that look when the cancel comes.
            dispatch_domain_concurrency=2,
        )
        async with dispatch_seed.RunningDispatcher(settings):
            await dispatch_seed.plan(vhost_url, send_id, ["en"])
            await dispatch_seed.wait_until(lambda: mta.handler.waiting >= 1, timeout=90)

            async def running() -> bool:
                async with sessions() as session:
                    send = await session.get(Send, send_id)
                return send is not None and send.status == "running"

            # Mid-send, not mid-planning: the planner's last write (PLANNING -> RUNNING) is
            # made from the row as it read it, and could undo a cancel that came meanwhile.
            await dispatch_seed.eventually(running, timeout=90, what="the send running")
            await sends_module.set_status(sessions, send_id=send_id, action="cancel")
            # The dispatcher reads a send's status through a cache of STATUS_TTL_S: once that
            # has turned over, every read says cancelled. A lower bound, so a slow machine
            # only waits longer; nothing races it.
            await asyncio.sleep(sends_module.STATUS_TTL_S * 1.5)
            mta.handler.release()
            await dispatch_seed.eventually(
                settled, timeout=90, what="every delivery sent or cancelled, the queue drained"
            )
        copies = mta.handler.copies()
    assert await _messages_in(vhost_url, "dispatcher.deliveries") == 0, "no job was put back"
    rows = await dispatch_seed.deliveries(sessions, send_id)
    sent = {d.email for d in rows if d.status == "sent"}
    cancelled = {d.email for d in rows if d.status == "cancelled"}
    assert len(sent) + len(cancelled) == 30, {d.status for d in rows}
    # The jobs claimed before the cancel wait for a slot as ``sending`` rows; each looks at the
    # send again before its SMTP transaction and records itself cancelled. Only those already
    # in a transaction (held at DATA) go out after the cancel.
    assert len(sent) <= 5 + 6, f"{len(sent)} sent: more than the slots in flight at the cancel"
    assert len(cancelled) == 30 - len(sent)
    assert set(copies) == sent, "exactly the deliveries marked sent reached the server"
    assert set(copies.values()) == {1}, "and each of them once"


async def test_a_policy_storm_opens_one_domains_breaker_while_the_others_flow(
    vhost_url: str, sqlite_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    addresses = await dispatch_seed.add_subscribers(
        sessions, 30, languages=("en",), domains=("blocked.example", "open.example")
    )
    blocked = {a for a in addresses if a.endswith("@blocked.example")}
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, ("en",))
    with ScriptedMta(MtaScript(policy_reject=blocked)) as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=sqlite_url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            dispatch_breaker_threshold=3,
            dispatch_breaker_cooldown_s=2.0,
            dispatch_smtp_connections=2,
        )
        with structlog.testing.capture_logs() as logs:
            async with dispatch_seed.RunningDispatcher(settings):
                await dispatch_seed.plan(vhost_url, send_id, ["en"])
                await dispatch_seed.wait_for_send(sessions, send_id, timeout=60)
        copies = mta.handler.copies()
        refusals = mta.handler.replies["554"]
    rows = {d.email: d for d in await dispatch_seed.deliveries(sessions, send_id)}
    assert {rows[a].status for a in blocked} == {"failed"}, "policy: failed, not bounced"
    assert {a for a in addresses if a not in blocked} == set(copies), "the others all flowed"
    assert any(e["event"] == "circuit_breaker_opened" for e in logs)
    held = [e for e in logs if e["event"] == "email_held"]
    assert held, "while open, the domain's jobs were held without an attempt"
    assert refusals >= len(blocked)


async def test_a_delivery_deferred_until_its_retry_window_runs_out_ends_failed(
    vhost_url: str, sqlite_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """451 every time: retried through the 1 s tier until the (here 4 s) window runs out."""
    addresses = await dispatch_seed.add_subscribers(sessions, 3, languages=("en",))
    busy = addresses[0]
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, ("en",))
    with ScriptedMta(MtaScript(defer={busy})) as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=sqlite_url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            dispatch_retry_window_s=4.0,
        )
        with structlog.testing.capture_logs() as logs:
            async with dispatch_seed.RunningDispatcher(settings):
                await dispatch_seed.plan(vhost_url, send_id, ["en"])
                await dispatch_seed.wait_for_send(sessions, send_id, timeout=60)
        copies = mta.handler.copies()
    rows = {row.email: row for row in await dispatch_seed.deliveries(sessions, send_id)}
    assert copies == {a: 1 for a in addresses if a != busy}
    assert rows[busy].status == "failed"
    assert rows[busy].smtp_code == 451
    # Tried at 0 s and about every second after, not one attempt past the window.
    assert 3 <= rows[busy].attempts <= 6, rows[busy].attempts
    deferred = [e for e in logs if e["event"] == "email_deferred"]
    failed = [e for e in logs if e["event"] == "email_failed"]
    assert len(deferred) == rows[busy].attempts - 1
    assert len(failed) == 1


async def test_whoever_unsubscribes_or_is_suppressed_while_their_delivery_waits_is_not_mailed(
    vhost_url: str, sqlite_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """Two deliveries wait in the retry tier (451); meanwhile one reader unsubscribes and the
    other's address is suppressed. The retries find them gone: nobody is mailed after that."""
    addresses = await dispatch_seed.add_subscribers(sessions, 4, languages=("en",))
    leaving, suppressed = addresses[0], addresses[1]
    script = MtaScript(defer={leaving, suppressed})
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, ("en",))
    with ScriptedMta(script) as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url, database_url=sqlite_url, smtp_url=mta.url, tmp_path=tmp_path
        )
        async with dispatch_seed.RunningDispatcher(settings):
            await dispatch_seed.plan(vhost_url, send_id, ["en"])
            await dispatch_seed.wait_until(lambda: mta.handler.replies["451"] >= 2)
            async with sessions() as session:
                subscriber = (
                    await session.exec(select(Subscriber).where(Subscriber.email == leaving))
                ).one()
                subscriber.status = "unsubscribed"
                session.add(subscriber)
                session.add(Suppression(email_hash=address_hash(suppressed), reason="complaint"))
                await session.commit()
            script.defer.clear()  # the server would take them now
            await dispatch_seed.wait_for_send(sessions, send_id)
        copies = mta.handler.copies()
    rows = {row.email: row for row in await dispatch_seed.deliveries(sessions, send_id)}
    assert copies == {a: 1 for a in addresses[2:]}
    assert rows[leaving].status == "unsubscribed"
    assert rows[suppressed].status == "unsubscribed"
