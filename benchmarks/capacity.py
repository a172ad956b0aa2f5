"""``newsletter bench capacity``: CPU time per message of every process a send runs through.

The measurement behind ``docs/capacity.md``. Rates measured on a shared machine follow its
load; the CPU time each component spends per message does much less, and it is what a
capacity plan multiplies. So the run isolates what it can: a RabbitMQ node of its own
(:mod:`benchmarks.rabbit_nodes`: its ``beam.smp`` serves this run only) and a PostgreSQL server
of its own (:mod:`benchmarks.postgres_node`: its WAL and background processes are this run's
only), then seeds N subscribers (:func:`benchmarks.dispatch._seed`), starts the fast SMTP sink
and the dispatcher process(es), publishes ``PlanSend`` and waits for the send to be done.

Around that send a :class:`~benchmarks.cpu_sampler.CpuSampler` reads, every ``SAMPLE_EVERY_S``,
utime+stime from ``/proc`` of: the dispatchers, the broker's process tree, the PostgreSQL
backends serving the bench's database (``pg_stat_activity``, the monitor's own connection left
out), the whole PostgreSQL server (backends plus the WAL writer, checkpointer, autovacuum), the
SMTP sink, and this process (publisher and monitor). Each component's idle rate (CPU per second
over ``IDLE_S`` before the send, nothing to send) is read first: ``cpu_ms_per_msg`` is the
whole CPU of the send over N, ``cpu_ms_per_msg_above_idle`` takes the idle rate times the
send's duration off (on a starved machine a slow send pays its timers and heartbeats for
longer). It also records the dispatchers' RSS against the number of deliveries sent, the WAL
the server wrote (``pg_current_wal_lsn`` before and after), and afterwards the size of each
table that grew with the audience (``pg_total_relation_size``). A last phase measures the
broker's memory per queued ``DeliverIssue`` job on a classic and on a quorum queue of the same
node (``erlang:memory(total)`` and ``rabbitmqctl list_queues messages memory message_bytes``).

``--variants unsigned,rsa,ed25519`` runs the send once per variant on the same servers (a
fresh database each time), so the DKIM cost is read per message and per component.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import psutil

from benchmarks import audience, dispatch, postgres_node, rabbit_nodes, scratch
from benchmarks.cpu_sampler import CpuSampler, PidSource, tree
from shared.messaging.publisher import Publisher, to_amqp
from shared.messaging.schemas import DeliverIssue, PlanSend
from shared.messaging.topology import (
    DISPATCHER_DELIVERIES,
    PLAN_SEND,
    connect,
    declare_topology,
)

SAMPLE_EVERY_S = 0.25
# Before the send, each component's CPU is read over this long with nothing to send: its idle
# rate (timers, heartbeats, the reconciler, the broker's own ticks, this monitor's polling).
IDLE_S = 5.0
PROGRESS_EVERY_S = 1.0
MONITOR_APP = "nl-capacity-monitor"
VARIANTS = ("unsigned", "rsa", "ed25519")


@dataclass
class Servers:
    """The run's own broker node and PostgreSQL server."""

    rabbit: rabbit_nodes.RabbitNode
    postgres: postgres_node.PostgresNode

    @property
    def broker_root(self) -> int:
        assert self.rabbit.process is not None
        return self.rabbit.process.pid


@contextlib.contextmanager
def _servers() -> Any:
    with rabbit_nodes.own_nodes(1) as nodes, postgres_node.own_cluster() as postgres:
        yield Servers(rabbit=nodes[0], postgres=postgres)


@dataclass
class _Progress:
    """The dispatchers' RSS (MB, summed) against deliveries sent, one point per second."""

    points: list[tuple[int, float]] = field(default_factory=list)

    def at(self, sent: int) -> float | None:
        for count, rss in self.points:
            if count >= sent:
                return rss
        return None


def _rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total / 1e6


async def _wal_lsn(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))


