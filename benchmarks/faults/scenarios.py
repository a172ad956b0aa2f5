"""The scenarios of ``newsletter bench faults``: issue 12's table, one fault each.

Each fault is a coroutine run beside the send once a share of the audience is sent
(``Scenario.trigger``). Faults act only on the drill's own nodes and database.
"""

from __future__ import annotations

import asyncio

from aiormq.exceptions import ChannelNotFoundEntity

from benchmarks.faults import seed
from benchmarks.faults.drill import DrillContext, Scenario
from shared.messaging.topology import DISPATCHER_DELIVERIES, connect

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


def _work_and_tier_queues(ctx: DrillContext) -> list[str]:
    leaders = ctx.nodes.queue_leaders()
    return sorted(
        name
        for name in leaders
        if name == DISPATCHER_DELIVERIES.name or name.startswith("dispatcher.retry.")
    )


async def purge_queues(ctx: DrillContext) -> None:
    """``dispatcher.deliveries`` and every delay tier purged in the middle of the send."""
    names = await asyncio.to_thread(_work_and_tier_queues, ctx)
    connection = await connect(ctx.nodes[ctx.dispatcher_node].amqp_url())
    purged = 0
    try:
        for name in names:
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(name, passive=True)
                result = await queue.purge()
                purged += int(result.message_count or 0)
            except ChannelNotFoundEntity:
                continue
            finally:
                if not channel.is_closed:
                    await channel.close()
    finally:
        await connection.close()
    ctx.note(f"{purged} messages purged from {len(names)} queues")


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


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("clean", "clean baseline"),
    Scenario("drop-data", "2 % of connections dropped mid-DATA", drop_data=0.02),
    Scenario(
        "db-terminate",
        "dispatcher's PostgreSQL backends terminated 10 times in 7 s",
        fault=terminate_backends,
    ),
    # A few 451s put jobs into the delay tiers, so that the purge empties those too.
    Scenario(
        "purge",
        "queues purged mid-send (deliveries and delay tiers; 5 % RCPTs 451)",
        defer_rcpt=0.05,
        fault=purge_queues,
        trigger=0.3,
        dispatcher_env=_NO_BREAKER,
    ),
    Scenario(
        "cluster-leader",
        "3-node cluster, node leading the queues and holding the tiers killed (5 % RCPTs 451)",
        nodes=3,
        declare_via=1,
        defer_rcpt=0.05,
        fault=kill_leader_node,
        dispatcher_env=_NO_BREAKER,
    ),
    Scenario("defer-451", "10 % of RCPTs answered 451", defer_rcpt=0.10),
    Scenario(
        "cluster-follower",
        "3-node cluster, a follower killed",
        nodes=3,
        declare_via=1,
        fault=kill_follower_node,
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
