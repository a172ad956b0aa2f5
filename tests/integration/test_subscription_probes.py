"""Health, readiness (database and RabbitMQ) and the subscription metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.subscription_support import (
    private_amqp_url,
    running_app,
    settings_for,
)

pytestmark = pytest.mark.integration
__all__ = ["private_amqp_url"]


async def test_probes_answer_and_metrics_are_named_as_agreed(
    private_amqp_url: str, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, database_url, tmp_path)
    async with running_app(settings) as (app, client):
        assert (await client.get("/healthz")).json() == {"status": "alive"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "rabbitmq": "ok"}
        metrics = (await client.get("/metrics")).text
        for name in (
            "newsletter_signups_total",
            "newsletter_confirmations_total",
            "newsletter_unsubscribes_total",
        ):
            assert f"# TYPE {name} counter" in metrics
        await app.state.connection.close()
        not_ready = await client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["checks"]["rabbitmq"] != "ok"
