"""The probe server answers /healthz, /readyz and /metrics over a real socket."""

from __future__ import annotations

import httpx
import pytest

from shared.probes import ProbeServer, probe_app
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


async def test_probe_server_reports_failing_checks_as_not_ready() -> None:
    async def database() -> None:
        return None

    async def broker() -> None:
        raise ConnectionError("refused")

    port = free_port()
    server = ProbeServer(
        probe_app({"database": database, "rabbitmq": broker}), host="127.0.0.1", port=port
    )
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/healthz")).json() == {"status": "alive"}
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"] == {
                "database": "ok",
                "rabbitmq": "ConnectionError: refused",
            }
            metrics = await client.get("/metrics")
            assert "python_info" in metrics.text
    finally:
        await server.stop()
