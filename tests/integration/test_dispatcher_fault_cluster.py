"""A 3-node RabbitMQ cluster of the test's own, a node killed in the middle of a send.

The cluster is started for this module (``tests.support.rabbit_nodes``), never the machine's
broker. The work queues are quorum queues replicated on all three nodes; the topology is
declared through node 1, so node 1 leads them, while the dispatcher and the test's publishers
talk to node 0. Killing node 1 (``SIGKILL``) mid-send forces a leader election on every work
queue; killing node 2 takes a follower away. Either way the node is booted again, and the send
ends with every reader mailed, nobody lost, and duplicates at most the in-flight window.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db.tables.deliveries import TERMINAL_STATUSES
from shared.messaging.topology import DISPATCHER_DELIVERIES, DISPATCHER_PLANNER
from tests.support import dispatch_seed
from tests.support.own_database import OwnDatabase
from tests.support.rabbit_nodes import RabbitNodes, declared_vhost, wait_for_leader
from tests.support.test_mta import ScriptedMta

# Three RabbitMQ nodes of the test's own boot and cluster in the set-up: minutes beside two
# other workers on a loaded machine, so more than the suite's 300 s per test.
pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.timeout(900)]
# The fixtures own_database, own_database_url, one_node and cluster
pytest_plugins = ("tests.support.dispatch_fixtures",)
PREFETCH = 40
SEGMENTS = ["en", "be", "ru"]
PER_SEGMENT = 100  # 300 readers


async def send_while_a_node_dies(
    cluster: RabbitNodes,
    sessions: async_sessionmaker[AsyncSession],
    database_url: str,
    tmp_path: Path,
    *,
    victim: int,
    all_nodes: bool = False,
) -> tuple[str, dict[str, int], int, Path, str]:
    """Send to 300 readers, kill node ``victim`` once 60 were accepted, boot it again.

    With ``all_nodes`` the dispatcher is given every node's URL (node 0 first) and the victim
    stays down until the send is done: the send can only finish through another node.
    Returns (send id, copies per address, accepted when killed, log, leader before the kill).
    """
    await dispatch_seed.add_subscribers(sessions, PER_SEGMENT)
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, SEGMENTS)
    vhost = await declared_vhost(cluster, via=cluster[1])
    leader = await wait_for_leader(cluster, vhost, DISPATCHER_DELIVERIES.name)
    amqp_url = cluster[0].amqp_url(vhost)
    log = tmp_path / "dispatcher.log"
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=amqp_url,
            database_url=database_url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            dispatch_prefetch=PREFETCH,
            dispatch_rate_limit=40.0,  # 300 readers in 7.5 s: the kill falls mid-send
            dispatch_amqp_urls=",".join(n.amqp_url(vhost) for n in cluster.nodes)
            if all_nodes
            else "",
        )
        process = dispatch_seed.spawn_dispatcher(settings=settings, log_path=log)
        try:
            await dispatch_seed.wait_until(
                lambda: dispatch_seed.log_events(log, "dispatcher_started") > 0, timeout=30
            )
            await dispatch_seed.plan(amqp_url, send_id, SEGMENTS)
            await dispatch_seed.wait_until(lambda: len(mta.handler.accepted) >= 60, timeout=60)
            dead = cluster[victim]
            await asyncio.to_thread(dead.kill)
            killed_at = len(mta.handler.accepted)
            if dead.name == leader:
                # The survivors elect a new leader for the queue while the send goes on.
                await wait_for_leader(cluster, vhost, DISPATCHER_DELIVERIES.name, not_on=leader)
            if not all_nodes:
                await asyncio.to_thread(dead.restart)
            await dispatch_seed.wait_for_send(sessions, send_id, timeout=90)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
            if all_nodes:
                await asyncio.to_thread(cluster[victim].restart)  # for the module's other tests
        copies = dict(mta.handler.copies())
    return send_id, copies, killed_at, log, leader


async def check_everyone_mailed_once(
    sessions: async_sessionmaker[AsyncSession], send_id: str, copies: dict[str, int], log: Path
) -> int:
    audience = await dispatch_seed.expected_audience(sessions, SEGMENTS)
    assert len(audience) == PER_SEGMENT * len(SEGMENTS)
    rows = await dispatch_seed.deliveries(sessions, send_id)
    assert len(rows) == len(audience), "one delivery row per reader"
    assert all(d.status in TERMINAL_STATUSES for d in rows), "every delivery ended"
    sent = {d.email for d in rows if d.status == "sent"}
    assert sent == audience, f"{len(audience - sent)} readers not sent"
    lost = sorted(e for e in audience if copies.get(e, 0) < 1)
    assert not lost, f"{len(lost)} readers never reached the server"
    duplicates = sum(n - 1 for n in copies.values() if n > 1)
    assert duplicates <= PREFETCH, f"{duplicates} duplicates: more than the in-flight window"
    assert duplicates <= dispatch_seed.log_events(log, "possible_duplicate_resend")
    return duplicates


async def test_the_node_leading_the_quorum_queues_killed_mid_send_loses_nobody(
    cluster: RabbitNodes,
    own_database: OwnDatabase,
    tmp_path: Path,
) -> None:
    url, sessions = own_database.url, own_database.sessions
    send_id, copies, killed_at, log, leader = await send_while_a_node_dies(
        cluster, sessions, url, tmp_path, victim=1
    )
    assert leader == cluster[1].name, "the queues were declared through node 1, which leads"
    assert killed_at < PER_SEGMENT * len(SEGMENTS) - PREFETCH, "the node died mid-send"
    await check_everyone_mailed_once(sessions, send_id, copies, log)


async def test_a_follower_killed_mid_send_loses_nobody_and_mails_nobody_twice(
    cluster: RabbitNodes,
    own_database: OwnDatabase,
    tmp_path: Path,
) -> None:
    url, sessions = own_database.url, own_database.sessions
    send_id, copies, killed_at, log, leader = await send_while_a_node_dies(
        cluster, sessions, url, tmp_path, victim=2
    )
    assert leader != cluster[2].name, "node 2 only follows"
    assert killed_at < PER_SEGMENT * len(SEGMENTS) - PREFETCH, "the node died mid-send"
    duplicates = await check_everyone_mailed_once(sessions, send_id, copies, log)
    assert duplicates == 0, "no node holding a job in flight died, so nobody is mailed twice"


async def test_the_dispatchers_own_node_killed_mid_send_it_fails_over_and_loses_nobody(
    cluster: RabbitNodes,
    own_database: OwnDatabase,
    tmp_path: Path,
) -> None:
    """Given every node's URL, the dispatcher reconnects to another node when its own dies
    (``NEWSLETTER_DISPATCH_AMQP_URLS``); node 0 stays down until the send is done."""
    url, sessions = own_database.url, own_database.sessions
    send_id, copies, killed_at, log, leader = await send_while_a_node_dies(
        cluster, sessions, url, tmp_path, victim=0, all_nodes=True
    )
    assert leader != cluster[0].name, "node 0 only follows: the queues survive it"
    assert killed_at < PER_SEGMENT * len(SEGMENTS) - PREFETCH, "the node died mid-send"
    assert dispatch_seed.log_events(log, "broker_failover") >= 1, "it moved to another node"
    assert dispatch_seed.log_events(log, "broker_reconnected") >= 1
    await check_everyone_mailed_once(sessions, send_id, copies, log)


def test_the_work_queues_are_replicated_on_every_node(cluster: RabbitNodes) -> None:
    """The precondition of the tests above: quorum queues with a member on each node."""
    vhost = asyncio.run(declared_vhost(cluster, via=cluster[1]))
    out = cluster[0].ctl(
        "list_queues", "-p", vhost, "name", "type", "members", "--no-table-headers"
    )
    members = {
        line.split("\t")[0]: (line.split("\t")[1], line.split("\t")[2])
        for line in out.splitlines()
        if line.count("\t") == 2
    }
    for spec in (DISPATCHER_DELIVERIES, DISPATCHER_PLANNER):
        kind, on = members[spec.name]
        assert kind == "quorum", f"{spec.name} is {kind}"
        assert all(node.name in on for node in cluster.nodes), f"{spec.name} only on {on}"
