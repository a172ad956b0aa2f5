"""Running handlers on queues: prefetch, in-flight tracking, unexpected errors, clean stop.

Each handler acks or rejects its own message. A handler that fails unexpectedly (the database
is down, say) has its message requeued after a pause; the quorum queue's delivery limit sends
a message that keeps failing to the dead-letter queue. A consumer attached to a
:class:`~services.dispatcher.database_gate.DatabaseGate` stops taking messages while the
database is away (``basic.cancel``; the messages in hand are still acked on the same channel)
and consumes again when it is back. Stopping cancels the consumers, waits for the messages in
flight, then lets the caller close the channels.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

from services.dispatcher.acks import BatchAcker
from services.dispatcher.database_gate import DatabaseGate
from shared.messaging.topology import QueueSpec, declare_queue

log = structlog.get_logger(__name__)
Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]
FAILURE_PAUSE_S = 1.0


@dataclass
class QueueConsumer:
    """One queue, one channel, one handler; keeps strong references for robust recovery."""

    spec: QueueSpec
    handler: Handler
    prefetch: int
    channel: AbstractChannel | None = None
    queue: AbstractQueue | None = None
    tag: str | None = None
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)
    acker: BatchAcker | None = None  # the handler acks through it (batched acks)
    gate: DatabaseGate | None = None  # pauses this consumer while the database is away
    paused: bool = False  # wanted: no consumer on the queue
    stopping: bool = False
    _switch: asyncio.Lock = field(default_factory=asyncio.Lock)
    _switching: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, connection: AbstractRobustConnection) -> None:
        self.channel = await connection.channel()
        await self.channel.set_qos(prefetch_count=self.prefetch)
        self.queue = await declare_queue(self.channel, self.spec)
        if self.acker is not None:
            self.acker.start()
        if self.gate is not None:
            self.gate.attach(self)  # paused at once if the database is away
        if not self.paused:
            self.tag = await self.queue.consume(self._on_message)
        log.info("consumer_started", queue=self.spec.name, prefetch=self.prefetch)

    def set_paused(self, paused: bool) -> None:
        """Stop (or resume) taking messages; the messages in hand are finished either way."""
        self.paused = paused
        task = asyncio.create_task(self._apply())
        self._switching.add(task)
        task.add_done_callback(self._switching.discard)

    async def _apply(self) -> None:
        """Bring the broker's consumer in line with ``paused`` (the last call wins); a switch
        that fails (the channel is being restored) is tried again until it holds."""
        async with self._switch:
            while self.queue is not None and not self.stopping:
                try:
                    if not self.paused and self.tag is None:
                        self.tag = await self.queue.consume(self._on_message)
                        log.info("consumer_resumed", queue=self.spec.name)
                    elif self.paused and self.tag is not None:
                        await self.queue.cancel(self.tag)
                        self.tag = None
                        log.warning("consumer_paused", queue=self.spec.name, reason="database")
                    return
                except (ChannelInvalidStateError, AMQPError, RuntimeError, TimeoutError) as err:
                    log.warning(
                        "consumer_switch_failed", queue=self.spec.name, error=str(err)[:200]
                    )
                await asyncio.sleep(FAILURE_PAUSE_S)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # aiormq cancels consumer tasks when their channel closes (a broker restart). The work
        # runs in a task of its own, which nothing cancels, so that an SMTP transaction in
        # progress completes and its outcome is committed; only the ack is lost, and the
        # redelivered copy finds the row. The prefetch bounds how many run at once.
        task = asyncio.create_task(self._run(message))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def _run(self, message: AbstractIncomingMessage) -> None:
        try:
            await self.handler(message)
        except (ChannelInvalidStateError, AMQPError) as err:
            # The channel went away (broker restart): the broker redelivers the message and the
            # ledger tells the next consumer what already happened.
            log.warning("ack_lost", queue=self.spec.name, error=str(err)[:200])
        except Exception as err:
            log.exception("handler_failed", queue=self.spec.name)
            if self.gate is not None:
                # Before its SMTP transaction (a claim, a lookup): the job goes back to the
                # queue, and waits there while the database is away.
                self.gate.report(err)
            await asyncio.sleep(FAILURE_PAUSE_S)
            try:
                await message.reject(requeue=True)
                if self.acker is not None:
                    self.acker.settled(message)
            except Exception as err:  # the channel may be gone as well
                log.warning("reject_lost", queue=self.spec.name, error=str(err)[:200])

    async def stop(self, *, drain_timeout: float = 30.0) -> None:
        self.stopping = True
        async with self._switch:
            if self.queue is not None and self.tag is not None:
                tag, self.tag = self.tag, None
                try:
                    await self.queue.cancel(tag)
                except Exception as err:
                    log.warning("consumer_cancel_failed", queue=self.spec.name, error=str(err))
        if self.in_flight:
            await asyncio.wait(set(self.in_flight), timeout=drain_timeout)
        if self.acker is not None:
            await self.acker.close()
        if self.channel is not None and not self.channel.is_closed:
            await self.channel.close()
