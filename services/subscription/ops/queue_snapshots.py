"""What a queue reader returns: one :class:`QueueStat` per queue of the suite at one moment.

Three readers fill it, each knowing a different part (``management_api.py``,
``rabbitmqctl.py``, ``passive_declares.py``; :class:`~.queue_reader.QueueStatsReader` picks
one). Without the management API's rates, :func:`with_rates` derives the change of depth per
second from successive snapshots.

Exceptions: :class:`QueueStatsError` is the base of the queue readers' errors.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import unquote, urlsplit

Source = Literal["management", "rabbitmqctl", "amqp"]


class QueueStatsError(RuntimeError):
    """Queue statistics could not be read from any source."""


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


def with_rates(previous: QueueSnapshot | None, current: QueueSnapshot) -> QueueSnapshot:
    """Fill ``depth_rate`` from the previous snapshot (every source)."""
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
