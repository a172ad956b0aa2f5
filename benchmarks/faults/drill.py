"""One fault drill: a whole send on its own broker nodes and database, with one fault staged.

For a scenario the drill boots its own RabbitMQ node (or 3-node cluster,
``benchmarks.rabbit_nodes``), creates and seeds its own PostgreSQL database, starts the
recording SMTP server (``recording_smtp``) and one real dispatcher process
(``python -m services.dispatcher``), publishes ``PlanSend`` and watches the ledger. Once a
share of the audience is sent, the scenario's fault runs beside the send. The drill ends when
the send is done, when nothing moved for ``stall_s`` (neither the ledger nor the SMTP log), or
at ``timeout_s``; then everything is stopped and removed, and the figures are read from the
ledger and from the SMTP server's log, which is the independent witness: ``lost`` are audience
members the server never accepted, ``duplicates`` the extra accepted copies per reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks import audience
from benchmarks.faults import seed
from benchmarks.faults.recording_smtp import SmtpRecord
from benchmarks.rabbit_nodes import RabbitNodes, own_nodes
from shared.messaging.publisher import Publisher
from shared.messaging.schemas import PlanSend
from shared.messaging.topology import PLAN_SEND, connect, declare_topology

OPEN = ("pending", "queued", "sending", "deferred")
SECRET = "bench-faults-secret-key-" + "x" * 40
# Dispatcher settings of the drills, unless the caller's environment sets them: short delay
# tiers so that deferred mail comes back within a drill, a bounded SMTP timeout.
DISPATCHER_DEFAULTS = {
    "NEWSLETTER_DISPATCH_RETRY_TIERS": "10s,1m",
    "NEWSLETTER_SMTP_TIMEOUT_S": "10",
    "NEWSLETTER_DISPATCH_OUTBOX_SWEEP_S": "5",
}


@dataclass
class DrillContext:
    """What a fault may act on, and where it writes what it did."""

    nodes: RabbitNodes
    database_name: str
    dispatcher_node: int
    outage_s: float
    audience: int = 0
    notes: list[str] = field(default_factory=list)
    # Whether the fault really happened to the send (a purge that found an empty queue did
    # not): set by the fault; None while it has not said.
    staged: bool | None = None

    def note(self, text: str) -> None:
        self.notes.append(text)


Fault = Callable[[DrillContext], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    nodes: int = 1
    drop_data: float = 0.0  # share of DATA commands the server drops mid-message
    defer_rcpt: float = 0.0  # share of RCPTs answered 451
    fault: Fault | None = None
    trigger: float = 0.2  # share of the audience sent before the fault starts
    declare_via: int = 0  # the node the topology is declared through (it leads the queues)
    # Dispatcher settings of this scenario (unless the caller's environment sets them).
    dispatcher_env: tuple[tuple[str, str], ...] = ()
    # Duplicates the issue allows: only where a process or the node holding jobs in flight was
    # killed, and at most the in-flight window (the dispatcher's prefetch).
    duplicates_allowed: int = 0


@dataclass
class ScenarioResult:
    scenario: str
    title: str
    audience: int
    sent: int
    deferred_then_sent: int
    bounced: int
    failed: int
    unknown: int
    duplicates: int
    lost: int
    stuck: int
    seconds: float
    ended: str  # done | stalled | timeout | error
    msgs_per_s: float | None = None  # 80 % of the audience over the time it took to send them
    vs_clean: float | None = None  # msgs_per_s over the clean scenario's of the same run
    fault: str = "-"  # staged | NOT STAGED | - (no fault)
    verdict: str = ""  # pass | FAIL | NOT STAGED
    send_status: str = ""
    statuses: dict[str, int] = field(default_factory=dict)
    smtp_rcpts: int = 0
    broker_boot_s: float = 0.0
    load_before: float = 0.0  # the machine's 1-minute load average when the scenario began
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def judged(self, *, duplicates_allowed: int) -> ScenarioResult:
        """Set the verdict: a fault that was not staged proves nothing, whatever the figures."""
        if self.fault == "NOT STAGED":
            self.verdict = "NOT STAGED"
        elif (
            self.ended == "done"
            and self.lost == 0
            and self.stuck == 0
            and self.duplicates <= duplicates_allowed
        ):
            self.verdict = "pass"
        else:
            self.verdict = "FAIL"
        return self


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _smtp_server(scenario: Scenario, log: Path) -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(  # noqa: S603 - our own module
        [
            sys.executable,
            "-m",
            "benchmarks.faults.recording_smtp",
            "--port",
            str(port),
            "--log",
            str(log),
            "--drop-data",
            str(scenario.drop_data),
            "--defer-rcpt",
            str(scenario.defer_rcpt),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("the recording SMTP server did not start")
        yield f"smtp://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _dispatcher_env(
    scenario: Scenario, *, database_url: str, amqp_url: str, smtp_url: str
) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in (*DISPATCHER_DEFAULTS.items(), *scenario.dispatcher_env):
        env.setdefault(key, value)
    env.update(
        NEWSLETTER_MODE="test",
        NEWSLETTER_SECRET_KEY=SECRET,
        NEWSLETTER_DATABASE_URL=database_url,
        NEWSLETTER_AMQP_URL=amqp_url,
        NEWSLETTER_SMTP_URL=smtp_url,
        NEWSLETTER_DISPATCHER_PROBE_PORT=str(_free_port()),
        NEWSLETTER_LOG_LEVEL="INFO",
        NEWSLETTER_LOG_FORMAT="json",
    )
    return env


async def _wait_for_log(path: Path, event: str, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    needle = f'"{event}"'.encode()
    while time.monotonic() < deadline:
        if needle in await asyncio.to_thread(_read, path):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"no {event} in the dispatcher's log within {timeout}s")


def _read(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


def _count_log(path: Path, event: str) -> int:
    if not path.exists():
        return 0
    needle = f'"{event}"'.encode()
    return sum(1 for line in path.read_bytes().splitlines() if needle in line)


@dataclass
class _Watch:
    ended: str = "timeout"
    seconds: float = 0.0
    t80: float | None = None
    fault_started: bool = False


async def _watch(
    *,
    database_url: str,
    send_id: str,
    audience: int,
    smtp_log: Path,
    started: float,
    timeout_s: float,
    stall_s: float,
    on_trigger: Callable[[], None],
    trigger_at: int,
) -> _Watch:
    """Poll the ledger until the send is done, stalls or times out; fire the fault on time."""
    watch = _Watch()
    conn = await seed.admin_connection(database_url)
    last_change = time.monotonic()
    last: tuple[object, ...] = ()
    try:
        while True:
            now = time.monotonic()
            try:
                rows = await conn.fetch(
                    "SELECT status, count(*) AS n FROM delivery WHERE send_id = $1 GROUP BY status",
                    send_id,
                )
                status = await conn.fetchval("SELECT status FROM send WHERE id = $1", send_id)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                # The watcher must outlive the faults it watches.
                await asyncio.sleep(0.5)
                with contextlib.suppress(Exception):
                    await conn.close()
                conn = await seed.admin_connection(database_url)
                continue
            counts = {str(r["status"]): int(r["n"]) for r in rows}
            sent = counts.get("sent", 0)
            if not watch.fault_started and sent >= trigger_at:
                watch.fault_started = True
                on_trigger()
            if watch.t80 is None and sent >= 0.8 * audience:
                watch.t80 = now - started
            progress = (
                tuple(sorted(counts.items())),
                await asyncio.to_thread(os.path.getsize, smtp_log),
                status,
            )
            if progress != last:
                last, last_change = progress, now
            open_rows = sum(counts.get(s, 0) for s in OPEN)
            if status == "done" and open_rows == 0:
                watch.ended = "done"
                break
            if now - last_change > stall_s:
                watch.ended = "stalled"
                break
            if now - started > timeout_s:
                watch.ended = "timeout"
                break
            await asyncio.sleep(0.5)
    finally:
        await conn.close()
    watch.seconds = time.monotonic() - started
    return watch


async def _ledger(database_url: str, send_id: str) -> tuple[dict[str, int], str]:
    conn = await seed.admin_connection(database_url)
    try:
        rows = await conn.fetch(
            "SELECT status, count(*) AS n FROM delivery WHERE send_id = $1 GROUP BY status",
            send_id,
        )
        status = await conn.fetchval("SELECT status FROM send WHERE id = $1", send_id)
    finally:
        await conn.close()
    return {str(r["status"]): int(r["n"]) for r in rows}, str(status)


async def _declare_through(nodes: RabbitNodes, index: int) -> None:
    """Declare the topology through one node: a quorum queue is led by its declaring node."""
    via = await connect(nodes[index].amqp_url())
    try:
        await declare_topology(await via.channel())
    finally:
        await via.close()


async def _publish_plan(amqp_url: str, send_id: str) -> None:
    connection = await connect(amqp_url)
    try:
        publisher = await Publisher.open(connection)
        plan = PlanSend(send_id=send_id, issue_key="faults", segments=list(audience.LANGUAGES))
        await publisher.publish(plan, routing_key=PLAN_SEND)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def _dispatcher(env: dict[str, str], log: Path) -> AsyncIterator[None]:
    """One real dispatcher process, started and stopped (SIGTERM, then SIGKILL after 30 s)."""
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.dispatcher", env=env, stderr=out
        )
        try:
            await _wait_for_log(log, "dispatcher_started", timeout=60)
            yield
        finally:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


class _FaultRunner:
    """Starts the scenario's fault once, and waits for it (bounded) at the end."""

    def __init__(self, scenario: Scenario, ctx: DrillContext, started: float) -> None:
        self.scenario, self.ctx, self.started = scenario, ctx, started
        self.task: asyncio.Task[None] | None = None

    def trigger(self) -> None:
        if self.scenario.fault is not None and self.task is None:
            self.ctx.note(f"fault at {time.monotonic() - self.started:.1f}s")
            self.task = asyncio.create_task(self.scenario.fault(self.ctx))

    async def finish(self, *, fault_started: bool) -> None:
        if self.scenario.fault is not None and not fault_started:
            self.ctx.note("the send ended before the fault's trigger: fault not staged")
            self.ctx.staged = False
        if self.task is None:
            return
        try:
            await asyncio.wait_for(self.task, self.ctx.outage_s + 120)
        finally:
            if not self.task.done():
                self.task.cancel()


