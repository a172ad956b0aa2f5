"""One robust AMQP connection over the nodes of a RabbitMQ cluster (a list of broker URLs).

aio-pika's ``connect_robust`` reconnects to the one URL it was given: when that node dies, the
dispatcher waits for that node while the cluster's other nodes could serve it. RabbitMQ's own
clients take a list of endpoints and try the next one at each recovery (the Java client's
address list); aio-pika has no such option (aio-pika issue 141; a contributed class was not
merged, PR 680), and its maintainer points to round-robin DNS or a load balancer in front of
the cluster, which work here too: give one URL that names them.

Without those, :class:`FailoverConnection` is aio-pika's own ``RobustConnection`` (which
restores channels, exchanges, queues and consumers after a reconnect, as usual) with a list of
URLs. Each connection attempt reads the connection's public ``url``; this class points it at
the next node

- when the connection is lost (its node died, stopped or was cut off), and
- every ``reconnect_interval`` while it stays unconnected (the next node is down too),

so recovery goes round the list until a node answers. The first connection tries the URLs in
order and keeps the first that answers. Quorum queues are replicated on every node, so the
restored consumers find their queues on whichever node the connection lands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from yarl import URL

log = structlog.get_logger(__name__)
CONNECT_TIMEOUT_S = 10.0


class FailoverConnection(aio_pika.RobustConnection):
    """A robust connection that moves to the next URL of its list on each recovery."""

    def __init__(self, url: URL, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any):
        super().__init__(url, loop, **kwargs)
        self.urls: tuple[URL, ...] = (self.url,)
        self._index = 0
        self._watch: asyncio.Task[None] | None = None

    def use(self, urls: Sequence[URL], current: int) -> None:
        """The cluster's URLs, and which of them the connection is on now."""
        self.urls = tuple(urls)
        self._index = current

    def _advance(self) -> None:
        if len(self.urls) < 2:
            return
        self._index = (self._index + 1) % len(self.urls)
        self.url = self.urls[self._index]
        log.info("broker_failover", next_node=_where(self.url))

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        if not (self._close_called or self.is_closed) and len(self.urls) > 1:
            self._advance()
            if self._watch is None or self._watch.done():
                self._watch = asyncio.create_task(self._rotate_until_connected())
        await super()._on_connection_close(closing)

    async def _rotate_until_connected(self) -> None:
        while not (self._close_called or self.is_closed):
            try:
                await asyncio.wait_for(self.connected.wait(), self.reconnect_interval)
                log.info("broker_reconnected", node=_where(self.url))
                return
            except TimeoutError:
                self._advance()

    async def close(self, exc: Any = asyncio.CancelledError) -> None:
        if self._watch is not None:
            self._watch.cancel()
        await super().close(exc)


def _where(url: URL) -> str:
    return f"{url.host}:{url.port}"


def broker_urls(value: str) -> tuple[str, ...]:
    """The URLs of a comma-separated setting, blanks dropped."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


async def connect(urls: Sequence[str]) -> AbstractRobustConnection:
    """A robust connection to the first of ``urls`` that answers, failing over along them."""
    if not urls:
        raise ValueError("no broker URL given")
    parsed = [URL(u) for u in urls]
    last: BaseException | None = None
    for index, url in enumerate(parsed):
        try:
            connection = await aio_pika.connect_robust(
                url, timeout=CONNECT_TIMEOUT_S, connection_class=FailoverConnection
            )
        except CONNECTION_EXCEPTIONS as err:
            log.warning("broker_unreachable", node=_where(url), error=str(err)[:200])
            last = err
            continue
        connection.use(parsed, index)
        return connection
    assert last is not None
    raise last
