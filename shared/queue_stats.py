"""Depth, unacked count, consumers and rates of every queue of the suite, for operators.

Sources, tried in this order:

- RabbitMQ's management HTTP API (``/api/queues/<vhost>``) where the plugin is enabled: it
  knows ready and unacked counts, consumers and the broker's publish/ack rates;
- ``rabbitmqctl list_queues`` when the caller allows it (``newsletter queues`` does, for a
  broker on this machine): ready and unacked counts and consumers, without the plugin (quorum
  queues update these figures with the periodic statistics, so they may lag by ~5 s);
- passive queue declares over AMQP everywhere else: ready count and consumers only (the
  broker does not report unacked messages to a declare).

Without the API's rates, the change of depth per second is derived from successive samples.

``newsletter queues`` and the ops page (``/admin``) read through :class:`QueueStatsReader`;
:class:`QueueMetrics` exports the last snapshot as ``newsletter_queue_messages{queue,state}``
and ``newsletter_queue_consumers{queue}``.

Exceptions: :class:`QueueStatsError` is the base of this module's errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import quote, unquote, urlsplit

import aio_pika
import httpx
import structlog
from aio_pika.abc import AbstractRobustConnection
from prometheus_client import REGISTRY, CollectorRegistry, Gauge
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.messaging.topology import all_queue_names, connect

log = structlog.get_logger(__name__)

Source = Literal["management", "rabbitmqctl", "amqp"]
MANAGEMENT_PORT = 15672
MANAGEMENT_RETRY_S = 60.0  # after the API failed, use passive declares this long


class QueueStatsError(RuntimeError):
    """Queue statistics could not be read from any source."""


class ManagementUnavailable(QueueStatsError):
    """The management API did not answer (plugin disabled, wrong URL or credentials)."""


class QueueStatsSettings(BaseSettings):
    """``NEWSLETTER_RABBITMQ_MANAGEMENT_URL``: empty means derive it from the AMQP URL
    (same host and credentials, port 15672); ``none`` means never ask the API."""

    model_config = SettingsConfigDict(env_prefix="NEWSLETTER_", extra="ignore")

    rabbitmq_management_url: str = ""
    queue_stats_interval_s: float = 15.0


@dataclass(frozen=True)
class QueueStat:
    """One queue at one moment. ``None`` means the source cannot tell."""

    name: str
    exists: bool = True
    ready: int | None = None
    unacked: int | None = None
    consumers: int | None = None
    publish_rate: float | None = None  # messages/s into the queue
    ack_rate: float | None = None  # messages/s acknowledged (done) by consumers
    depth_rate: float | None = None  # change of ready+unacked per second (negative: draining)

    @property
    def total(self) -> int | None:
        if self.ready is None:
            return None
        return self.ready + (self.unacked or 0)


@dataclass(frozen=True)
class QueueSnapshot:
    source: Source
    queues: tuple[QueueStat, ...]
    taken_at: float  # time.monotonic()

    def get(self, name: str) -> QueueStat | None:
        return next((q for q in self.queues if q.name == name), None)


def vhost_of(amqp_url: str) -> str:
    """The virtual host an AMQP URL points at (``/`` when the path is empty)."""
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


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


def with_rates(previous: QueueSnapshot | None, current: QueueSnapshot) -> QueueSnapshot:
    """Fill ``depth_rate`` from the previous snapshot (both sources)."""
    if previous is None:
        return current
    elapsed = current.taken_at - previous.taken_at
    if elapsed <= 0:
        return current
    queues = []
    for stat in current.queues:
        before = previous.get(stat.name)
        if before is None or before.total is None or stat.total is None:
            queues.append(stat)
            continue
        queues.append(replace(stat, depth_rate=(stat.total - before.total) / elapsed))
    return replace(current, queues=tuple(queues))


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


async def read_by_declares(
    connection: aio_pika.abc.AbstractConnection, names: Sequence[str]
) -> QueueSnapshot:
    """Passive declares: the ready count and consumers; a missing queue closes its channel."""
    stats: list[QueueStat] = []
    channel = await connection.channel(publisher_confirms=False)
    try:
        for name in names:
            try:
                queue = await channel.declare_queue(name, passive=True, timeout=5)
            except aio_pika.exceptions.ChannelClosed:
                stats.append(QueueStat(name=name, exists=False))
                channel = await connection.channel(publisher_confirms=False)
                continue
            result = queue.declaration_result
            stats.append(
                QueueStat(
                    name=name,
                    ready=int(result.message_count or 0),
                    consumers=int(result.consumer_count or 0),
                )
            )
    finally:
        if not channel.is_closed:
            await channel.close()
    return QueueSnapshot(source="amqp", queues=tuple(stats), taken_at=time.monotonic())


def local_rabbitmqctl(amqp_url: str) -> str | None:
    """The ``rabbitmqctl`` binary, if the broker of ``amqp_url`` runs on this machine."""
    host = urlsplit(amqp_url).hostname or "127.0.0.1"
    if host not in {"127.0.0.1", "localhost", "::1"}:
        return None
    found = shutil.which("rabbitmqctl")
    if found is None and Path("/usr/sbin/rabbitmqctl").exists():
        found = "/usr/sbin/rabbitmqctl"
    return found


async def read_by_rabbitmqctl(
    *, binary: str, vhost: str, names: Sequence[str], timeout: float = 15.0
) -> QueueSnapshot:
    """``rabbitmqctl list_queues``: ready, unacked and consumers, no plugin needed."""
    try:
        process = await asyncio.create_subprocess_exec(
            binary, "-q", "list_queues", "-p", vhost, "name", "messages_ready",
            "messages_unacknowledged", "consumers", "--formatter", "json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except (OSError, TimeoutError) as err:
        raise QueueStatsError(f"rabbitmqctl failed: {type(err).__name__}: {err}") from err
    if process.returncode != 0:
        raise QueueStatsError(f"rabbitmqctl failed: {stderr.decode(errors='replace')[:200]}")
    try:
        rows: list[dict[str, Any]] = json.loads(stdout or b"[]")
    except ValueError as err:
        raise QueueStatsError("rabbitmqctl printed something else than JSON") from err
    by_name = {str(row.get("name")): row for row in rows}
    stats = []
    for name in names:
        row = by_name.get(name)
        if row is None:
            stats.append(QueueStat(name=name, exists=False))
            continue
        stats.append(
            QueueStat(
                name=name,
                ready=int(row.get("messages_ready") or 0),
                unacked=int(row.get("messages_unacknowledged") or 0),
                consumers=int(row.get("consumers") or 0),
            )
        )
    return QueueSnapshot(source="rabbitmqctl", queues=tuple(stats), taken_at=time.monotonic())


class QueueStatsReader:
    """The management API where it answers, else passive declares; keeps its connection.

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
                self._management_retry_at = time.monotonic() + MANAGEMENT_RETRY_S
                self.last_error = str(err)
                log.debug("queue_stats_management_unavailable", error=str(err))
        if self._rabbitmqctl and time.monotonic() >= self._rabbitmqctl_retry_at:
            try:
                return await read_by_rabbitmqctl(
                    binary=self._rabbitmqctl, vhost=vhost_of(self._amqp_url), names=self.names
                )
            except QueueStatsError as err:
                self._rabbitmqctl_retry_at = time.monotonic() + MANAGEMENT_RETRY_S
                self.last_error = str(err)
                log.debug("queue_stats_rabbitmqctl_unavailable", error=str(err))
        try:
            return await read_by_declares(await self.connection(), self.names)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as err:
            raise QueueStatsError(f"RabbitMQ unreachable: {type(err).__name__}: {err}") from err