async def _drive(
    scenario: Scenario,
    *,
    ctx: DrillContext,
    database_url: str,
    send_id: str,
    audience: int,
    smtp_url: str,
    logs: tuple[Path, Path],
    timeout_s: float,
    stall_s: float,
) -> _Watch:
    """Dispatcher up, PlanSend out, watch the send and stage the fault; dispatcher down."""
    smtp_log, dispatcher_log = logs
    await _declare_through(ctx.nodes, scenario.declare_via)
    amqp_url = ctx.nodes[ctx.dispatcher_node].amqp_url()
    env = _dispatcher_env(scenario, database_url=database_url, amqp_url=amqp_url, smtp_url=smtp_url)
    if len(ctx.nodes.nodes) > 1:
        # Every node, its own first: when its node dies it reconnects through another.
        others = [n for i, n in enumerate(ctx.nodes.nodes) if i != ctx.dispatcher_node]
        env["NEWSLETTER_DISPATCH_AMQP_URLS"] = ",".join([amqp_url, *(n.amqp_url() for n in others)])
    async with _dispatcher(env, dispatcher_log):
        await _publish_plan(amqp_url, send_id)
        faults = _FaultRunner(scenario, ctx, time.monotonic())
        watch = await _watch(
            database_url=database_url,
            send_id=send_id,
            audience=audience,
            smtp_log=smtp_log,
            started=faults.started,
            timeout_s=timeout_s,
            stall_s=stall_s,
            on_trigger=faults.trigger,
            trigger_at=int(scenario.trigger * audience),
        )
        await faults.finish(fault_started=watch.fault_started)
    return watch


