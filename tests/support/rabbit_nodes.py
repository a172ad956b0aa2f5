"""RabbitMQ nodes of the test's own for the fault tests (never the machine's broker).

The node management lives in ``benchmarks.rabbit_nodes`` (``newsletter bench faults`` uses it
too); this module adds what the tests need on top: a vhost with the suite's topology declared
through a chosen node (a quorum queue's leader is placed on the node its declaring client is
connected to), and waits on the cluster's view of its queues.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from benchmarks.rabbit_nodes import RabbitNode, RabbitNodes, own_nodes
from shared.messaging.topology import connect, declare_topology

__all__ = ["RabbitNode", "RabbitNodes", "declared_vhost", "own_nodes", "wait_for_leader"]


async def declared_vhost(nodes: RabbitNodes, *, via: RabbitNode | None = None) -> str:
    """A fresh vhost on these nodes with the topology declared through ``via``; its name."""
    name = f"nltest_{uuid.uuid4().hex[:10]}"
    await asyncio.to_thread(nodes.add_vhost, name)
    connection = await connect((via or nodes[0]).amqp_url(name))
    try:
        await declare_topology(await connection.channel())
    finally:
        await connection.close()
    return name


async def wait_for_leader(
    nodes: RabbitNodes,
    vhost: str,
    queue: str,
    *,
    not_on: str | None = None,
    timeout: float = 30.0,
) -> str:
    """The node leading ``queue``, once the cluster names one (not ``not_on``, if given)."""
    deadline = time.monotonic() + timeout
    while True:
        leaders = await asyncio.to_thread(nodes.queue_leaders, vhost)
        leader = leaders.get(queue, "")
        if "@" in leader and leader != not_on:
            return leader
        if time.monotonic() > deadline:
            raise AssertionError(f"{queue} has no leader (other than {not_on}) in {timeout}s")
        await asyncio.sleep(0.25)
