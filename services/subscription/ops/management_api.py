"""Queue figures from RabbitMQ's management HTTP API (``/api/queues/<vhost>``), where the plugin
is enabled: ready and unacked counts, consumers and the broker's publish/ack rates."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx

from services.subscription.ops.queue_snapshots import QueueSnapshot, QueueStat, QueueStatsError

MANAGEMENT_PORT = 15672


class ManagementUnavailable(QueueStatsError):
    """The management API did not answer (plugin disabled, wrong URL or credentials)."""


def management_url_for(amqp_url: str) -> str:
    """``http://<user>:<password>@<amqp host>:15672``: where the API is by default."""
    parts = urlsplit(amqp_url)
    credentials = ""
    if parts.username:
        credentials = quote(unquote(parts.username), safe="")
        if parts.password is not None:
            credentials += ":" + quote(unquote(parts.password), safe="")
        credentials += "@"
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{credentials}{host}:{MANAGEMENT_PORT}"


class ManagementApi:
    """Reads ``/api/queues/<vhost>``; ``transport`` is the seam tests use."""

    def __init__(
        self,
        *,
        base_url: str,
        vhost: str,
        timeout: float = 3.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        auth = (
            httpx.BasicAuth(unquote(parts.username), unquote(parts.password or ""))
            if parts.username
            else None
        )
        netloc = parts.hostname or "127.0.0.1"
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port:
            netloc += f":{parts.port}"
        self._client = httpx.AsyncClient(
            base_url=f"{parts.scheme or 'http'}://{netloc}{parts.path.rstrip('/')}",
            auth=auth,
            timeout=timeout,
            transport=transport,
        )
        self._vhost = vhost

    async def aclose(self) -> None:
        await self._client.aclose()

    async def read(self, names: Sequence[str]) -> QueueSnapshot:
        path = "/api/queues/" + quote(self._vhost, safe="")
        try:
            response = await self._client.get(
                path,
                params={
                    "columns": "name,messages_ready,messages_unacknowledged,consumers,message_stats"
                },
            )
        except httpx.HTTPError as err:
            raise ManagementUnavailable(f"management API unreachable: {err}") from err
        if response.status_code != 200:
            raise ManagementUnavailable(f"management API answered HTTP {response.status_code}")
        try:
            rows: list[dict[str, Any]] = response.json()
        except ValueError as err:
            raise ManagementUnavailable("management API answered something else than JSON") from err
        by_name = {str(row.get("name")): row for row in rows}
        stats = tuple(_from_management(name, by_name.get(name)) for name in names)
        return QueueSnapshot(source="management", queues=stats, taken_at=time.monotonic())


def _from_management(name: str, row: dict[str, Any] | None) -> QueueStat:
    if row is None:
        return QueueStat(name=name, exists=False)
    message_stats = row.get("message_stats") or {}

    def rate(key: str) -> float | None:
        details = message_stats.get(key)
        return float(details["rate"]) if isinstance(details, dict) and "rate" in details else None

    return QueueStat(
        name=name,
        ready=int(row.get("messages_ready") or 0),
        unacked=int(row.get("messages_unacknowledged") or 0),
        consumers=int(row.get("consumers") or 0),
        publish_rate=rate("publish_details"),
        ack_rate=rate("ack_details"),
    )
