"""Every exchange and queue of the suite, declared here and nowhere else.

Commands go to ``newsletter.commands`` (direct) with routing keys ``<verb>.<noun>``; events go
to ``newsletter.events`` (topic) with routing keys ``<aggregate>.<past_tense>``.

Work queues are durable quorum queues with a delivery limit and a dead-letter exchange
(``newsletter.dead``), so a handler that rejects, or a message that keeps killing its consumer,
ends in ``newsletter.dead-letters`` with its ``x-death`` history instead of vanishing.

Transactional retries wait in delay tiers: one fanout exchange and one classic queue per delay,
with a queue-level TTL that dead-letters back to ``newsletter.commands`` under the message's
original routing key (per-message TTLs only expire at the head of a queue, so one queue per
delay). Issue deliveries wait for their retry in the ledger instead (``delivery.due_at``, see
the dispatcher's reconciler): nothing of a send lives only in a queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue, ExchangeType

COMMANDS = "newsletter.commands"
EVENTS = "newsletter.events"
DEAD = "newsletter.dead"
DEAD_LETTER_QUEUE = "newsletter.dead-letters"

# Routing keys (commands)
RENDER_TRANSACTIONAL = "render.transactional"
RENDER_ISSUE = "render.issue"
DELIVER_TRANSACTIONAL = "deliver.transactional"
PLAN_SEND = "plan.send"
DELIVER_ISSUE = "deliver.issue"
# Routing keys (events)
BOUNCE_RECEIVED = "bounce.received"
UNSUBSCRIBE_REQUESTED = "unsubscribe.requested"
SEND_CONTROLLED = "send.controlled"
DOMAIN_POLICY_ALERTED = "domain.policy_alerted"
SUBSCRIBER_ERASED = "subscriber.erased"

DELIVERY_LIMIT = 5


@dataclass(frozen=True)
class QueueSpec:
    name: str
    exchange: str
    routing_keys: tuple[str, ...]
    quorum: bool = True
    arguments: dict[str, Any] = field(default_factory=dict)

    def declare_arguments(self) -> dict[str, Any]:
        args: dict[str, Any] = {"x-dead-letter-exchange": DEAD}
        if self.quorum:
            args["x-queue-type"] = "quorum"
            args["x-delivery-limit"] = DELIVERY_LIMIT
        args.update(self.arguments)
        return args


@dataclass(frozen=True)
class RetryTier:
    """A delay tier: messages published here come back to COMMANDS after ``delay_ms``."""

    label: str
    delay_ms: int

    @property
    def exchange(self) -> str:
        return f"newsletter.retry.{self.label}"

    @property
    def queue(self) -> str:
        return f"dispatcher.retry.{self.label}"


# The production schedule is 1m, 10m, 1h, 6h; the short tiers serve pauses (a held job looks
# again soon) and tests, which choose their schedule with NEWSLETTER_DISPATCH_RETRY_TIERS.
RETRY_TIERS: tuple[RetryTier, ...] = (
    RetryTier("1s", 1_000),
    RetryTier("10s", 10_000),
    RetryTier("1m", 60_000),
    RetryTier("10m", 600_000),
    RetryTier("1h", 3_600_000),
    RetryTier("6h", 21_600_000),
)

RENDERER_TRANSACTIONAL = QueueSpec("renderer.transactional", COMMANDS, (RENDER_TRANSACTIONAL,))
RENDERER_ISSUES = QueueSpec("renderer.issues", COMMANDS, (RENDER_ISSUE,))
DISPATCHER_TRANSACTIONAL = QueueSpec("dispatcher.transactional", COMMANDS, (DELIVER_TRANSACTIONAL,))
DISPATCHER_PLANNER = QueueSpec("dispatcher.planner", COMMANDS, (PLAN_SEND,))
DISPATCHER_DELIVERIES = QueueSpec("dispatcher.deliveries", COMMANDS, (DELIVER_ISSUE,))
DISPATCHER_CONTROL = QueueSpec("dispatcher.control", EVENTS, (SEND_CONTROLLED,))
SUBSCRIPTION_FEEDBACK = QueueSpec(
    "subscription.feedback", EVENTS, (BOUNCE_RECEIVED, UNSUBSCRIBE_REQUESTED)
)
# Policy storms per receiving domain, for the dispatchers' circuit breakers.
DISPATCHER_DOMAIN_ALERTS = QueueSpec("dispatcher.domain-alerts", EVENTS, (DOMAIN_POLICY_ALERTED,))
# GDPR erasures, so that the dispatcher forgets the addresses in its delivery rows.
DISPATCHER_ERASURES = QueueSpec("dispatcher.erasures", EVENTS, (SUBSCRIBER_ERASED,))
# The same erasures, so that the renderer deletes the reader's per-reader clicks.
RENDERER_ERASURES = QueueSpec("renderer.erasures", EVENTS, (SUBSCRIBER_ERASED,))

WORK_QUEUES: tuple[QueueSpec, ...] = (
    RENDERER_TRANSACTIONAL,
    RENDERER_ISSUES,
    DISPATCHER_TRANSACTIONAL,
    DISPATCHER_PLANNER,
    DISPATCHER_DELIVERIES,
    DISPATCHER_CONTROL,
    SUBSCRIPTION_FEEDBACK,
    DISPATCHER_DOMAIN_ALERTS,
    DISPATCHER_ERASURES,
    RENDERER_ERASURES,
)


async def declare_exchanges(channel: AbstractChannel) -> dict[str, AbstractExchange]:
    exchanges = {
        COMMANDS: await channel.declare_exchange(COMMANDS, ExchangeType.DIRECT, durable=True),
        EVENTS: await channel.declare_exchange(EVENTS, ExchangeType.TOPIC, durable=True),
        DEAD: await channel.declare_exchange(DEAD, ExchangeType.TOPIC, durable=True),
    }
    for tier in RETRY_TIERS:
        exchanges[tier.exchange] = await channel.declare_exchange(
            tier.exchange, ExchangeType.FANOUT, durable=True
        )
    return exchanges


async def declare_queue(channel: AbstractChannel, spec: QueueSpec) -> AbstractQueue:
    """Declare one work queue and its bindings (idempotent)."""
    queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.declare_arguments())
    for key in spec.routing_keys:
        await queue.bind(spec.exchange, routing_key=key)
    return queue


async def declare_topology(channel: AbstractChannel) -> None:
    """Declare everything: exchanges, work queues, delay tiers, the dead-letter queue."""
    await declare_exchanges(channel)
    for spec in WORK_QUEUES:
        await declare_queue(channel, spec)
    for tier in RETRY_TIERS:
        retry = await channel.declare_queue(
            tier.queue,
            durable=True,
            arguments={"x-message-ttl": tier.delay_ms, "x-dead-letter-exchange": COMMANDS},
        )
        await retry.bind(tier.exchange, routing_key="")
    dead = await channel.declare_queue(
        DEAD_LETTER_QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead.bind(DEAD, routing_key="#")


def all_queue_names() -> list[str]:
    return [
        *(spec.name for spec in WORK_QUEUES),
        *(tier.queue for tier in RETRY_TIERS),
        DEAD_LETTER_QUEUE,
    ]


async def connect(url: str) -> aio_pika.abc.AbstractRobustConnection:
    """A robust connection (reconnects and restores what was declared on it)."""
    return await aio_pika.connect_robust(url, timeout=10)
