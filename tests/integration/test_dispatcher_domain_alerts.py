"""A ``DomainPolicyAlerted`` event, through the real RabbitMQ, pauses that domain in every
dispatcher process: its mail is held (not lost, not failed) while other domains flow, and goes
out once the pause ends. The shared alerts queue is left empty."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import structlog
from aio_pika.abc import AbstractIncomingMessage

from shared.messaging.schemas import DomainPolicyAlerted
from shared.messaging.topology import (
    DEAD_LETTER_QUEUE,
    DISPATCHER_DOMAIN_ALERTS,
    DOMAIN_POLICY_ALERTED,
    EVENTS,
    SUBSCRIBER_ERASED,
    connect,
)
from tests.integration.renderer_harness import take
from tests.support import dispatch_seed
from tests.support.own_database import OwnDatabase
from tests.support.test_mta import ScriptedMta

# A database of each test's own: readers other tests left in the session's shared database
# would otherwise join its ``en`` send.
pytest_plugins = ("tests.support.dispatch_fixtures",)  # own_database
pytestmark = [pytest.mark.integration, pytest.mark.postgres]
PAUSED, OPEN = "paused.example", "open.example"
# Long enough for the open domain's mail to go out on a loaded machine; the checks below are
# on the MTA's accept times against the pause's end, not on how fast the test ran.
PAUSE_S = 15


async def shared_queue_depth(amqp_url: str) -> int:
    connection = await connect(amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(DISPATCHER_DOMAIN_ALERTS.name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def test_a_policy_alert_pauses_its_domain_in_every_process_while_others_flow(
    vhost_url: str,
    own_database: OwnDatabase,
    tmp_path: Path,
) -> None:
    sessions, postgres_url = own_database.sessions, own_database.url
    addresses = await dispatch_seed.add_subscribers(
        sessions, 12, languages=("en",), domains=(PAUSED, OPEN)
    )
    paused = {a for a in addresses if a.endswith("@" + PAUSED)}
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, ("en",))
    alert = DomainPolicyAlerted(
        domain=PAUSED, policy_bounces=5, window_s=60, threshold=5, pause_s=PAUSE_S
    )
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url, database_url=postgres_url, smtp_url=mta.url, tmp_path=tmp_path
        )
        second = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=postgres_url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            dispatch_roles="deliveries",
        )
        with structlog.testing.capture_logs() as logs:
            # Two processes on the same queues: each must see the alert, not just one of them.
            async with (
                dispatch_seed.RunningDispatcher(settings),
                dispatch_seed.RunningDispatcher(second),
            ):
                await dispatch_seed.publish(
                    vhost_url, alert, routing_key=DOMAIN_POLICY_ALERTED, exchange=EVENTS
                )
                await dispatch_seed.wait_until(
                    lambda: sum(e.get("reason") == "policy_alert" for e in logs) >= 2
                )
                await dispatch_seed.plan(vhost_url, send_id, ["en"])
                await dispatch_seed.wait_until(
                    lambda: set(mta.handler.copies()) >= set(addresses) - paused
                )
                during = await dispatch_seed.status_counts(sessions, send_id)
                await dispatch_seed.wait_for_send(sessions, send_id, timeout=60)
        copies = mta.handler.copies()
        with mta.handler.lock:
            accepted = list(mta.handler.accepted)
    applied = [e for e in logs if e.get("reason") == "policy_alert"]
    assert len(applied) == 2, f"each of the two processes opened the breaker once: {applied}"
    pause_ends = alert.created_at.timestamp() + PAUSE_S
    early = [a.rcpt for a in accepted if a.rcpt in paused and a.at < pause_ends]
    assert not early, f"the paused domain got mail before its pause ended: {early}"
    flowing = [a.rcpt for a in accepted if a.rcpt not in paused and a.at < pause_ends]
    assert flowing, "the other domain's mail flowed during the pause"
    assert during.get("failed", 0) == during.get("deferred", 0) == 0, during
    assert any(e["event"] == "email_held" for e in logs), "the paused domain's jobs were held"
    rows = {d.email: d.status for d in await dispatch_seed.deliveries(sessions, send_id)}
    assert rows == dict.fromkeys(addresses, "sent"), "held mail went out after the pause"
    assert copies == dict.fromkeys(addresses, 1), "exactly one copy each"
    assert await shared_queue_depth(vhost_url) == 0, "the shared alerts queue was drained"


async def test_poison_alerts_and_erasures_are_dead_lettered_and_the_dispatcher_carries_on(
    vhost_url: str, own_database: OwnDatabase, tmp_path: Path
) -> None:
    """A body that is not the event's schema, on the alert and the erasure queues: dead-lettered
    with its body, logged, and a valid alert behind it still opens the breaker."""
    import aio_pika

    postgres_url = own_database.url
    poison = {DOMAIN_POLICY_ALERTED: uuid.uuid4().hex, SUBSCRIBER_ERASED: uuid.uuid4().hex}
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url, database_url=postgres_url, smtp_url=mta.url, tmp_path=tmp_path
        )
        with structlog.testing.capture_logs() as logs:
            async with dispatch_seed.RunningDispatcher(settings):
                connection = await connect(vhost_url)
                try:
                    channel = await connection.channel(publisher_confirms=True)
                    events = await channel.get_exchange(EVENTS)
                    for key, message_id in poison.items():
                        await events.publish(
                            aio_pika.Message(
                                b'{"domain": 5, "subscriber_id": []}', message_id=message_id
                            ),
                            routing_key=key,
                        )
                    dead = {}
                    for key, message_id in poison.items():

                        def same_id(m: AbstractIncomingMessage, wanted: str = message_id) -> bool:
                            return m.message_id == wanted

                        dead[key] = await take(connection, DEAD_LETTER_QUEUE, same_id)
                    alert = DomainPolicyAlerted(  # its pause counts from now
                        domain=PAUSED, policy_bounces=5, window_s=60, threshold=5, pause_s=PAUSE_S
                    )
                    await dispatch_seed.publish(
                        vhost_url, alert, routing_key=DOMAIN_POLICY_ALERTED, exchange=EVENTS
                    )
                    await dispatch_seed.wait_until(
                        lambda: any(e.get("reason") == "policy_alert" for e in logs)
                    )
                finally:
                    await connection.close()
    assert all(dead.values()), f"not dead-lettered: {[k for k, v in dead.items() if not v]}"
    events_logged = {e["event"] for e in logs}
    assert {"domain_alert_undecodable", "erasure_event_rejected"} <= events_logged, logs
