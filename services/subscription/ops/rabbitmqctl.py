"""Queue figures from ``rabbitmqctl list_queues``, for a broker on this machine: ready and
unacked counts and consumers without the management plugin (quorum queues update these with
the periodic statistics, so they may lag by about 5 s)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from services.subscription.ops.queue_snapshots import QueueSnapshot, QueueStat, QueueStatsError


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
