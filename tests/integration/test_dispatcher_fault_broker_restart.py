"""A RabbitMQ node of the test's own stopped, or killed, in the middle of a send.

The node is started for this module (``tests.support.rabbit_nodes``: own name, ports and data
folder), so the machine's broker is never touched. One test stops and starts the node's
application (``rabbitmqctl -n <own node> stop_app/start_app``); the other kills the node with
``SIGKILL`` and boots it again from its data folder. Afterwards every audience member has
exactly one terminal state, the SMTP server received every sent delivery, and duplicates stay
within the in-flight window and are logged.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db.tables.deliveries import TERMINAL_STATUSES
from tests.support import dispatch_seed
from tests.support.own_database import OwnDatabase
from tests.support.rabbit_nodes import RabbitNode, RabbitNodes, declared_vhost
from tests.support.test_mta import ScriptedMta

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
# The fixtures own_database, own_database_url, one_node and cluster
pytest_plugins = ("tests.support.dispatch_fixtures",)
PREFETCH = 40
SEGMENTS = ["en", "be", "ru"]
OUTAGE_S = 3.0
RATE = 20.0  # msg/s: 450 readers take 22 s; on a busy machine stop_app alone takes 10 s


def stop_and_start_app(node: RabbitNode, down: Callable[[], None]) -> None:
    """The broker's application down for OUTAGE_S (the Erlang node keeps running)."""
    try:
        node.stop_app()
        down()
        time.sleep(OUTAGE_S)  # the fault itself: how long the broker stays away
    finally:
        node.start_app()


def kill_and_boot(node: RabbitNode, down: Callable[[], None]) -> None:
    """``kill -9`` of the whole node, then a boot from its data folder."""
    node.kill()
    down()
    node.restart()


async def send_through_outage(
    nodes: RabbitNodes,
    sessions: async_sessionmaker[AsyncSession],
    database_url: str,
    tmp_path: Path,
    outage: Callable[[RabbitNode, Callable[[], None]], None],
) -> tuple[str, dict[str, int], int, Path]:
    """Send to 450 readers; run ``outage`` once 20 were accepted. The test MTA holds every
    later mail at DATA until the broker is down, so the fault lands mid-send however slowly
    the broker stops on a loaded machine.

    Returns (send id, copies per address, accepted when the broker went down, log).
    """
    await dispatch_seed.add_subscribers(sessions, 150)
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, SEGMENTS)
    vhost = await declared_vhost(nodes)
    amqp_url = nodes[0].amqp_url(vhost)
    log = tmp_path / "dispatcher.log"
    with ScriptedMta() as mta:
        mta.handler.hold_after(20)
        settings = dispatch_seed.make_settings(
            amqp_url=amqp_url,
            database_url=database_url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            dispatch_prefetch=PREFETCH,
            dispatch_rate_limit=RATE,
            smtp_timeout_s=120.0,  # a held mail waits for the test, never for a timeout
        )
        process = dispatch_seed.spawn_dispatcher(settings=settings, log_path=log)
        try:
            await dispatch_seed.wait_until(
                lambda: dispatch_seed.log_events(log, "dispatcher_started") > 0, timeout=30
            )
            await dispatch_seed.plan(amqp_url, send_id, SEGMENTS)
            await dispatch_seed.wait_until(lambda: mta.handler.waiting >= 1, timeout=60)
            down_at: list[int] = []

            def down() -> None:
                down_at.append(len(mta.handler.accepted))
                mta.handler.release()

            await asyncio.to_thread(outage, nodes[0], down)
            outage_at = down_at[0]
            await dispatch_seed.wait_for_send(sessions, send_id, timeout=120)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        copies = dict(mta.handler.copies())
    return send_id, copies, outage_at, log


async def check_everyone_mailed(
    sessions: async_sessionmaker[AsyncSession], send_id: str, copies: dict[str, int], log: Path
) -> int:
    audience = await dispatch_seed.expected_audience(sessions, SEGMENTS)
    rows = await dispatch_seed.deliveries(sessions, send_id)
    assert {d.email for d in rows} == audience
    assert len(rows) == len(audience), "one delivery row per reader"
    assert all(d.status in TERMINAL_STATUSES for d in rows), "every delivery ended"
    sent = {d.email for d in rows if d.status == "sent"}
    assert sent == audience, f"{len(audience - sent)} readers not sent"
    lost = [e for e in sent if copies.get(e, 0) < 1]
    assert not lost, f"{len(lost)} sent deliveries never reached the server"
    duplicates = sum(n - 1 for n in copies.values() if n > 1)
    assert duplicates <= PREFETCH, "duplicates stay within the in-flight window"
    assert duplicates <= dispatch_seed.log_events(log, "possible_duplicate_resend")
    return duplicates


async def test_the_broker_stopped_mid_send_loses_nobody(
    one_node: RabbitNodes, own_database: OwnDatabase, tmp_path: Path
) -> None:
    url, sessions = own_database.url, own_database.sessions
    send_id, copies, stopped_at, log = await send_through_outage(
        one_node, sessions, url, tmp_path, stop_and_start_app
    )
    assert stopped_at < 450 - PREFETCH, "the broker stopped in the middle of the send"
    await check_everyone_mailed(sessions, send_id, copies, log)


async def test_the_broker_killed_mid_send_and_booted_again_loses_nobody(
    one_node: RabbitNodes, own_database: OwnDatabase, tmp_path: Path
) -> None:
    url, sessions = own_database.url, own_database.sessions
    send_id, copies, killed_at, log = await send_through_outage(
        one_node, sessions, url, tmp_path, kill_and_boot
    )
    assert killed_at < 450 - PREFETCH, "the broker died in the middle of the send"
    await check_everyone_mailed(sessions, send_id, copies, log)
