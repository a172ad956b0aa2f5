"""``newsletter queues`` and the queue reader against the real broker (passive declares).

The local broker has no management plugin, so the reader must fall back to passive declares;
a private vhost keeps the counts this module's own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractChannel

from services.subscription.ops.queue_reader import QueueStatsReader
from services.subscription.ops.rabbitmqctl import local_rabbitmqctl
from shared.messaging import topology
from tests.support import infra

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def vhost_url() -> Iterator[str]:
    """A private vhost with the topology and 3 jobs waiting in ``dispatcher.deliveries``."""

    async def three_jobs(channel: AbstractChannel) -> None:
        for n in range(3):
            await channel.default_exchange.publish(
                aio_pika.Message(b"{}", message_id=f"job-{n}"),
                routing_key=topology.DISPATCHER_DELIVERIES.name,
            )

    name, url = infra.declared_vhost(three_jobs)
    try:
        yield url
    finally:
        infra.delete_vhost(name)


async def test_reader_falls_back_to_passive_declares(vhost_url: str) -> None:
    names = [*topology.all_queue_names(), "no.such.queue"]
    # Port 9 (discard) refuses connections: the management API is "not enabled".
    async with QueueStatsReader(
        amqp_url=vhost_url, management_url="http://127.0.0.1:9", names=names
    ) as reader:
        first = await reader.read()
        consumer_connection = await aio_pika.connect(vhost_url)
        try:
            channel = await consumer_connection.channel()
            queue = await channel.get_queue(topology.RENDERER_ISSUES.name)
            await queue.consume(lambda _: None, no_ack=False)  # type: ignore[arg-type, return-value]
            second = await reader.read()
        finally:
            await consumer_connection.close()

    assert first.source == "amqp"
    deliveries = first.get(topology.DISPATCHER_DELIVERIES.name)
    assert deliveries is not None
    assert deliveries.ready == 3
    assert deliveries.consumers == 0
    assert deliveries.unacked is None, "a passive declare cannot tell unacked messages"
    missing = first.get("no.such.queue")
    assert missing is not None
    assert not missing.exists
    assert all(q.exists for q in first.queues if q.name != "no.such.queue")
    issues = second.get(topology.RENDERER_ISSUES.name)
    assert issues is not None
    assert issues.consumers == 1
    again = second.get(topology.DISPATCHER_DELIVERIES.name)
    assert again is not None
    assert again.depth_rate == 0.0, "the second sample derives a rate from the first"


async def test_after_a_management_failure_the_reader_waits_before_asking_again(
    vhost_url: str,
) -> None:
    asked: list[httpx.Request] = []

    def unavailable(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(503)

    async with QueueStatsReader(
        amqp_url=vhost_url, transport=httpx.MockTransport(unavailable)
    ) as reader:
        sources = [(await reader.read()).source for _ in range(3)]
    assert sources == ["amqp", "amqp", "amqp"]
    assert len(asked) == 1, "the API is asked again only after RETRY_FAILED_SOURCE_S"


def run_cli(*args: str, amqp_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NEWSLETTER_AMQP_URL": amqp_url, "NEWSLETTER_MODE": "test"}
    command = [sys.executable, "-m", "newsletter_cli.main", "queues", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


async def test_rabbitmqctl_knows_unacked_messages(vhost_url: str) -> None:
    binary = local_rabbitmqctl(vhost_url)
    assert binary is not None, "the broker of the tests runs on this machine"
    connection = await aio_pika.connect(vhost_url)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(topology.DISPATCHER_DELIVERIES.name)
        taken = await queue.get(no_ack=False, timeout=5)  # held, not acked
        async with QueueStatsReader(
            amqp_url=vhost_url, management_url="none", rabbitmqctl=binary
        ) as reader:
            # Quorum queues report their counts to rabbitmqctl with the periodic statistics
            # (every 5 s by default): wait for a sample that has seen the held message.
            for _ in range(120):
                snapshot = await reader.read()
                stat = snapshot.get(topology.DISPATCHER_DELIVERIES.name)
                if stat is not None and stat.unacked:
                    break
                await asyncio.sleep(0.5)
        await taken.reject(requeue=True)
    finally:
        await connection.close()
    assert snapshot.source == "rabbitmqctl"
    stat = snapshot.get(topology.DISPATCHER_DELIVERIES.name)
    assert stat is not None
    assert (stat.ready, stat.unacked) == (2, 1)
    assert local_rabbitmqctl("amqp://guest:guest@rabbit.example.org/") is None


def test_cli_prints_every_queue_as_json(vhost_url: str) -> None:
    done = run_cli("--json", "--management-url", "none", "--no-rabbitmqctl", amqp_url=vhost_url)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["source"] == "amqp"
    by_name = {q["name"]: q for q in data["queues"]}
    assert list(by_name) == topology.all_queue_names()
    assert by_name[topology.DISPATCHER_DELIVERIES.name]["ready"] == 3


def test_cli_watch_prints_one_json_line_per_sample_until_interrupted(vhost_url: str) -> None:
    env = {**os.environ, "NEWSLETTER_AMQP_URL": vhost_url, "NEWSLETTER_MODE": "test"}
    command = [sys.executable, "-m", "newsletter_cli.main", "queues", "--watch", "--json",
               "--interval", "0.2", "--management-url", "none", "--no-rabbitmqctl"]  # fmt: skip
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        samples = [json.loads(process.stdout.readline()) for _ in range(2)]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, "Ctrl-C ends the watch cleanly"
    assert [s["source"] for s in samples] == ["amqp", "amqp"]
    second = {q["name"]: q for q in samples[1]["queues"]}
    assert second[topology.DISPATCHER_DELIVERIES.name]["depth_rate"] == 0.0


def test_cli_says_when_the_broker_is_unreachable() -> None:
    done = run_cli(
        "--management-url", "none", "--no-rabbitmqctl", amqp_url="amqp://guest:guest@127.0.0.1:9/"
    )
    assert done.returncode == 1
    assert "RabbitMQ unreachable" in done.stderr
