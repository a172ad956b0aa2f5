"""The scenarios of ``newsletter bench faults``: issue 12's table, one fault each.

Each fault is a coroutine run beside the send once a share of the audience is sent
(``Scenario.trigger``). Faults act only on the drill's own nodes and database.
"""

from __future__ import annotations

import asyncio
import time

from aio_pika.abc import AbstractChannel
from aiormq.exceptions import ChannelNotFoundEntity

from benchmarks.faults import seed
from benchmarks.faults.drill import DrillContext, Scenario
from services.dispatcher.settings import DispatcherSettings
from shared.messaging.topology import DISPATCHER_DELIVERIES, RETRY_TIERS, connect

DEFAULT_OUTAGE_S = 30.0
# Where 451s only serve to fill the delay tiers, the breaker is kept out of the way, so that
# the tiers, not held jobs, carry the deferred mail through the fault under test.
_NO_BREAKER = (("NEWSLETTER_DISPATCH_BREAKER_THRESHOLD", "1000000"),)


async def terminate_backends(ctx: DrillContext) -> None:
    """The dispatcher's PostgreSQL backends terminated 10 times in 7 s."""
    conn = await seed.admin_connection()
    terminated = 0
    try:
        for _ in range(10):
            terminated += int(
                await conn.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = $1 AND application_name <> $2 AND pid <> pg_backend_pid()",
                    ctx.database_name,
                    seed.APPLICATION_NAME,
                )
            )
            await asyncio.sleep(0.7)  # the fault's own pace: 10 rounds in 7 s
    finally:
        await conn.close()
    ctx.note(f"{terminated} backends terminated in 10 rounds")


# The purge must meet jobs in the queue at any audience size: the dispatcher of that scenario
# sends at most this many messages a second, so the work queue stays full for a while (N/200
# seconds), and the fault waits until the queue holds PURGE_DEPTH_SHARE of the audience.
PURGE_RATE = 200
PURGE_DEPTH_SHARE = 0.1
PURGE_WAIT_S = 60.0


async def _ready(channel: AbstractChannel, name: str) -> int:
    queue = await channel.declare_queue(name, passive=True)
    return int(queue.declaration_result.message_count or 0)


async def purge_queues(ctx: DrillContext) -> None:
    """``dispatcher.deliveries`` and every delay tier purged in the middle of the send, once
    the work queue holds a tenth of the audience (or after ``PURGE_WAIT_S``, whatever it
    holds); the fault is staged only if the purge took messages."""
    names = [DISPATCHER_DELIVERIES.name, *(tier.queue for tier in RETRY_TIERS)]
    connection = await connect(ctx.nodes[ctx.dispatcher_node].amqp_url())
    purged: dict[str, int] = {}
    depth = 0
    try:
        channel = await connection.channel()
        wanted = max(1, int(PURGE_DEPTH_SHARE * ctx.audience))
        deadline = time.monotonic() + PURGE_WAIT_S
        while (depth := await _ready(channel, DISPATCHER_DELIVERIES.name)) < wanted:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)  # the fault's own polling pace
        for name in names:
            try:
                result = await (await channel.declare_queue(name, passive=True)).purge()
            except ChannelNotFoundEntity:
                channel = await connection.channel()
                continue
            if result.message_count:
                purged[name] = int(result.message_count)
    finally:
        await connection.close()
    total = sum(purged.values())
    ctx.staged = total > 0
    ctx.note(
        f"{total} messages purged at a work-queue depth of {depth} "
        f"({', '.join(f'{k}: {v}' for k, v in purged.items()) or 'none'})"
    )


def _leader_of_deliveries(ctx: DrillContext) -> str:
    return ctx.nodes.queue_leaders()[DISPATCHER_DELIVERIES.name]


async def _kill_for(ctx: DrillContext, index: int, what: str) -> None:
    node = ctx.nodes[index]
    await asyncio.to_thread(node.kill)
    ctx.note(f"{what} {node.short_name} killed for {ctx.outage_s:.0f}s")
    await asyncio.sleep(ctx.outage_s)  # the outage itself
    boot = await asyncio.to_thread(node.restart)
    ctx.note(f"{node.short_name} booted again in {boot:.1f}s")


async def kill_leader_node(ctx: DrillContext) -> None:
    """The node leading the work queues and holding the delay tiers killed for a while."""
    leaders = await asyncio.to_thread(ctx.nodes.queue_leaders)
    leader = leaders[DISPATCHER_DELIVERIES.name]
    tiers = sorted({v for k, v in leaders.items() if k.startswith("dispatcher.retry.")})
    if tiers != [leader]:
        ctx.note(f"delay tiers on {tiers}, deliveries led by {leader}")
    index = next(i for i, n in enumerate(ctx.nodes.nodes) if n.name == leader)
    if index == ctx.dispatcher_node:
        ctx.note("the leader is the dispatcher's own node")
    await _kill_for(ctx, index, "leader")


async def kill_follower_node(ctx: DrillContext) -> None:
    """A node that neither leads the work queues nor carries the dispatcher's connection."""
    leader = await asyncio.to_thread(_leader_of_deliveries, ctx)
    index = next(
        i for i, n in enumerate(ctx.nodes.nodes) if n.name != leader and i != ctx.dispatcher_node
    )
    await _kill_for(ctx, index, "follower")


async def kill_dispatchers_node(ctx: DrillContext) -> None:
    """The node the dispatcher is connected to (a follower of the work queues) killed for a
    while: the dispatcher, given every node's URL, carries on through another node."""
    await _kill_for(ctx, ctx.dispatcher_node, "the dispatcher's node")


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("clean", "clean baseline"),
    Scenario("drop-data", "2 % of connections dropped mid-DATA", drop_data=0.02),
    Scenario(
        "db-terminate",
        "dispatcher's PostgreSQL backends terminated 10 times in 7 s",
        fault=terminate_backends,
    ),
    # A few 451s leave deferred rows waiting while the queues are purged; the rate keeps the
    # work queue full enough for the purge to meet jobs at any N.
    Scenario(
        "purge",
        "queues purged mid-send (deliveries and delay tiers; 5 % RCPTs 451)",
        defer_rcpt=0.05,
        fault=purge_queues,
        trigger=0.05,
        dispatcher_env=(*_NO_BREAKER, ("NEWSLETTER_DISPATCH_RATE_LIMIT", str(PURGE_RATE))),
    ),
    Scenario(
        "cluster-leader",
        "3-node cluster, node leading the queues and holding the tiers killed (5 % RCPTs 451)",
        nodes=3,
        declare_via=1,
        defer_rcpt=0.05,
        fault=kill_leader_node,
        dispatcher_env=_NO_BREAKER,
        # the node holding the jobs in flight dies: up to the prefetch may be mailed twice
        duplicates_allowed=int(DispatcherSettings.model_fields["dispatch_prefetch"].default),
    ),
    Scenario("defer-451", "10 % of RCPTs answered 451", defer_rcpt=0.10),
    Scenario(
        "cluster-follower",
        "3-node cluster, a follower killed",
        nodes=3,
        declare_via=1,
        fault=kill_follower_node,
    ),
    Scenario(
        "cluster-own",
        "3-node cluster, the node the dispatcher is connected to killed",
        nodes=3,
        declare_via=1,
        fault=kill_dispatchers_node,
    ),
)


def by_key(keys: list[str] | None) -> list[Scenario]:
    if not keys:
        return list(SCENARIOS)
    known = {s.key: s for s in SCENARIOS}
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise ValueError(f"unknown scenarios {unknown}; known: {sorted(known)}")
    return [known[k] for k in keys]
