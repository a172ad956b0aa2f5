"""Policy-storm alerts (``DomainPolicyAlerted``) open a domain's circuit breaker in every process.

The subscription service's feedback consumer publishes ``domain.policy_alerted`` on the events
exchange when policy bounces from one receiving domain pile up. Every dispatcher process must
pause that domain, so a shared work queue alone is not enough (each alert would reach one
consumer). Each process therefore declares its own exclusive, auto-delete queue
(``dispatcher.domain-alerts.<random>``) bound to the same key and applies what arrives there.

The durable shared queue ``dispatcher.domain-alerts`` of the topology is consumed as well, by
every process: it keeps alerts published while no dispatcher was running (a process that starts
applies those whose pause has not ended yet) and is drained so it never grows. An alert that
arrives through both queues, or is redelivered, is applied once: the listener remembers each
alert's ``message_id`` until its pause ends. (Comparing deadlines alone is not enough: the pause
is set on the monotonic clock from a wall-clock remainder, and the two clocks drift apart by
microseconds between two deliveries, so a second copy could look like a longer pause.)
The pause runs from the alert's ``created_at``; an alert whose pause already ended is ignored.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from services.dispatcher.flow import FlowControl
from shared.messaging.poison import decode_or_dead_letter
from shared.messaging.schemas import DomainPolicyAlerted
from shared.messaging.topology import (
    DISPATCHER_DOMAIN_ALERTS,
    DOMAIN_POLICY_ALERTED,
    EVENTS,
    declare_queue,
)

log = structlog.get_logger(__name__)
PREFETCH = 50
CANCEL_TIMEOUT_S = 5.0


class DomainAlertListener:
    """Applies ``DomainPolicyAlerted`` events to this process's :class:`FlowControl`."""

    def __init__(self, *, flow: FlowControl, wall_clock: Callable[[], float] = time.time) -> None:
        self._flow = flow
        self._wall_clock = wall_clock
        # Strong references: the robust connection restores queues and consumers through them.
        self._channel: AbstractChannel | None = None
        self._queues: list[tuple[AbstractQueue, str]] = []
        # message_id -> wall-clock end of its pause; pruned as pauses end, so it stays small.
        self._applied: dict[str, float] = {}
        self.private_queue_name = f"{DISPATCHER_DOMAIN_ALERTS.name}.{uuid.uuid4().hex[:12]}"

    async def start(self, connection: AbstractRobustConnection) -> None:
        channel = await connection.channel()
        self._channel = channel
        await channel.set_qos(prefetch_count=PREFETCH)
        private = await channel.declare_queue(
            self.private_queue_name, durable=False, exclusive=True, auto_delete=True
        )
        await private.bind(EVENTS, routing_key=DOMAIN_POLICY_ALERTED)
        shared = await declare_queue(channel, DISPATCHER_DOMAIN_ALERTS)
        for queue in (private, shared):
            self._queues.append((queue, await queue.consume(self._on_message)))
        log.info("domain_alerts_listening", queue=self.private_queue_name)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        alert = await decode_or_dead_letter(
            DomainPolicyAlerted, message, event="domain_alert_undecodable"
        )
        if alert is None:
            return
        self.apply(alert)
        await message.ack()

    def apply(self, alert: DomainPolicyAlerted) -> bool:
        """Open the alert's domain for what is left of its pause; True if that changed it."""
        now = self._wall_clock()
        self._applied = {key: end for key, end in self._applied.items() if end > now}
        ends = alert.created_at.timestamp() + alert.pause_s
        remaining = ends - now
        if remaining <= 0:
            log.info("domain_alert_expired", domain=alert.domain, alert_id=alert.message_id)
            return False
        if alert.message_id in self._applied:
            log.debug("domain_alert_seen", domain=alert.domain, alert_id=alert.message_id)
            return False
        self._applied[alert.message_id] = ends
        extended = self._flow.open_for(alert.domain.lower(), remaining)
        if extended:
            log.warning(
                "circuit_breaker_opened",
                domain=alert.domain,
                reason="policy_alert",
                pause_s=round(remaining, 1),
                policy_bounces=alert.policy_bounces,
                sample_status=alert.sample_status,
            )
        return extended

    async def stop(self) -> None:
        for queue, tag in self._queues:
            try:
                # Bounded: a broker that does not answer must not hold the shutdown.
                await queue.cancel(tag, timeout=CANCEL_TIMEOUT_S)
            except Exception as err:  # the channel may already be gone, or the broker slow
                log.warning("consumer_cancel_failed", queue=queue.name, error=str(err)[:200])
        self._queues.clear()
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        self._channel = None
