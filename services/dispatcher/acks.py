"""Acknowledging finished deliveries many at a time (``basic.ack`` with ``multiple``).

One ack frame per message is a socket write per message. :class:`BatchAcker` collects the
messages whose outcome is committed and acks, per channel, the longest run of consecutive
delivery tags that are all finished with one ``multiple=True`` frame: every ``every`` messages
or every ``interval_s``, whichever comes first. A tag still in flight (or not seen yet) stops the
run, so a message is never acked before its own state is committed; finished messages stuck
behind a slow one are acked one by one after ``straggler_s``. Rejected messages are reported
with :meth:`BatchAcker.settled` so the run can pass them. Unacked messages stay bounded by the
prefetch, so the duplicate window after a crash is unchanged; a channel that closed loses its
pending acks, and the broker redelivers those messages to find their state in the ledger.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

from shared.tasks import cancel_and_wait

log = structlog.get_logger(__name__)


@dataclass
class _ChannelAcks:
    channel: Any  # the aiormq channel the tags belong to
    low: int = 1  # the lowest tag not yet settled
    done: dict[int, float] = field(default_factory=dict)  # finished, not acked: tag -> when
    settled: set[int] = field(default_factory=set)  # acked or rejected on their own, >= low


class BatchAcker:
    def __init__(
        self, *, every: int = 100, interval_s: float = 0.05, straggler_s: float = 0.25
    ) -> None:
        self._every = every
        self._interval = interval_s
        self._straggler = straggler_s
        self._channels: dict[int, _ChannelAcks] = {}
        self._waiting = 0
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def ack(self, message: AbstractIncomingMessage) -> None:
        """The message's outcome is committed: ack it with the next batch."""
        state = self._state(message)
        tag = message.delivery_tag
        if state is None or tag is None:
            return  # its channel is gone: the broker redelivers it
        state.done[tag] = time.monotonic()
        self._waiting += 1
        if self._waiting >= self._every:
            await self.flush()

    def settled(self, message: AbstractIncomingMessage) -> None:
        """The message was rejected (or acked) directly: let the run of tags pass it."""
        state = self._state(message)
        tag = message.delivery_tag
        if state is not None and tag is not None and tag >= state.low:
            state.settled.add(tag)

    def _state(self, message: AbstractIncomingMessage) -> _ChannelAcks | None:
        try:
            channel = message.channel
        except ChannelInvalidStateError:
            return None
        state = self._channels.get(id(channel))
        if state is None or state.channel is not channel:
            state = _ChannelAcks(channel)
            self._channels[id(channel)] = state
        return state

    async def flush(self, *, everything: bool = False) -> None:
        async with self._lock:
            self._waiting = 0
            now = time.monotonic()
            for key, state in list(self._channels.items()):
                try:
                    await self._flush_channel(state, now=now, everything=everything)
                except (ChannelInvalidStateError, AMQPError, RuntimeError) as err:
                    log.warning("acks_lost", count=len(state.done), error=str(err)[:200])
                    del self._channels[key]

    async def _flush_channel(self, state: _ChannelAcks, *, now: float, everything: bool) -> None:
        last = None
        tag = state.low
        while tag in state.done or tag in state.settled:
            if state.done.pop(tag, None) is not None:
                last = tag
            else:
                state.settled.discard(tag)
            tag += 1
        state.low = tag
        if last is not None:
            await state.channel.basic_ack(delivery_tag=last, multiple=True)
        for tag, when in list(state.done.items()):
            if everything or now - when >= self._straggler:
                await state.channel.basic_ack(delivery_tag=tag, multiple=False)
                del state.done[tag]
                state.settled.add(tag)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception:
                log.exception("ack_flush_failed")

    async def close(self) -> None:
        """Ack everything finished, then stop."""
        await cancel_and_wait(self._task)
        self._task = None
        await self.flush(everything=True)