async def _wait_consumers(amqp_url: str, *, processes: int, timeout: float = 120.0) -> None:
    """Until every dispatcher consumes the deliveries queue (start-up: imports, pools)."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            queue = await channel.declare_queue(DISPATCHER_DELIVERIES.name, passive=True)
            if (queue.declaration_result.consumer_count or 0) >= processes:
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{processes} dispatcher(s) did not start consuming in {timeout} s")
    finally:
        await connection.close()


def backends_of(monitor: asyncpg.Connection, database: str) -> PidSource:
    """The pids of the backends serving ``database``, the monitor's own left out."""
    monitor_pid = monitor.get_server_pid()

    async def backend_pids() -> set[int]:
        rows = await monitor.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> $2",
            database,
            monitor_pid,
        )
        return {int(row["pid"]) for row in rows}

    return backend_pids


def _sampler(
    *,
    monitor: asyncpg.Connection,
    database: str,
    dispatchers: list[int],
    sink: int,
    servers: Servers,
) -> CpuSampler:
    monitor_pid = monitor.get_server_pid()

    async def dispatcher_pids() -> set[int]:
        return set().union(*(tree(pid) for pid in dispatchers))

    async def broker_pids() -> set[int]:
        return tree(servers.broker_root)

    async def server_pids() -> set[int]:
        return tree(servers.postgres.postmaster_pid) - {monitor_pid}

    async def sink_pids() -> set[int]:
        return {sink}

    async def bench_pids() -> set[int]:
        return {os.getpid()}

    return CpuSampler(
        {
            "dispatcher": dispatcher_pids,
            "rabbitmq": broker_pids,
            "postgres_backends": backends_of(monitor, database),
            "postgres_server": server_pids,
            "smtp_sink": sink_pids,
            "bench": bench_pids,
        }
    )


async def _monitor_send(
    monitor: asyncpg.Connection, sampler: CpuSampler, *, send_id: str, dispatchers: list[int]
) -> tuple[_Progress, float]:
    """Sample until the send is done; returns the RSS timeline and the peak RSS."""
    progress = _Progress()
    peak = 0.0
    last_progress = 0.0
    while True:
        await sampler.sample()
        rss = _rss_mb(dispatchers)
        peak = max(peak, rss)
        if time.monotonic() - last_progress >= PROGRESS_EVERY_S:
            last_progress = time.monotonic()
            sent = await monitor.fetchval(
                "SELECT count(*) FROM delivery WHERE send_id = $1 AND status = 'sent'", send_id
            )
            progress.points.append((int(sent), round(rss, 1)))
        status = await monitor.fetchval("SELECT status FROM send WHERE id = $1", send_id)
        if status == "done":
            return progress, peak
        await asyncio.sleep(SAMPLE_EVERY_S)


