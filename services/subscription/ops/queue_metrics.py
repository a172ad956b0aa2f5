"""The queue gauges on ``/metrics``: ``newsletter_queue_messages{queue,state}`` and
``newsletter_queue_consumers{queue}``, refreshed from a :class:`~.queue_reader.QueueStatsReader`
while the app runs (and on every ops page view)."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import ClassVar

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, Gauge

from services.subscription.ops.queue_reader import QueueStatsReader
from services.subscription.ops.queue_snapshots import QueueSnapshot, QueueStatsError

log = structlog.get_logger(__name__)


class QueueMetrics:
    """The two gauges. One instance per registry (see :meth:`on`): Prometheus refuses a name
    registered twice."""

    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, QueueMetrics]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Gauge(
            "newsletter_queue_messages",
            "Messages in a queue of the suite, by state (ready, unacked)",
            ["queue", "state"],
            registry=registry,
        )
        self.consumers = Gauge(
            "newsletter_queue_consumers",
            "Consumers attached to a queue of the suite",
            ["queue"],
            registry=registry,
        )

    @classmethod
    def on(cls, registry: CollectorRegistry = REGISTRY) -> QueueMetrics:
        found = cls._by_registry.get(registry)
        if found is None:
            found = cls._by_registry[registry] = cls(registry)
        return found

    def update(self, snapshot: QueueSnapshot) -> None:
        for stat in snapshot.queues:
            if not stat.exists:
                continue
            if stat.ready is not None:
                self.messages.labels(queue=stat.name, state="ready").set(stat.ready)
            if stat.unacked is not None:
                self.messages.labels(queue=stat.name, state="unacked").set(stat.unacked)
            if stat.consumers is not None:
                self.consumers.labels(queue=stat.name).set(stat.consumers)


async def export_periodically(
    *,
    reader: QueueStatsReader,
    metrics: QueueMetrics,
    interval_s: float,
    stop: asyncio.Event,
) -> None:
    """Refresh the queue gauges every ``interval_s`` until ``stop`` is set; never raises."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        if stop.is_set():
            return
        try:
            metrics.update(await reader.read())
        except QueueStatsError as err:
            log.warning("queue_stats_unavailable", error=str(err))