async def run_scenario(
    scenario: Scenario,
    *,
    recipients: int,
    timeout_s: float,
    stall_s: float,
    outage_s: float,
    logs: Path | None = None,
) -> ScenarioResult:
    """Run one scenario end to end on resources of its own; the figures of its row."""
    send_id = str(uuid.uuid4())
    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="nl-faults-") as tmp, contextlib.ExitStack() as stack:
        folder = logs or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        smtp_log = folder / f"{scenario.key}.smtp.log"
        dispatcher_log = folder / f"{scenario.key}.dispatcher.log"
        for path in (smtp_log, dispatcher_log):
            path.unlink(missing_ok=True)
        smtp_log.touch()
        nodes = stack.enter_context(own_nodes(scenario.nodes))
        smtp_url = stack.enter_context(_smtp_server(scenario, smtp_log))
        async with seed.own_database() as (database_name, database_url):
            audience = await seed.seed(database_url, recipients=recipients, send_id=send_id)
            ctx = DrillContext(
                nodes=nodes,
                database_name=database_name,
                dispatcher_node=0,
                outage_s=outage_s,
                audience=len(audience),
            )
            watch = await _drive(
                scenario,
                ctx=ctx,
                database_url=database_url,
                send_id=send_id,
                audience=len(audience),
                smtp_url=smtp_url,
                logs=(smtp_log, dispatcher_log),
                timeout_s=timeout_s,
                stall_s=stall_s,
            )
            statuses, send_status = await _ledger(database_url, send_id)
        stack.close()  # SMTP server flushed and stopped before its log is read
        record = SmtpRecord.read(smtp_log)
        for event in ("email_held", "possible_duplicate_resend"):
            if count := _count_log(dispatcher_log, event):
                ctx.note(f"{count} {event} log lines")
    accepted = set(record.accepted)
    ctx.notes[:0] = [f"{key}={value}" for key, value in scenario.dispatcher_env]
    staged = _staged(scenario, ctx, record)
    return ScenarioResult(
        scenario=scenario.key,
        title=scenario.title,
        audience=len(audience),
        sent=statuses.get("sent", 0),
        deferred_then_sent=len(accepted & (record.deferred | record.dropped)),
        bounced=statuses.get("bounced", 0),
        failed=statuses.get("failed", 0),
        unknown=statuses.get("unknown", 0),
        duplicates=record.duplicates(),
        lost=len(audience - accepted),
        stuck=sum(statuses.get(s, 0) for s in OPEN),
        seconds=round(watch.seconds, 1),
        ended=watch.ended,
        msgs_per_s=round(0.8 * len(audience) / watch.t80, 1) if watch.t80 else None,
        send_status=send_status,
        statuses=statuses,
        smtp_rcpts=record.rcpt_commands,
        broker_boot_s=round(nodes.boot_seconds, 1),
        load_before=load_before,
        notes=ctx.notes,
        fault="-" if staged is None else "staged" if staged else "NOT STAGED",
    ).judged(duplicates_allowed=scenario.duplicates_allowed)


def _staged(scenario: Scenario, ctx: DrillContext, record: SmtpRecord) -> bool | None:
    """Whether the scenario's fault really met the send; None for the clean baseline."""
    if scenario.fault is not None:
        return ctx.staged is not False  # a fault that ran and did not say otherwise did happen
    if scenario.drop_data or scenario.defer_rcpt:
        return bool(record.dropped if scenario.drop_data else record.deferred)
    return None
