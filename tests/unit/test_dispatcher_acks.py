"""Batched acks: one multiple-ack per run of finished tags, never past a message in flight."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from aio_pika.abc import AbstractIncomingMessage

from services.dispatcher.acks import BatchAcker


@dataclass
class FakeChannel:
    acks: list[tuple[int, bool]] = field(default_factory=list)
    is_closed: bool = False

    async def basic_ack(self, *, delivery_tag: int, multiple: bool) -> None:
        self.acks.append((delivery_tag, multiple))


@dataclass
class FakeMessage:
    channel: Any
    delivery_tag: int


def message(channel: FakeChannel, tag: int) -> AbstractIncomingMessage:
    return cast(AbstractIncomingMessage, FakeMessage(channel, tag))


async def test_a_run_of_finished_tags_is_acked_with_one_frame_up_to_the_first_in_flight() -> None:
    channel = FakeChannel()
    acker = BatchAcker(every=1000, straggler_s=60)
    for tag in (1, 2, 3, 5, 6):  # 4 is still in flight
        await acker.ack(message(channel, tag))
    await acker.flush()
    assert channel.acks == [(3, True)]
    acker.settled(message(channel, 4))  # rejected on its own
    await acker.flush()
    assert channel.acks == [(3, True), (6, True)]


async def test_finished_messages_behind_a_slow_one_are_acked_alone_after_a_while() -> None:
    channel = FakeChannel()
    acker = BatchAcker(every=1000, straggler_s=0.0)
    await acker.ack(message(channel, 2))  # 1 is stuck in a slow SMTP transaction
    await acker.flush()
    assert channel.acks == [(2, False)]
    await acker.ack(message(channel, 1))
    await acker.flush()
    assert channel.acks == [(2, False), (1, True)], "the run passes the tag acked alone"


async def test_every_n_finished_messages_flush_at_once() -> None:
    channel = FakeChannel()
    acker = BatchAcker(every=3, straggler_s=60)
    for tag in (1, 2, 3):
        await acker.ack(message(channel, tag))
    assert channel.acks == [(3, True)]
