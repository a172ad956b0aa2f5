"""A consumer the broker cancels (its queue deleted, say) comes back by itself.

aiormq issue 187: after a server-side ``basic.cancel`` a process could stay alive and consume
nothing. The dispatcher's robust channels recover the connection, declare the queue again
(with its arguments and bindings) and consume again; this test deletes the transactional queue
under a running dispatcher and then expects a confirmation mail to arrive.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aio_pika
import pytest
from aiormq.exceptions import ChannelNotFoundEntity

from shared.messaging.schemas import DeliverTransactional
from shared.messaging.topology import DELIVER_TRANSACTIONAL, DISPATCHER_TRANSACTIONAL, connect
from tests.support import dispatch_seed
from tests.support.test_mta import ScriptedMta

pytestmark = pytest.mark.integration


async def _consumers(connection: aio_pika.abc.AbstractConnection, queue: str) -> int | None:
    """The queue's consumer count, or None while the queue does not exist."""
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
    except ChannelNotFoundEntity:
        return None
    result = declared.declaration_result.consumer_count
    await channel.close()
    return result


async def test_a_queue_deleted_under_the_dispatcher_is_declared_and_consumed_again(
    vhost_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    queue = DISPATCHER_TRANSACTIONAL.name
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url, database_url=sqlite_url, smtp_url=mta.url, tmp_path=tmp_path
        )
        async with dispatch_seed.RunningDispatcher(settings):
            connection = await connect(vhost_url)
            try:
                assert await _consumers(connection, queue) == 1
                channel = await connection.channel()
                await channel.queue_delete(queue)  # the broker cancels the dispatcher's consumer
                await channel.close()

                deadline = asyncio.get_running_loop().time() + 30
                while (await _consumers(connection, queue)) != 1:
                    assert asyncio.get_running_loop().time() < deadline, "not consumed again"
                    await asyncio.sleep(0.2)

                await dispatch_seed.publish(
                    vhost_url,
                    DeliverTransactional(
                        kind="confirmation",
                        language="en",
                        subscriber_id=1,
                        to="after-cancel@example.org",
                        subject="Confirm",
                        html="<p>confirm</p>",
                        text="confirm\n",
                    ),
                    routing_key=DELIVER_TRANSACTIONAL,
                )
                await dispatch_seed.wait_until(
                    lambda: "after-cancel@example.org" in mta.handler.copies()
                )
            finally:
                await connection.close()
    assert mta.handler.copies()["after-cancel@example.org"] == 1
