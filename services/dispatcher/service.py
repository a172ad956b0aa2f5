"""The dispatcher's composition root: ``run(settings, stop=...)`` wires the real adapters.

One process runs the planner, the issue workers and the transactional worker (each can be
turned off with ``NEWSLETTER_DISPATCH_ROLES``), plus the control consumer and the probe server
(``/healthz``, ``/readyz`` checking the database, RabbitMQ and SMTP, ``/metrics``).
Everything is opened in one ``AsyncExitStack`` and closed in reverse order when ``stop`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack

import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dispatcher import broker_connection, ledger, scheduler
from services.dispatcher.acks import BatchAcker
from services.dispatcher.batching import Batcher
from services.dispatcher.composer import Composer, EditionCache
from services.dispatcher.consumers import QueueConsumer
from services.dispatcher.database_gate import DatabaseGate
from services.dispatcher.domain_alerts import DomainAlertListener
from services.dispatcher.erasures import ErasureHandler
from services.dispatcher.errors import DispatcherError
from services.dispatcher.flow import FlowControl
from services.dispatcher.heartbeat import ProcessHeartbeat
from services.dispatcher.metrics import DispatcherMetrics
from services.dispatcher.outbox import OutboxSweeper
from services.dispatcher.planner import Planner
from services.dispatcher.reconciler import QueueDepth, Reconciler
from services.dispatcher.scheduler import Scheduler, passes_counter
from services.dispatcher.sends import SendDirectory, set_status
from services.dispatcher.settings import DispatcherSettings
from services.dispatcher.smtp import SmtpPool
from services.dispatcher.transactional import TransactionalWorker
from services.dispatcher.worker import DeliveryWorker
from shared.clock import SYSTEM_CLOCK, Clock
from shared.db.engine import create_engine, session_factory
from shared.messaging.publisher import Publisher
from shared.messaging.schemas import SendControlled, UndecodableMessage, decode
from shared.messaging.topology import (
    DISPATCHER_CONTROL,
    DISPATCHER_DELIVERIES,
    DISPATCHER_ERASURES,
    DISPATCHER_PLANNER,
    DISPATCHER_TRANSACTIONAL,
    declare_topology,
)
from shared.probes import ProbeServer, probe_app
from shared.settings import Settings

log = structlog.get_logger(__name__)


def as_dispatcher_settings(settings: Settings) -> DispatcherSettings:
    if isinstance(settings, DispatcherSettings):
        return settings
    return DispatcherSettings(**settings.model_dump(by_alias=False))


async def run(
    settings: Settings,
    *,
    stop: asyncio.Event,
    registry: CollectorRegistry | None = None,
    serve_probes: bool = True,
    clock: Clock = SYSTEM_CLOCK,
) -> None:
    """Run the dispatcher until ``stop`` is set, then close everything."""
    config = as_dispatcher_settings(settings)
    registry = registry if registry is not None else CollectorRegistry()
    metrics = DispatcherMetrics.create(registry)
    roles = config.roles
    async with AsyncExitStack() as stack:
        engine = create_engine(
            config.database_url, pool_size=10, custom_plans=True, quick_ping=True
        )
        stack.push_async_callback(engine.dispose)
        sessions = session_factory(engine)
        connection = await broker_connection.connect(config.broker_urls)
        stack.push_async_callback(connection.close)
        await _declare_topology(connection)
        publisher = await Publisher.open(connection)
        stack.push_async_callback(publisher.close)
        raw_channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        stack.push_async_callback(raw_channel.close)

        # Its signing process stops after the consumers (callbacks run last pushed, first run).
        composer = stack.enter_context(contextlib.closing(Composer(settings=config)))
        sends = SendDirectory(sessions=sessions)
        issue_pool, tx_pool = _smtp_pools(config)
        stack.push_async_callback(issue_pool.close)
        stack.push_async_callback(tx_pool.close)

        finisher = _send_finisher(engine, stack)
        owner = (await _heartbeat(config, engine, stack)).process_id
        claims, results = _ledger_batchers(
            config, engine, finisher, owner=owner, clock=clock
        )  # started
        stack.push_async_callback(results.close)
        stack.push_async_callback(claims.close)

        gate = _database_gate(config, engine, stack)
        consumers: list[QueueConsumer] = []
        stack.push_async_callback(_stop_all, consumers)

        control = ControlHandler(engine=engine, sends=sends)
        consumers += _every_process_consumers(engine, control)
        if "transactional" in roles:
            tx = TransactionalWorker(
                settings=config,
                sessions=sessions,
                composer=composer,
                pool=tx_pool,
                publisher=publisher,
                raw_channel=raw_channel,
                metrics=metrics,
                gate=gate,
                owner=owner,
            )
            consumers.append(_transactional_consumer(config, tx, gate))
        if "deliveries" in roles:
            flow = await _flow_control(config, connection=connection, stack=stack)
            worker = DeliveryWorker(
                settings=config,
                composer=composer,
                editions=EditionCache(sessions=sessions, composer=composer),
                sends=sends,
                pool=issue_pool,
                flow=flow,
                publisher=publisher,
                raw_channel=raw_channel,
                claims=claims,
                results=results,
                metrics=metrics,
                acks=(
                    acks := BatchAcker(
                        every=config.dispatch_ack_every, interval_s=config.dispatch_ack_interval_s
                    )
                ),
                gate=gate,
                clock=clock,
            )
            consumers.append(
                QueueConsumer(
                    DISPATCHER_DELIVERIES,
                    worker.handle,
                    prefetch=config.dispatch_prefetch,
                    acker=acks,
                    gate=gate,
                )
            )
        if "planner" in roles:
            planner = Planner(
                settings=config,
                engine=engine,
                sessions=sessions,
                publisher=publisher,
                raw_channel=raw_channel,
                metrics=metrics,
                clock=clock,
            )
            consumers.append(_planner_consumer(config, planner, control, stack, connection))
            _scheduler(config, planner, stack, registry)
        for consumer in consumers:
            await consumer.start(connection)

        if serve_probes:
            probes = _probe_server(
                config, registry=registry, sessions=sessions, connection=connection, pool=issue_pool
            )
            await probes.start()
            stack.push_async_callback(probes.stop)
        log.info("dispatcher_started", roles=sorted(roles))
        await stop.wait()
        log.info("dispatcher_stopping")


def _send_finisher(engine: AsyncEngine, stack: AsyncExitStack) -> ledger.SendFinisher:
    finisher = ledger.SendFinisher(engine)
    stack.push_async_callback(finisher.close)
    return finisher


def _transactional_consumer(
    config: DispatcherSettings, tx: TransactionalWorker, gate: DatabaseGate
) -> QueueConsumer:
    return QueueConsumer(
        DISPATCHER_TRANSACTIONAL,
        tx.handle,
        prefetch=max(4, config.transactional_smtp_connections * 2),
        gate=gate,
    )


def _database_gate(
    config: DispatcherSettings, engine: AsyncEngine, stack: AsyncExitStack
) -> DatabaseGate:
    """Retries outcome writes through database hiccups; pauses intake while it is away."""
    gate = DatabaseGate(
        engine=engine,
        initial_delay_s=config.dispatch_db_retry_initial_s,
        max_delay_s=config.dispatch_db_retry_max_s,
    )
    stack.push_async_callback(gate.close)
    return gate


async def _heartbeat(
    config: DispatcherSettings, engine: AsyncEngine, stack: AsyncExitStack
) -> ProcessHeartbeat:
    """This process's heartbeat, stopped after everything opened later: its claims are its
    own until its work is drained."""
    heartbeat = ProcessHeartbeat(
        engine=engine, interval_s=config.dispatch_heartbeat_s, stale_s=config.dispatch_owner_stale_s
    )
    await heartbeat.start()
    stack.push_async_callback(heartbeat.close)
    return heartbeat


def _every_process_consumers(engine: AsyncEngine, control: ControlHandler) -> list[QueueConsumer]:
    """Consumers whatever the roles: send control (pause, resume, cancel) and GDPR erasures."""
    return [
        QueueConsumer(DISPATCHER_CONTROL, control.handle, prefetch=10),
        QueueConsumer(DISPATCHER_ERASURES, ErasureHandler(engine).handle, prefetch=10),
    ]


def _planner_consumer(
    config: DispatcherSettings,
    planner: Planner,
    control: ControlHandler,
    stack: AsyncExitStack,
    connection: AbstractRobustConnection,
) -> QueueConsumer:
    """The planner's queue, with the outbox sweeper beside it (parked deliveries go out again
    when their send resumes or their domain's breaker closes) and the reconciler (due
    retries, lost jobs, expired leases)."""
    sweeper = OutboxSweeper(
        engine=planner.engine,
        planner=planner,
        interval_s=config.dispatch_outbox_sweep_s,
        clock=planner.clock,
    )
    sweeper.start()
    stack.push_async_callback(sweeper.close)
    reconciler = Reconciler(
        engine=planner.engine,
        planner=planner,
        metrics=planner.metrics,
        queue_depth=work_queue_depth(connection, prefetch=config.dispatch_prefetch),
        schedule_clock=planner.clock.now,
    )
    reconciler.start()
    stack.push_async_callback(reconciler.close)
    control.on_resume = sweeper.wake
    return QueueConsumer(DISPATCHER_PLANNER, planner.handle, prefetch=1)


def _scheduler(
    config: DispatcherSettings,
    planner: Planner,
    stack: AsyncExitStack,
    registry: CollectorRegistry,
) -> Scheduler:
    """Starts scheduled sends when due, beside the planner (services/dispatcher/scheduler.py)."""
    found = Scheduler(
        sessions=planner.sessions,
        publisher=planner.publisher,
        clock=planner.clock,
        interval_s=config.schedule_poll_s,
        passes=passes_counter(registry),
    )
    found.start()
    stack.push_async_callback(found.close)
    return found


def work_queue_depth(connection: AbstractRobustConnection, *, prefetch: int) -> QueueDepth:
    """Ready jobs in ``dispatcher.deliveries`` and at most how many its consumers hold unacked
    (None if the broker cannot say), for the reconciler to tell a backlog from lost jobs."""

    async def depth() -> tuple[int, int] | None:
        try:
            channel = await connection.channel()
            try:
                declared = await channel.declare_queue(DISPATCHER_DELIVERIES.name, passive=True)
                result = declared.declaration_result
                return int(result.message_count or 0), int(result.consumer_count or 0) * prefetch
            finally:
                await channel.close()
        except Exception as err:
            log.warning("queue_depth_unknown", error=str(err)[:200])
            return None

    return depth


async def _stop_all(consumers: list[QueueConsumer]) -> None:
    await asyncio.gather(*(c.stop() for c in consumers), return_exceptions=True)


def _probe_server(
    config: DispatcherSettings,
    *,
    registry: CollectorRegistry,
    sessions: async_sessionmaker[AsyncSession],
    connection: AbstractRobustConnection,
    pool: SmtpPool,
) -> ProbeServer:
    async def check_database() -> None:
        async with sessions() as session:
            await session.execute(text("SELECT 1"))

    async def check_broker() -> None:
        if connection.is_closed:
            raise ConnectionError("RabbitMQ connection is closed")

    return ProbeServer(
        probe_app(
            {"database": check_database, "rabbitmq": check_broker, "smtp": pool.check},
            registry,
        ),
        host=config.http_host,
        port=config.dispatcher_probe_port,
    )


class ControlHandler:
    """``SendControlled`` events: forget the cached status; on resume, maybe finish the send
    and have the outbox sweeper publish its parked deliveries (when this process plans)."""

    def __init__(self, *, engine: AsyncEngine, sends: SendDirectory) -> None:
        self._engine = engine
        self._sends = sends
        self.on_resume: Callable[[], None] | None = None

    async def handle(self, message: AbstractIncomingMessage) -> None:
        try:
            event = decode(SendControlled, message.body)
        except UndecodableMessage:
            await message.reject(requeue=False)
            return
        if event.apply:
            await apply_control(self._engine, event)
        self._sends.forget(event.send_id)
        if event.action == "resume":
            await ledger.finish_if_complete(self._engine, send_id=event.send_id)
            if self.on_resume is not None:
                self.on_resume()
        await message.ack()


async def apply_control(engine: AsyncEngine, event: SendControlled) -> None:
    """Cancel or reschedule a send for another service (the renderer's admin API): the send
    row is the dispatcher's to write."""
    sessions = session_factory(engine)
    try:
        if event.action == "reschedule" and event.start_at is not None:
            await scheduler.reschedule(
                sessions, send_id=event.send_id, at=event.start_at, tz=event.time_zone
            )
        elif event.action in {"cancel", "pause", "resume"}:
            await set_status(sessions, send_id=event.send_id, action=event.action)
    except DispatcherError as err:  # started meanwhile, or no such send: nothing to apply
        log.warning("send_control_not_applied", action=event.action, reason=str(err)[:200])


def _ledger_batchers(
    config: DispatcherSettings,
    engine: AsyncEngine,
    finisher: ledger.SendFinisher,
    *,
    owner: str,
    clock: Clock,
) -> tuple[Batcher[ledger.ClaimRequest, ledger.Claim], Batcher[ledger.Result, None]]:
    """Claims (leased, in this process's name; the reader's cadence read again as of
    ``clock``) and outcomes, each committed in batches (the batchers are started)."""

    async def claim_batch(items: Sequence[ledger.ClaimRequest]) -> list[ledger.Claim]:
        return await ledger.claim(
            engine,
            items,
            finisher=finisher,
            lease_s=config.dispatch_lease_s,
            owner=owner,
            owner_stale_s=config.dispatch_owner_stale_s,
            reader_consent=config.per_reader_analytics,
            schedule_now=clock.now(),
        )

    async def record_batch(items: Sequence[ledger.Result]) -> list[None]:
        return await ledger.record(engine, items, finisher=finisher)

    claims: Batcher[ledger.ClaimRequest, ledger.Claim] = Batcher(
        claim_batch,
        max_size=config.dispatch_ledger_batch,
        interval_s=config.dispatch_claim_interval_s,
    )
    results: Batcher[ledger.Result, None] = Batcher(
        record_batch,
        max_size=config.dispatch_ledger_batch,
        interval_s=config.dispatch_ledger_interval_s,
    )
    claims.start()
    results.start()
    return claims, results


async def _flow_control(
    config: DispatcherSettings, *, connection: AbstractRobustConnection, stack: AsyncExitStack
) -> FlowControl:
    """The workers' flow control, fed by policy-storm alerts (a queue of this process's own)."""
    flow = FlowControl(
        global_rate=config.dispatch_rate_limit,
        domain_concurrency=config.dispatch_domain_concurrency,
        domain_concurrency_floor=config.dispatch_domain_concurrency_floor,
        domain_rate=config.dispatch_domain_rate,
        breaker_threshold=config.dispatch_breaker_threshold,
        breaker_window_s=config.dispatch_breaker_window_s,
        breaker_cooldown_s=config.dispatch_breaker_cooldown_s,
        breaker_throttle_ratio=config.dispatch_breaker_throttle_ratio,
    )
    alerts = DomainAlertListener(flow=flow)
    await alerts.start(connection)
    stack.push_async_callback(alerts.stop)
    return flow


def _smtp_pools(config: DispatcherSettings) -> tuple[SmtpPool, SmtpPool]:
    """Issue mail and transactional mail each get their own connections."""
    issue_pool = SmtpPool(
        target=config.smtp, size=config.dispatch_smtp_connections, timeout=config.smtp_timeout_s
    )
    tx_pool = SmtpPool(
        target=config.smtp,
        size=config.transactional_smtp_connections,
        timeout=config.smtp_timeout_s,
    )
    return issue_pool, tx_pool


async def _declare_topology(connection: AbstractRobustConnection) -> None:
    channel = await connection.channel()
    try:
        await declare_topology(channel)
    finally:
        await channel.close()
