"""The shared AMQP contracts against the real broker.

A test that reads what reaches a topology queue (the renderer's, the dead letters) runs in a
vhost of its own: in the worker's shared vhost an earlier test's late message can be the one it
takes (CI once read another test's dead letter there)."""

from __future__ import annotations

import asyncio

import pytest

from shared.messaging import publisher as publisher_module
from shared.messaging.publisher import Publisher, PublishError
from shared.messaging.schemas import RenderTransactional, decode
from shared.messaging.topology import (
    COMMANDS,
    DEAD_LETTER_QUEUE,
    RENDER_TRANSACTIONAL,
    RENDERER_TRANSACTIONAL,
    connect,
    declare_topology,
)

pytestmark = pytest.mark.integration


async def test_declaring_the_topology_twice_is_harmless(amqp_url: str) -> None:
    connection = await connect(amqp_url)
    async with connection:
        await declare_topology(await connection.channel())


async def test_a_confirmed_command_reaches_its_queue(vhost_url: str) -> None:
    connection = await connect(vhost_url)
    async with connection:
        publisher = await Publisher.open(connection)
        command = RenderTransactional(
            kind="confirmation", language="be", subscriber_id=7, to="a@example.org"
        )
        await publisher.publish(command, routing_key=RENDER_TRANSACTIONAL)
        channel = await connection.channel()
        queue = await channel.get_queue(RENDERER_TRANSACTIONAL.name)
        incoming = await queue.get(timeout=5)
        assert incoming is not None
        await incoming.ack()
        assert incoming.type == "render_transactional"
        assert decode(RenderTransactional, incoming.body) == command


async def test_an_unroutable_message_is_an_error(amqp_url: str) -> None:
    connection = await connect(amqp_url)
    async with connection:
        publisher = await Publisher.open(connection)
        command = RenderTransactional(
            kind="welcome", language="en", subscriber_id=1, to="a@example.org"
        )
        with pytest.raises(PublishError):
            await publisher.publish(command, routing_key="no.such.route", exchange=COMMANDS)


async def test_a_rejected_message_is_dead_lettered_not_lost(vhost_url: str) -> None:
    connection = await connect(vhost_url)
    async with connection:
        publisher = await Publisher.open(connection)
        command = RenderTransactional(
            kind="goodbye", language="ru", subscriber_id=2, to="b@example.org"
        )
        await publisher.publish(command, routing_key=RENDER_TRANSACTIONAL)
        channel = await connection.channel()
        queue = await channel.get_queue(RENDERER_TRANSACTIONAL.name)
        incoming = await queue.get(timeout=5)
        assert incoming is not None
        await incoming.reject(requeue=False)
        dead = await channel.get_queue(DEAD_LETTER_QUEUE)
        for _ in range(300):
            found = await dead.get(timeout=5, fail=False)
            if found is not None:
                break
            await asyncio.sleep(0.1)
        assert found is not None, "rejected message did not reach the dead-letter queue"
        await found.ack()
        assert found.message_id == command.message_id
        assert found.headers["x-death"][0]["queue"] == RENDERER_TRANSACTIONAL.name


async def _publish_batch(
    publisher: Publisher, path: str, batch: list[RenderTransactional], routing_key: str
) -> None:
    """Publish by one of the three batch paths; raise PublishError if any message failed."""
    if path == "publish_each":
        failures = await publisher.publish_each(batch, routing_key=routing_key)
        assert len(failures) == len(batch)
        if any(failures):
            raise next(f for f in failures if f is not None)
    else:
        await publisher.publish_many(batch, routing_key=routing_key)


@pytest.mark.parametrize("path", ["batched", "one_by_one", "publish_each"])
async def test_a_batch_arrives_with_the_same_properties_and_an_unroutable_one_fails(
    vhost_url: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``publish_many`` (the planner's path, straight to aiormq: one write, or message by
    message on a channel it cannot batch on) and ``publish_each`` behave like ``publish``."""
    if path == "one_by_one":
        monkeypatch.setattr(publisher_module, "_batchable", lambda channel: False)
    connection = await connect(vhost_url)
    async with connection:
        publisher = await Publisher.open(connection)
        batch = [
            RenderTransactional(kind="welcome", language="ru", subscriber_id=n, to="b@example.org")
            for n in range(3)
        ]
        await _publish_batch(publisher, path, batch, RENDER_TRANSACTIONAL)
        channel = await connection.channel()
        queue = await channel.get_queue(RENDERER_TRANSACTIONAL.name)
        for command in batch:
            incoming = await queue.get(timeout=5)
            assert incoming is not None
            await incoming.ack()
            assert incoming.type == "render_transactional"
            assert incoming.message_id == command.message_id
            assert incoming.delivery_mode == 2  # persistent
            assert (incoming.headers or {})["schema_version"] == command.schema_version
            assert decode(RenderTransactional, incoming.body) == command
        with pytest.raises(PublishError):
            await _publish_batch(publisher, path, batch, "no.such.route")


async def test_a_large_batch_goes_out_as_one_write_and_leaves_nothing_pending(
    amqp_url: str,
) -> None:
    """The planner relays 1,000 jobs at a time: one write to the connection, every message
    confirmed, and no delivery tag or message id left behind on the channel afterwards; a
    batch with an unroutable route still fails, and the channel publishes on after it."""
    connection = await connect(amqp_url)
    async with connection:
        publisher = await Publisher.open(connection)
        channel = await publisher._channel.get_underlay_channel()
        queue_name = f"test.batch.{id(channel)}"
        declaring = await connection.channel()
        queue = await declaring.declare_queue(queue_name, auto_delete=True)
        await queue.bind(COMMANDS, routing_key=queue_name)
        await publisher.publish_many([], routing_key=queue_name)  # the exchange, declared once
        writes = 0
        put = channel.write_queue.put

        async def counted(frame: object) -> None:
            nonlocal writes
            writes += 1
            await put(frame)

        channel.write_queue.put = counted
        batch = [
            RenderTransactional(kind="welcome", language="en", subscriber_id=n, to="c@example.org")
            for n in range(1000)
        ]
        await publisher.publish_many(batch, routing_key=queue_name)
        assert writes == 1, f"the batch took {writes} writes"
        assert not channel.confirmations, "every delivery tag was confirmed and forgotten"
        assert not channel.message_id_delivery_tag, "no message id kept after its confirm"
        with pytest.raises(PublishError):
            await publisher.publish_many(batch[:3], routing_key="no.such.route")
        await publisher.publish_many(batch[:2], routing_key=queue_name)
        for _ in range(100):
            declared = await queue.declare()
            if declared.message_count == 1002:
                break
            await asyncio.sleep(0.05)
        assert declared.message_count == 1002, "every message of the batches that went reached it"