async def _table_sizes(conn: asyncpg.Connection, *, recipients: int) -> dict[str, Any]:
    """Tables that gained at least one row per two recipients: rows, bytes, bytes per row."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    rows = await conn.fetch(
        """
        SELECT relname, n_live_tup + n_dead_tup AS tuples, n_live_tup AS live,
               pg_relation_size(relid) AS heap, pg_indexes_size(relid) AS indexes,
               pg_total_relation_size(relid) AS total
        FROM pg_stat_user_tables ORDER BY pg_total_relation_size(relid) DESC
        """
    )
    sizes: dict[str, Any] = {}
    for row in rows:
        live = await conn.fetchval(f'SELECT count(*) FROM "{row["relname"]}"')  # noqa: S608
        if live * 2 < recipients:
            continue
        sizes[row["relname"]] = {
            "rows": live,
            "heap_bytes": row["heap"],
            "index_bytes": row["indexes"],
            "total_bytes": row["total"],
            "bytes_per_row": round(row["total"] / live, 1),
        }
    return sizes


@contextlib.asynccontextmanager
async def _dispatchers(
    env: dict[str, str], log: Path, *, processes: int
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    with log.open("wb") as log_file:
        started = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.dispatcher",
                env={**env, "NEWSLETTER_DISPATCHER_PROBE_PORT": str(dispatch._free_port())},
                stderr=log_file,
            )
            for _ in range(processes)
        ]
        try:
            yield started
        finally:
            for process in started:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
            for process in started:
                await asyncio.wait_for(process.wait(), 30)


async def _idle_rates(sampler: CpuSampler) -> dict[str, float]:
    """CPU seconds per second of each group over IDLE_S with nothing to send."""
    await sampler.begin()
    started = time.perf_counter()
    while time.perf_counter() - started < IDLE_S:
        await asyncio.sleep(SAMPLE_EVERY_S)
        await sampler.sample()
    seconds = await sampler.end()
    elapsed = time.perf_counter() - started
    sampler.reset()
    return {name: value / elapsed for name, value in seconds.items()}


def _per_message(seconds: dict[str, float], count: int) -> dict[str, float]:
    return {name: round(value * 1000 / count, 3) for name, value in seconds.items()}


async def measure_send(
    servers: Servers,
    *,
    recipients: int,
    variant: str,
    connections: int,
    processes: int,
    folder: Path,
) -> dict[str, Any]:
    """One send of ``recipients`` mails through the run's servers, measured per component."""
    send_id = str(uuid.uuid4())
    amqp_url = servers.rabbit.amqp_url()
    dkim_key = None if variant == "unsigned" else dispatch._dkim_key(folder, variant)
    async with scratch.named_database(servers.postgres.admin_url, prefix="nlcap") as (name, url):
        await audience.seed(url, recipients=recipients, send_id=send_id, issue_key="bench")
        monitor = await asyncpg.connect(url, server_settings={"application_name": MONITOR_APP})
        try:
            with dispatch._sink() as (smtp_url, sink):
                env = dispatch._settings_env(
                    database_url=url,
                    amqp_url=amqp_url,
                    smtp_url=smtp_url,
                    connections=connections,
                    dkim_key=dkim_key,
                )
                connection = await connect(amqp_url)
                try:
                    await declare_topology(await connection.channel())
                    publisher = await Publisher.open(connection)
                    async with _dispatchers(
                        env, folder / f"dispatcher-{variant}.log", processes=processes
                    ) as started:
                        pids = [process.pid for process in started]
                        await _wait_consumers(amqp_url, processes=processes)
                        rss_idle = _rss_mb(pids)
                        sampler = _sampler(
                            monitor=monitor,
                            database=name,
                            dispatchers=pids,
                            sink=sink.pid,
                            servers=servers,
                        )
                        idle = await _idle_rates(sampler)
                        load = os.getloadavg()
                        wal_before = await _wal_lsn(monitor)
                        await sampler.begin()
                        began = time.perf_counter()
                        await publisher.publish(
                            PlanSend(
                                send_id=send_id,
                                issue_key="bench",
                                segments=list(audience.LANGUAGES),
                            ),
                            routing_key=PLAN_SEND,
                        )
                        progress, peak = await _monitor_send(
                            monitor, sampler, send_id=send_id, dispatchers=pids
                        )
                        seconds = time.perf_counter() - began
                        cpu = await sampler.end()
                        wal_after = await _wal_lsn(monitor)
                        load_end = os.getloadavg()
                finally:
                    await connection.close()
                sink.terminate()
                assert sink.stdout is not None
                received, _ = dispatch._sink_report(sink.stdout.read().splitlines(), {})
            sizes = await _table_sizes(monitor, recipients=recipients)
        finally:
            await monitor.close()
    mark = 20_000 if recipients >= 40_000 else recipients // 10
    rss_mark = progress.at(mark)
    return {
        "variant": variant,
        "recipients": recipients,
        "processes": processes,
        "connections": connections,
        "seconds": round(seconds, 2),
        "msgs_per_s": round(recipients / seconds, 1),
        "load_average_before": [round(x, 2) for x in load],
        "load_average_after": [round(x, 2) for x in load_end],
        "cpu_seconds": {k: round(v, 2) for k, v in cpu.items()},
        "cpu_ms_per_msg": _per_message(cpu, recipients),
        # What the send added: the idle rate times the send's duration taken off.
        "idle_cpu_share_of_a_core": {k: round(v, 3) for k, v in idle.items()},
        "cpu_ms_per_msg_above_idle": _per_message(
            {k: max(0.0, v - idle[k] * seconds) for k, v in cpu.items()}, recipients
        ),
        "processes_counted": sampler.members(),
        "processes_exited_during_run": sampler.exited(),
        "wal_bytes": wal_after - wal_before,
        "wal_bytes_per_msg": round((wal_after - wal_before) / recipients, 1),
        "rss_mb_idle": round(rss_idle, 1),
        "rss_mb_peak": round(peak, 1),
        f"rss_mb_at_{mark}_sent": rss_mark,
        "rss_mb_at_end": progress.points[-1][1] if progress.points else None,
        "rss_timeline": progress.points[:: max(1, len(progress.points) // 12)],
        "tables": sizes,
        "sink_received": received,
    }


def _queue_line(node: rabbit_nodes.RabbitNode, name: str) -> dict[str, int]:
    out = node.ctl(
        "list_queues", "name", "messages", "memory", "message_bytes", "--no-table-headers"
    )
    for line in out.splitlines():
        parts = line.split("\t")
        if parts[0] == name:
            # A 3.10 quorum queue leaves message_bytes empty.
            numbers = [int(part) if part.isdigit() else 0 for part in parts[1:4]]
            return dict(zip(("messages", "memory", "message_bytes"), numbers, strict=True))
    raise RuntimeError(f"queue {name} not listed: {out!r}")


async def _queue_line_when(
    node: rabbit_nodes.RabbitNode, name: str, *, messages: int, timeout: float = 60.0
) -> dict[str, int]:
    """The queue's line once it lists every job (a quorum queue's figures lag its confirms)."""
    deadline = time.monotonic() + timeout
    while True:
        line = await asyncio.to_thread(_queue_line, node, name)
        if line["messages"] >= messages or time.monotonic() > deadline:
            return line
        await asyncio.sleep(0.5)


def _vm_memory(node: rabbit_nodes.RabbitNode) -> int:
    return int(node.ctl("eval", "erlang:memory(total).").strip())


async def measure_queue_memory(servers: Servers, *, jobs: int) -> dict[str, Any]:
    """Broker memory per queued DeliverIssue job, on a classic and a quorum queue."""
    job = DeliverIssue(
        delivery_id=123_456_789,
        send_id=str(uuid.uuid4()),
        subscriber_id=123_456_789,
        to="reader123456@example.org",
        language="ru",
    )
    message = to_amqp(job)
    node = servers.rabbit
    figures: dict[str, Any] = {"jobs": jobs, "body_bytes": len(message.body)}
    connection = await aio_pika.connect(node.amqp_url())
    try:
        channel = await connection.channel(publisher_confirms=True)
        for kind in ("classic", "quorum"):
            arguments: dict[str, Any] = {"x-queue-type": kind}
            name = f"capacity.{kind}"
            await asyncio.to_thread(node.ctl, "eval", "[garbage_collect(P) || P <- processes()].")
            before = _vm_memory(node)
            queue = await channel.declare_queue(name, durable=True, arguments=arguments)
            for start in range(0, jobs, 1000):
                await asyncio.gather(
                    *(
                        channel.default_exchange.publish(to_amqp(job), routing_key=name)
                        for _ in range(min(1000, jobs - start))
                    )
                )
            line = await _queue_line_when(node, name, messages=jobs)
            await asyncio.to_thread(node.ctl, "eval", "[garbage_collect(P) || P <- processes()].")
            after = _vm_memory(node)
            figures[kind] = {
                **line,
                "queue_memory_bytes_per_job": round(line["memory"] / max(line["messages"], 1), 1),
                "node_memory_bytes_per_job": round((after - before) / jobs, 1),
            }
            await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
    return figures


async def run_capacity(
    *,
    recipients: int,
    variants: tuple[str, ...] = ("unsigned",),
    connections: int = 16,
    processes: int = 1,
    queue_jobs: int = 20_000,
) -> dict[str, Any]:
    """Each variant's send, then the queue-memory probe, on servers of the run's own."""
    figures: dict[str, Any] = {"cpu_count": os.cpu_count(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp, _servers() as servers:
        for variant in variants:
            figures["runs"].append(
                await measure_send(
                    servers,
                    recipients=recipients,
                    variant=variant,
                    connections=connections,
                    processes=processes,
                    folder=Path(tmp),
                )
            )
        if queue_jobs:
            figures["queue_memory"] = await measure_queue_memory(servers, jobs=queue_jobs)
    return figures


TARGET_RECIPIENTS = 1_000_000
TARGET_SECONDS = 600.0
UTILISATION = 0.5  # plan cores at half busy: headroom for retries, bursts, a lost node


def model(
    figures: dict[str, Any],
    *,
    recipients: int = TARGET_RECIPIENTS,
    seconds: float = TARGET_SECONDS,
    utilisation: float = UTILISATION,
) -> dict[str, Any]:
    """What the measured figures imply for ``recipients`` in ``seconds``, per variant.

    Cores of a component = rate x CPU seconds per message / utilisation. A dispatcher is one
    event loop (one core at most), so processes = rate / (utilisation / CPU per message).
    Sizes scale linearly with the count: bytes per row or per job x recipients.
    """
    rate = recipients / seconds
    out: dict[str, Any] = {"msgs_per_s_needed": round(rate, 1), "utilisation": utilisation}
    for run in figures["runs"]:
        cpu = run.get("cpu_ms_per_msg_above_idle", run["cpu_ms_per_msg"])
        cores = {
            name: round(rate * cpu[name] / 1000 / utilisation, 2)
            for name in ("dispatcher", "rabbitmq", "postgres_server", "smtp_sink")
        }
        per_process = utilisation * 1000 / cpu["dispatcher"]
        tables = run["tables"]
        out[run["variant"]] = {
            "cores": cores,
            "dispatcher_msgs_per_s_per_process_at_utilisation": round(per_process, 1),
            "dispatcher_processes": math.ceil(rate / per_process),
            "postgres_bytes": {
                name: round(table["bytes_per_row"] * recipients) for name, table in tables.items()
            },
            "wal_bytes": round(run["wal_bytes_per_msg"] * recipients),
            "wal_bytes_per_s": round(run["wal_bytes_per_msg"] * rate),
        }
    if "queue_memory" in figures:
        queues = figures["queue_memory"]
        out["broker_memory_bytes_for_all_jobs_queued"] = {
            kind: round(queues[kind]["node_memory_bytes_per_job"] * recipients)
            for kind in ("classic", "quorum")
        }
    return out


def summary(figures: dict[str, Any]) -> str:
    """A table of CPU ms per message per component, one row per variant."""
    columns = (
        "dispatcher",
        "rabbitmq",
        "postgres_backends",
        "postgres_server",
        "smtp_sink",
        "bench",
    )
    lines = ["variant | msg/s | " + " | ".join(columns) + " | WAL B/msg | RSS peak MB | load"]
    for run in figures["runs"]:
        cpu = run["cpu_ms_per_msg"]
        lines.append(
            f"{run['variant']} | {run['msgs_per_s']} | "
            + " | ".join(str(cpu[c]) for c in columns)
            + f" | {run['wal_bytes_per_msg']} | {run['rss_mb_peak']} | {run['load_average_before']}"
        )
    lines.append(f"model for {TARGET_RECIPIENTS} in {TARGET_SECONDS:.0f} s: {model(figures)}")
    return "\n".join(lines)
