"""Queue statistics: management API parsing, rates, the table ``newsletter queues`` prints."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from prometheus_client import CollectorRegistry

from newsletter_cli.queues import format_table, to_json
from services.subscription.ops.management_api import (
    ManagementApi,
    ManagementUnavailable,
    management_url_for,
)
from services.subscription.ops.queue_metrics import QueueMetrics
from services.subscription.ops.queue_reader import QueueStatsReader
from services.subscription.ops.queue_snapshots import QueueSnapshot, QueueStat, vhost_of, with_rates

ROWS = [
    {
        "name": "dispatcher.deliveries",
        "messages_ready": 120,
        "messages_unacknowledged": 16,
        "consumers": 3,
        "message_stats": {"publish_details": {"rate": 250.5}, "ack_details": {"rate": 240.0}},
    },
    {"name": "renderer.issues", "messages_ready": 0, "messages_unacknowledged": 0, "consumers": 1},
    {"name": "someone.elses", "messages_ready": 9, "messages_unacknowledged": 0, "consumers": 0},
]


def test_vhost_and_management_url_come_from_the_amqp_url() -> None:
    assert vhost_of("amqp://u:p@rabbit:5672/") == "/"
    assert vhost_of("amqp://u:p@rabbit:5672") == "/"
    assert vhost_of("amqp://u:p@rabbit:5672/news%2Fletter") == "news/letter"
    assert management_url_for("amqp://us%40r:p%3Ass@rabbit:5672/x") == (
        "http://us%40r:p%3Ass@rabbit:15672"
    )
    assert management_url_for("amqp://rabbit/x") == "http://rabbit:15672"


async def test_management_api_reads_ready_unacked_consumers_and_rates() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ROWS)

    api = ManagementApi(
        base_url="http://ops:s%3Acret@rabbit:15672",
        vhost="/",
        transport=httpx.MockTransport(answer),
    )
    try:
        snapshot = await api.read(["dispatcher.deliveries", "renderer.issues", "gone.queue"])
    finally:
        await api.aclose()

    raw_path = seen[0].url.raw_path.split(b"?")[0]
    assert raw_path == b"/api/queues/%2F", "the default vhost must be quoted as %2F"
    expected_auth = "Basic " + base64.b64encode(b"ops:s:cret").decode()
    assert seen[0].headers["authorization"] == expected_auth
    assert snapshot.source == "management"
    deliveries = snapshot.get("dispatcher.deliveries")
    assert deliveries == QueueStat(
        name="dispatcher.deliveries",
        ready=120,
        unacked=16,
        consumers=3,
        publish_rate=250.5,
        ack_rate=240.0,
    )
    issues = snapshot.get("renderer.issues")
    assert issues is not None
    assert issues.publish_rate is None
    assert issues.consumers == 1
    gone = snapshot.get("gone.queue")
    assert gone is not None
    assert not gone.exists
    assert snapshot.get("someone.elses") is None, "only the suite's queues are reported"


@pytest.mark.parametrize("status", [401, 404, 503])
async def test_management_api_errors_say_the_api_is_unavailable(status: int) -> None:
    api = ManagementApi(
        base_url="http://rabbit:15672",
        vhost="v",
        transport=httpx.MockTransport(lambda _: httpx.Response(status)),
    )
    try:
        with pytest.raises(ManagementUnavailable, match=str(status)):
            await api.read(["a"])
    finally:
        await api.aclose()


def test_depth_rate_is_derived_from_two_samples() -> None:
    before = QueueSnapshot(
        source="amqp", queues=(QueueStat(name="q", ready=100, consumers=1),), taken_at=10.0
    )
    after = QueueSnapshot(
        source="amqp", queues=(QueueStat(name="q", ready=40, consumers=1),), taken_at=12.0
    )
    stat = with_rates(before, after).get("q")
    assert stat is not None
    assert stat.depth_rate == pytest.approx(-30.0)
    assert with_rates(None, after) is after


def test_table_shows_every_queue_and_says_where_figures_come_from() -> None:
    snapshot = QueueSnapshot(
        source="amqp",
        queues=(
            QueueStat(name="dispatcher.deliveries", ready=7, consumers=2, depth_rate=-1.5),
            QueueStat(name="renderer.issues", exists=False),
        ),
        taken_at=0.0,
    )
    lines = format_table(snapshot).splitlines()
    assert lines[0].split() == [
        "queue",
        "ready",
        "unacked",
        "consumers",
        "in/s",
        "acked/s",
        "depth/s",
    ]
    assert lines[1].split() == ["dispatcher.deliveries", "7", "-", "2", "-", "-", "-1.5/s"]
    assert lines[2].split()[:2] == ["renderer.issues", "missing"]
    assert "passive declares" in lines[-1]
    data = json.loads(to_json(snapshot))
    assert data["queues"][0]["ready"] == 7
    assert data["source"] == "amqp"


def test_queue_gauges_follow_the_snapshot() -> None:
    registry = CollectorRegistry()
    metrics = QueueMetrics.on(registry)
    assert QueueMetrics.on(registry) is metrics, "one set of gauges per registry"
    metrics.update(
        QueueSnapshot(
            source="management",
            queues=(
                QueueStat(name="dispatcher.deliveries", ready=5, unacked=2, consumers=4),
                QueueStat(name="renderer.issues", ready=3, consumers=0),
                QueueStat(name="missing.queue", exists=False),
            ),
            taken_at=0.0,
        )
    )

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("newsletter_queue_messages", queue="dispatcher.deliveries", state="ready") == 5
    assert value("newsletter_queue_messages", queue="dispatcher.deliveries", state="unacked") == 2
    assert value("newsletter_queue_consumers", queue="dispatcher.deliveries") == 4
    assert value("newsletter_queue_messages", queue="renderer.issues", state="unacked") is None
    assert value("newsletter_queue_consumers", queue="missing.queue") is None


async def test_reader_prefers_the_management_api_and_needs_no_amqp_then() -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(200, json=ROWS))
    async with QueueStatsReader(
        amqp_url="amqp://u:p@broker.invalid:5672/news",
        names=["dispatcher.deliveries"],
        transport=transport,
    ) as reader:
        snapshot = await reader.read()
    assert snapshot.source == "management"
    stat = snapshot.get("dispatcher.deliveries")
    assert stat is not None
    assert stat.unacked == 16
