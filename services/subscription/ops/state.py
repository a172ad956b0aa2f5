"""What the ops page keeps between requests and what one view of it holds.

:class:`OpsState` (one per app, ``app.state.ops``) owns the queue reader and its connection,
caches the last queue snapshot for :data:`QUEUE_CACHE_S` and the dead letters it peeked for
:data:`DEAD_LETTER_PEEK_EVERY_S`; :func:`ops_lifespan` also keeps the queue gauges of
``/metrics`` fresh while the app runs. :func:`build_summary` gathers one :class:`Summary`: the
page, its refreshed sections and ``/admin/summary.json`` all show one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import aio_pika
import structlog
from fastapi import FastAPI, Request
from prometheus_client import REGISTRY, CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession

from services.subscription.ops import dead_letters
from services.subscription.ops.dead_letters import DeadLetter
from services.subscription.ops.queue_metrics import QueueMetrics, export_periodically
from services.subscription.ops.queue_reader import QueueStatsReader, QueueStatsSettings
from services.subscription.ops.queue_snapshots import QueueSnapshot, QueueStatsError
from services.subscription.ops.read_models import (
    DeliveryError,
    Reputation,
    recent_errors,
    reputation,
)
from services.subscription.routes.bounces import ReportCounts, kept_report_counts
from shared.messaging.topology import DEAD_LETTER_QUEUE
from shared.send_progress import SendProgress, send_progress
from shared.settings import Settings
from shared.tasks import cancel_and_wait
from shared.warmup_ramp import Ramp, ramp_today

log = structlog.get_logger(__name__)

QUEUE_CACHE_S = 2.0
DEAD_LETTER_PEEK_EVERY_S = 30.0
REPUTATION_WINDOWS_H = (24, 24 * 7)


@dataclass
class OpsState:
    """What the ops routes keep between requests (one per app, on ``app.state.ops``)."""

    settings: Settings
    management_url: str = ""
    reader: QueueStatsReader | None = None
    registry: CollectorRegistry = REGISTRY
    metrics: QueueMetrics = field(init=False)
    snapshot: QueueSnapshot | None = None
    queue_error: str = ""
    dead_letters: list[DeadLetter] = field(default_factory=list)
    dead_letters_at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.metrics = QueueMetrics.on(self.registry)

    def queue_reader(self) -> QueueStatsReader:
        if self.reader is None:
            self.reader = QueueStatsReader(
                amqp_url=self.settings.amqp_url, management_url=self.management_url
            )
        return self.reader

    async def queues(self) -> QueueSnapshot | None:
        async with self.lock:
            fresh = self.snapshot and time.monotonic() - self.snapshot.taken_at < QUEUE_CACHE_S
            if not fresh:
                try:
                    self.snapshot = await self.queue_reader().read()
                    self.queue_error = ""
                    self.metrics.update(self.snapshot)
                except QueueStatsError as err:
                    self.queue_error = str(err)
            return self.snapshot

    async def peek_dead_letters(self) -> list[DeadLetter]:
        """Look at the oldest dead letters without taking them (at most every 30 s)."""
        if time.monotonic() - self.dead_letters_at < DEAD_LETTER_PEEK_EVERY_S:
            return self.dead_letters
        self.dead_letters_at = time.monotonic()
        try:
            connection = await self.queue_reader().connection()
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as err:
            log.warning("dead_letter_peek_failed", error=str(err))
            return self.dead_letters
        found = await dead_letters.peek(connection)
        if found is not None:
            self.dead_letters = found
        return self.dead_letters

    async def aclose(self) -> None:
        if self.reader is not None:
            await self.reader.aclose()
            self.reader = None


def _new_state(app: FastAPI, settings: Settings) -> OpsState:
    return OpsState(
        settings=settings,
        management_url=QueueStatsSettings().rabbitmq_management_url,
        registry=getattr(app.state, "registry", REGISTRY),
    )


@contextlib.asynccontextmanager
async def ops_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Keep the queue gauges fresh for ``/metrics`` while the app runs; close what was opened."""
    settings: Settings | None = getattr(app.state, "settings", None)
    if settings is None:  # an app without the subscription lifespan: nothing to watch
        yield
        return
    state = app.state.ops = _new_state(app, settings)
    stop = asyncio.Event()
    exporter = asyncio.create_task(
        export_periodically(
            reader=state.queue_reader(),
            metrics=state.metrics,
            interval_s=QueueStatsSettings().queue_stats_interval_s,
            stop=stop,
        )
    )
    try:
        yield
    finally:
        stop.set()
        await cancel_and_wait(exporter)
        await state.aclose()


def ops_state(request: Request, settings: Settings) -> OpsState:
    """The app's :class:`OpsState` (made on first use by an app without the ops lifespan)."""
    state: OpsState | None = getattr(request.app.state, "ops", None)
    if state is None:
        state = request.app.state.ops = _new_state(request.app, settings)
    return state


@dataclass
class Summary:
    sends: list[SendProgress]
    errors: list[DeliveryError]
    reputation: list[Reputation]
    queues: QueueSnapshot | None
    queue_error: str
    dead_letters: list[DeadLetter]
    generated_at: datetime
    kept_reports: ReportCounts | None = None
    warmup: Ramp | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "generated_at": self.generated_at.isoformat(),
            "sends": [s.as_dict() for s in self.sends],
            "errors": [e.as_dict() for e in self.errors],
            "reputation": [r.as_dict() for r in self.reputation],
            "queues": {
                "source": self.queues.source if self.queues else None,
                "error": self.queue_error,
                "queues": [asdict(q) for q in self.queues.queues] if self.queues else [],
            },
            "dead_letters": [d.as_dict() for d in self.dead_letters],
            "kept_reports": self.kept_reports.model_dump() if self.kept_reports else None,
            "warmup": (
                {
                    "domain": self.warmup.domain,
                    "day": self.warmup.day,
                    "caps": list(self.warmup.caps),
                    "cap_today": self.warmup.cap,
                    "today": [{"domain": d, "count": n} for d, n in self.warmup.today],
                }
                if self.warmup
                else None
            ),
        }


async def build_summary(*, state: OpsState, session: AsyncSession) -> Summary:
    """Everything one view of the ops page shows."""
    sends = await send_progress(session=session)
    errors = await recent_errors(session=session)
    rates = [await reputation(session=session, window_hours=h) for h in REPUTATION_WINDOWS_H]
    queues = await state.queues()
    dead = state.dead_letters
    dead_stat = queues.get(DEAD_LETTER_QUEUE) if queues else None
    if dead_stat is not None and dead_stat.ready:
        dead = await state.peek_dead_letters()
    elif dead_stat is not None:
        dead = state.dead_letters = []
    return Summary(
        sends=sends,
        errors=errors,
        reputation=rates,
        queues=queues,
        queue_error=state.queue_error,
        dead_letters=dead,
        generated_at=datetime.now(UTC),
        kept_reports=await kept_report_counts(session, hours=24),
        warmup=await ramp_today(
            session, settings=state.settings, now=datetime.now(UTC), busiest=10
        ),
    )
