"""Depth, unacked count, consumers and rates of every queue of the suite, for operators.

:class:`QueueStatsReader` tries, in this order: the management API (``management_api.py``),
``rabbitmqctl`` when the caller allows it (``rabbitmqctl.py``; ``newsletter queues`` does, for
a broker on this machine), then passive declares (``passive_declares.py``). A source that
failed is skipped for :data:`RETRY_FAILED_SOURCE_S`. ``newsletter queues`` and the ops page
(``/admin``) read through it; ``queue_metrics.py`` exports its snapshots.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import aio_pika
import httpx
import structlog
from aio_pika.abc import AbstractRobustConnection
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.subscription.ops.management_api import (
    ManagementApi,
    ManagementUnavailable,
    management_url_for,
)
from services.subscription.ops.passive_declares import read_by_declares
from services.subscription.ops.queue_snapshots import (
    QueueSnapshot,
    QueueStatsError,
    vhost_of,
    with_rates,
)
from services.subscription.ops.rabbitmqctl import read_by_rabbitmqctl
from shared.messaging.topology import all_queue_names, connect

log = structlog.get_logger(__name__)

RETRY_FAILED_SOURCE_S = 60.0  # after a source failed, use the next one this long


class QueueStatsSettings(BaseSettings):
    """``NEWSLETTER_RABBITMQ_MANAGEMENT_URL``: empty means derive it from the AMQP URL
    (same host and credentials, port 15672); ``none`` means never ask the API."""

    model_config = SettingsConfigDict(env_prefix="NEWSLETTER_", extra="ignore")

    rabbitmq_management_url: str = ""
    # Seconds between two refreshes of the queue gauges on /metrics.
    queue_stats_interval_s: float = 15.0


class QueueStatsReader:
    """The management API where it answers, else rabbitmqctl (if given), else passive declares;
    keeps its AMQP connection.

    Use as ``async with QueueStatsReader(amqp_url=...) as reader: await reader.read()``.
    """

    def __init__(
        self,
        *,
        amqp_url: str,
        management_url: str = "",
        names: Sequence[str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        management_timeout: float = 2.0,
        rabbitmqctl: str | None = None,
    ) -> None:
        self._amqp_url = amqp_url
        self._rabbitmqctl = rabbitmqctl
        self._rabbitmqctl_retry_at = 0.0
        self.names = tuple(names if names is not None else all_queue_names())
        self._management: ManagementApi | None = None
        if management_url.strip().lower() != "none":
            self._management = ManagementApi(
                base_url=management_url or management_url_for(amqp_url),
                vhost=vhost_of(amqp_url),
                timeout=management_timeout,
                transport=transport,
            )
        self._connection: AbstractRobustConnection | None = None
        self._lock = asyncio.Lock()
        self._previous: QueueSnapshot | None = None
        self._management_retry_at = 0.0
        self.last_error = ""

    async def __aenter__(self) -> QueueStatsReader:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        try:
            if self._management is not None:
                await self._management.aclose()
        finally:
            if self._connection is not None:
                await self._connection.close()
                self._connection = None

    async def connection(self) -> AbstractRobustConnection:
        """The reader's own AMQP connection, opened on first use."""
        if self._connection is None:
            self._connection = await connect(self._amqp_url)
        return self._connection

    async def read(self) -> QueueSnapshot:
        async with self._lock:
            snapshot = await self._read_once()
            snapshot = with_rates(self._previous, snapshot)
            self._previous = snapshot
            return snapshot

    async def _read_once(self) -> QueueSnapshot:
        if self._management is not None and time.monotonic() >= self._management_retry_at:
            try:
                return await self._management.read(self.names)
            except ManagementUnavailable as err:
                # Not enabled, or unreachable: ask again later, not on every sample.
                self._management_retry_at = time.monotonic() + RETRY_FAILED_SOURCE_S
                self.last_error = str(err)
                log.debug("queue_stats_management_unavailable", error=str(err))
        if self._rabbitmqctl and time.monotonic() >= self._rabbitmqctl_retry_at:
            try:
                return await read_by_rabbitmqctl(
                    binary=self._rabbitmqctl, vhost=vhost_of(self._amqp_url), names=self.names
                )
            except QueueStatsError as err:
                self._rabbitmqctl_retry_at = time.monotonic() + RETRY_FAILED_SOURCE_S
                self.last_error = str(err)
                log.debug("queue_stats_rabbitmqctl_unavailable", error=str(err))
        try:
            return await read_by_declares(await self.connection(), self.names)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as err:
            raise QueueStatsError(f"RabbitMQ unreachable: {type(err).__name__}: {err}") from err