class QueueMetrics:
    """``newsletter_queue_messages{queue,state}`` and ``newsletter_queue_consumers{queue}``.

    One instance per registry (see :meth:`on`): Prometheus refuses a name registered twice.
    """

    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, QueueMetrics]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Gauge(
            "newsletter_queue_messages",
            "Messages in a queue of the suite, by state (ready, unacked)",
            ["queue", "state"],
            registry=registry,
        )
        self.consumers = Gauge(
            "newsletter_queue_consumers",
            "Consumers attached to a queue of the suite",
            ["queue"],
            registry=registry,
        )

    @classmethod
    def on(cls, registry: CollectorRegistry = REGISTRY) -> QueueMetrics:
        found = cls._by_registry.get(registry)
        if found is None:
            found = cls._by_registry[registry] = cls(registry)
        return found

    def update(self, snapshot: QueueSnapshot) -> None:
        for stat in snapshot.queues:
            if not stat.exists:
                continue
            if stat.ready is not None:
                self.messages.labels(queue=stat.name, state="ready").set(stat.ready)
            if stat.unacked is not None:
                self.messages.labels(queue=stat.name, state="unacked").set(stat.unacked)
            if stat.consumers is not None:
                self.consumers.labels(queue=stat.name).set(stat.consumers)


async def export_periodically(
    *,
    reader: QueueStatsReader,
    metrics: QueueMetrics,
    interval_s: float,
    stop: asyncio.Event,
) -> None:
    """Refresh the queue gauges every ``interval_s`` until ``stop`` is set; never raises."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        if stop.is_set():
            return
        try:
            metrics.update(await reader.read())
        except QueueStatsError as err:
            log.warning("queue_stats_unavailable", error=str(err))
