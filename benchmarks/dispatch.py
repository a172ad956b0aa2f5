"""``newsletter bench dispatch``: a whole send end to end against two baselines, in one run.

The run creates its own PostgreSQL database and RabbitMQ vhost (both removed at the end), seeds
N active subscribers across en/be/ru and one edition per language, starts a fast SMTP sink
(:mod:`benchmarks.smtp_sink`) and a real dispatcher process (``python -m services.dispatcher``),
publishes ``PlanSend`` and waits for the send to be done: (c) the end-to-end path. On the same
sink, with the same N and the same messages (one per language, built and signed once), it also
measures (a) stdlib smtplib on one connection and (b) the dispatcher's own SMTP code
(:class:`~services.dispatcher.smtp.SmtpPool`) with the dispatcher's number of connections, no
queue and no database (:mod:`benchmarks.baselines`). The order is a, b, c, b, a: each baseline
runs once before and once after the send, and its figure is both runs taken together (all
their messages over all their time), so a load that drifts during the run favours none of
them. Figures: e2e_msgs_per_s, smtplib_msgs_per_s, wire_msgs_per_s, e2e_vs_smtplib (c/a),
e2e_vs_wire (c/b), the 1-minute load average before each phase, plan_seconds, peak_rss_mb
(dispatcher), the dispatchers' CPU per message (since their start; from ``PlanSend`` to done;
and of that their event-loop threads'). While the send runs, a confirmation mail
(``DeliverTransactional``) is published every ``PROBE_EVERY_S`` seconds: transactional_p50_s
and transactional_max_s are the times from its publish to its arrival at the sink, the figure
for "a confirmation is never stuck behind a campaign".

``--compare-dkim`` (:func:`run_dkim_comparison`) runs only the end-to-end path, unsigned and
signed in turn, on one sink, and prints every send and the ratio of the medians.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import asyncpg
import psutil

from benchmarks import audience, baselines, scratch
from benchmarks.audience import LANGUAGES
from shared.messaging.publisher import Publisher
from shared.messaging.schemas import DeliverTransactional, PlanSend
from shared.messaging.topology import (
    DELIVER_TRANSACTIONAL,
    PLAN_SEND,
    connect,
    declare_topology,
)

SECRET = "bench-secret-key-" + "x" * 40
PROBE_EVERY_S = 2.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _sink() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = _free_port()
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "benchmarks.smtp_sink", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()  # "ready"
        yield f"smtp://127.0.0.1:{port}", process
    finally:
        process.terminate()
        process.wait(10)


def _settings_env(
    *, database_url: str, amqp_url: str, smtp_url: str, connections: int, dkim_key: Path | None
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        NEWSLETTER_MODE="test",
        NEWSLETTER_SECRET_KEY=SECRET,
        NEWSLETTER_DATABASE_URL=database_url,
        NEWSLETTER_AMQP_URL=amqp_url,
        NEWSLETTER_SMTP_URL=smtp_url,
        NEWSLETTER_DISPATCHER_PROBE_PORT=str(_free_port()),
        # Production logging: one JSON line per delivery, to a file (counted in the figures).
        NEWSLETTER_LOG_LEVEL="INFO",
        NEWSLETTER_LOG_FORMAT="json",
        NEWSLETTER_DISPATCH_SMTP_CONNECTIONS=str(connections),
        NEWSLETTER_DISPATCH_DOMAIN_CONCURRENCY=str(connections),
    )
    if dkim_key is not None:
        env["NEWSLETTER_DKIM_PRIVATE_KEY_PATH"] = str(dkim_key)
        env["NEWSLETTER_DKIM_DOMAIN"] = "example.org"
    return env


async def _wait_done(
    url: str, send_id: str, *, peak: list[float], pids: list[int]
) -> tuple[float, Any]:
    """Wait for the send to be done, sampling the processes' peak RSS and CPU time.

    ``peak``: [peak RSS MB, CPU seconds since each process started, CPU seconds since the
    first sample (the send's own: start-up left out), of which the main threads' (the event
    loops: on Linux the main thread's id is the process id), of which the children's (the
    DKIM signing processes, started by the first signature)]."""
    conn = await asyncpg.connect(url)
    processes = [psutil.Process(pid) for pid in pids]
    cpu = dict.fromkeys(pids, 0.0)
    loop = dict.fromkeys(pids, 0.0)
    children: dict[int, float] = {}
    first: tuple[float, float] | None = None
    try:
        while True:
            for process in processes:
                with contextlib.suppress(psutil.Error):
                    peak[0] = max(peak[0], process.memory_info().rss / 1e6)
                    times = process.cpu_times()
                    cpu[process.pid] = times.user + times.system
                    for thread in process.threads():
                        if thread.id == process.pid:
                            loop[process.pid] = thread.user_time + thread.system_time
                    for child in process.children(recursive=True):
                        with contextlib.suppress(psutil.Error):
                            times = child.cpu_times()
                            children[child.pid] = times.user + times.system
            peak[1] = sum(cpu.values()) + sum(children.values())
            if first is None:
                first = (peak[1], sum(loop.values()))
            peak[2] = peak[1] - first[0]
            peak[3] = sum(loop.values()) - first[1]
            peak[4] = sum(children.values())
            row = await conn.fetchrow(
                "SELECT status, created_at, planned_at FROM send WHERE id = $1", send_id
            )
            if row is not None and row["status"] == "done":
                return time.perf_counter(), row
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def _probe_transactional(publisher: Publisher, sent: dict[int, float]) -> None:
    """Publish one confirmation every PROBE_EVERY_S seconds, noting when each was published."""
    n = 0
    while True:
        await asyncio.sleep(PROBE_EVERY_S)
        n += 1
        probe = DeliverTransactional(
            kind="confirmation",
            language="ru",
            subscriber_id=1,
            to=f"probe-{n}@example.org",
            subject="Подтвердите подписку",
            html="<p>Подтвердите подписку: https://example.org/confirm</p>",
            text="Подтвердите подписку: https://example.org/confirm\n",
        )
        sent[n] = time.time()
        await publisher.publish(probe, routing_key=DELIVER_TRANSACTIONAL)


def _sink_report(lines: list[str], sent: dict[int, float]) -> tuple[int, list[float]]:
    """The sink's message count and the probes' publish-to-arrival times."""
    received = 0
    latencies = []
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[0] == "probe" and int(parts[1]) in sent:
            latencies.append(float(parts[2]) - sent[int(parts[1])])
        elif len(parts) == 1:
            received = int(parts[0])
    return received, sorted(latencies)


def _log_path(folder: Path) -> Path:
    """Where the dispatcher logs; NEWSLETTER_BENCH_LOG=path keeps the log for a look after."""
    return Path(os.environ.get("NEWSLETTER_BENCH_LOG") or folder / "dispatcher.log")


def _dkim_key(folder: Path, algorithm: str) -> Path:
    """A fresh signing key: RSA-2048 (``rsa``) or Ed25519 (``ed25519``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    key = (
        ed25519.Ed25519PrivateKey.generate()
        if algorithm == "ed25519"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    path = folder / "dkim.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _load() -> float:
    return round(os.getloadavg()[0], 2)


async def _baselines(
    smtp_url: str,
    messages: list[tuple[bytes, bool]],
    *,
    count: int,
    connections: int,
    order: tuple[str, ...],
    rates: dict[str, list[float]],
    loads: dict[str, float],
) -> None:
    """Run the named baselines in ``order``, appending each rate and noting the load before."""
    for name in order:
        loads[f"{name}_{len(rates[name]) + 1}"] = _load()
        if name == "smtplib":
            rate = await baselines.stdlib_smtplib(smtp_url, [m for m, _ in messages], count=count)
        else:
            rate, pipelined = await baselines.dispatcher_wire(
                smtp_url, messages, count=count, connections=connections
            )
            rates["pipelined"].append(1.0 if pipelined else 0.0)
        rates[name].append(rate)


def _rate(runs: list[float]) -> float:
    """The rate of runs of the same size taken together: all messages over all their time."""
    return len(runs) / sum(1 / rate for rate in runs)


class _Send:
    """What the end-to-end phase measured."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.plan_seconds = 0.0
        self.peak = [0.0, 0.0, 0.0, 0.0, 0.0]  # see _wait_done
        self.probes_sent: dict[int, float] = {}


async def _end_to_end(
    *,
    amqp_url: str,
    database_url: str,
    env: dict[str, str],
    log_file: BinaryIO,
    send_id: str,
    processes: int,
) -> _Send:
    """(c) Start the dispatchers, publish the send, wait until it is done, stop them."""
    measured = _Send()
    connection = await connect(amqp_url)
    try:
        await declare_topology(await connection.channel())
        profile = os.environ.get("NEWSLETTER_BENCH_PROFILE")
        command = ["-m", "cProfile", "-o", profile] if profile else []
        dispatchers = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                *command,
                "-m",
                "services.dispatcher",
                env={**env, "NEWSLETTER_DISPATCHER_PROBE_PORT": str(_free_port())},
                stderr=log_file,
            )
            for _ in range(processes)
        ]
        try:
            await asyncio.sleep(2.0)  # start-up: imports, connections, consumers
            publisher = await Publisher.open(connection)
            started = time.perf_counter()
            await publisher.publish(
                PlanSend(send_id=send_id, issue_key="bench", segments=list(LANGUAGES)),
                routing_key=PLAN_SEND,
            )
            prober = asyncio.create_task(_probe_transactional(publisher, measured.probes_sent))
            try:
                finished, row = await _wait_done(
                    database_url, send_id, peak=measured.peak, pids=[d.pid for d in dispatchers]
                )
            finally:
                prober.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await prober
            measured.seconds = finished - started
            measured.plan_seconds = (row["planned_at"] - row["created_at"]).total_seconds()
            await asyncio.sleep(1.0)  # the last probe's arrival
        finally:
            for dispatcher in dispatchers:
                with contextlib.suppress(ProcessLookupError):
                    dispatcher.terminate()
            for dispatcher in dispatchers:
                await asyncio.wait_for(dispatcher.wait(), 30)
    finally:
        await connection.close()
    return measured


async def run_benchmark(
    *,
    recipients: int,
    dkim: bool,
    connections: int,
    processes: int = 1,
    dkim_algorithm: str = "rsa",
) -> dict[str, Any]:
    send_id = str(uuid.uuid4())
    rates: dict[str, list[float]] = {"smtplib": [], "wire": [], "pipelined": []}
    loads: dict[str, float] = {"start": _load()}
    with (
        tempfile.TemporaryDirectory() as tmp,
        scratch.vhost() as amqp_url,
        _sink() as (smtp_url, sink),
    ):
        dkim_key = _dkim_key(Path(tmp), dkim_algorithm) if dkim else None
        messages = baselines.prebuilt_messages(
            [(language, *audience.edition(language)) for language in LANGUAGES],
            secret=SECRET,
            dkim_key=dkim_key,
        )
        log_path = _log_path(Path(tmp))
        async with scratch.database() as database_url:
            seed_started = time.perf_counter()
            await audience.seed(
                database_url, recipients=recipients, send_id=send_id, issue_key="bench"
            )
            seed_seconds = time.perf_counter() - seed_started
            baselines_in = functools.partial(
                _baselines,
                smtp_url,
                messages,
                count=recipients,
                connections=connections,
                rates=rates,
                loads=loads,
            )
            await baselines_in(order=("smtplib", "wire"))
            env = _settings_env(
                database_url=database_url,
                amqp_url=amqp_url,
                smtp_url=smtp_url,
                connections=connections,
                dkim_key=dkim_key,
            )
            loads["e2e"] = _load()
            with log_path.open("wb") as log_file:
                send = await _end_to_end(
                    amqp_url=amqp_url,
                    database_url=database_url,
                    env=env,
                    log_file=log_file,
                    send_id=send_id,
                    processes=processes,
                )
        await baselines_in(order=("wire", "smtplib"))
        loads["end"] = _load()
        with log_path.open("rb") as lines:
            sent_lines = sum(1 for line in lines if b'"email_sent"' in line)
        sink.terminate()
        assert sink.stdout is not None
        received, latencies = _sink_report(sink.stdout.read().splitlines(), send.probes_sent)
    e2e = recipients / send.seconds
    smtplib_rate, wire_rate = _rate(rates["smtplib"]), _rate(rates["wire"])
    return {
        "recipients": recipients,
        "dkim": dkim_algorithm if dkim else False,
        "connections": connections,
        "processes": processes,
        "message_bytes": round(sum(len(m) for m, _ in messages) / len(messages)),
        "order": "smtplib, wire, e2e, wire, smtplib",
        # smtplib never pipelines; (b) and (c) run the same SmtpPool on the same sink
        "wire_pipelined": rates["pipelined"] == [1.0] * len(rates["wire"]),
        "e2e_msgs_per_s": round(e2e, 1),
        "smtplib_msgs_per_s": round(smtplib_rate, 1),
        "smtplib_runs": [round(r, 1) for r in rates["smtplib"]],
        "wire_msgs_per_s": round(wire_rate, 1),
        "wire_runs": [round(r, 1) for r in rates["wire"]],
        "e2e_vs_smtplib": round(e2e / smtplib_rate, 3),
        "e2e_vs_wire": round(e2e / wire_rate, 3),
        "plan_seconds": round(send.plan_seconds, 2),
        "peak_rss_mb": round(send.peak[0], 1),
        "seed_seconds": round(seed_seconds, 2),
        "dispatcher_cpu_ms_per_msg": round(send.peak[1] * 1000 / recipients, 3),
        # From PlanSend to done (start-up left out), and of that the event loop's thread: the
        # loop is what one dispatcher's rate is bound by; signing threads run beside it.
        "dispatcher_send_cpu_ms_per_msg": round(send.peak[2] * 1000 / recipients, 3),
        "dispatcher_loop_cpu_ms_per_msg": round(send.peak[3] * 1000 / recipients, 3),
        # The DKIM signing processes' part of the dispatcher's CPU (counted in the figures above).
        "dispatcher_signing_cpu_ms_per_msg": round(send.peak[4] * 1000 / recipients, 3),
        "cpu_count": os.cpu_count(),
        "load_average_1m": loads,
        "transactional_probes": f"{len(latencies)} of {len(send.probes_sent)} arrived",
        "transactional_p50_s": round(latencies[len(latencies) // 2], 3) if latencies else None,
        "transactional_max_s": round(latencies[-1], 3) if latencies else None,
        "sink_received": received,
        "sink_expected": 5 * recipients + len(send.probes_sent),
        "email_sent_log_lines": sent_lines,
    }


async def _send_once(
    *,
    smtp_url: str,
    folder: Path,
    recipients: int,
    dkim_key: Path | None,
    connections: int,
    processes: int,
) -> dict[str, Any]:
    """One end-to-end send on its own database and vhost, to an SMTP sink already running."""
    send_id = str(uuid.uuid4())
    log_path = _log_path(folder)
    with scratch.vhost() as amqp_url:
        async with scratch.database() as database_url:
            await audience.seed(
                database_url, recipients=recipients, send_id=send_id, issue_key="bench"
            )
            env = _settings_env(
                database_url=database_url,
                amqp_url=amqp_url,
                smtp_url=smtp_url,
                connections=connections,
                dkim_key=dkim_key,
            )
            load = _load()
            with log_path.open("wb") as log_file:
                send = await _end_to_end(
                    amqp_url=amqp_url,
                    database_url=database_url,
                    env=env,
                    log_file=log_file,
                    send_id=send_id,
                    processes=processes,
                )
    with log_path.open("rb") as lines:
        sent_lines = sum(1 for line in lines if b'"email_sent"' in line)
    return {
        "signed": dkim_key is not None,
        "load_average_1m": load,
        "e2e_msgs_per_s": round(recipients / send.seconds, 1),
        "cpu_ms_per_msg": round(send.peak[1] * 1000 / recipients, 3),
        "send_cpu_ms_per_msg": round(send.peak[2] * 1000 / recipients, 3),
        "loop_cpu_ms_per_msg": round(send.peak[3] * 1000 / recipients, 3),
        "signing_cpu_ms_per_msg": round(send.peak[4] * 1000 / recipients, 3),
        "plan_seconds": round(send.plan_seconds, 2),
        "peak_rss_mb": round(send.peak[0], 1),
        "email_sent_log_lines": sent_lines,
        "probes": len(send.probes_sent),
    }


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


async def run_dkim_comparison(
    *,
    recipients: int,
    connections: int,
    processes: int = 1,
    dkim_algorithm: str = "rsa",
    rounds: int = 3,
) -> dict[str, Any]:
    """End-to-end sends unsigned and signed, interleaved: the DKIM cost as a ratio.

    The order is unsigned, signed, unsigned, signed ... (``rounds`` of each), all with the same
    N, the same key and the same SMTP sink, each send on a fresh database and vhost; so a load
    that drifts during the command favours neither. The figure the issue asks for is
    ``dkim_vs_unsigned``: the median signed rate over the median unsigned rate.
    ``dkim_cpu_ratio`` is the dispatcher's median CPU per message (from ``PlanSend`` to done,
    its signing processes included) unsigned over signed: the ratio where that CPU is the
    limit, and on a shared machine the steadier figure. ``runs`` lists every send in order,
    with the 1-minute load average before it.
    """
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, _sink() as (smtp_url, sink):
        folder = Path(tmp)
        key = _dkim_key(folder, dkim_algorithm)
        for _ in range(rounds):
            for signed in (False, True):
                runs.append(
                    await _send_once(
                        smtp_url=smtp_url,
                        folder=folder,
                        recipients=recipients,
                        dkim_key=key if signed else None,
                        connections=connections,
                        processes=processes,
                    )
                )
        sink.terminate()
        assert sink.stdout is not None
        received, _ = _sink_report(sink.stdout.read().splitlines(), {})

    def median(signed: bool, name: str) -> float:
        return _median([run[name] for run in runs if run["signed"] is signed])

    unsigned_rate, signed_rate = median(False, "e2e_msgs_per_s"), median(True, "e2e_msgs_per_s")
    unsigned_cpu = median(False, "send_cpu_ms_per_msg")
    signed_cpu = median(True, "send_cpu_ms_per_msg")
    return {
        "recipients": recipients,
        "dkim": dkim_algorithm,
        "connections": connections,
        "processes": processes,
        "order": ", ".join(["unsigned, signed"] * rounds),
        "unsigned_e2e_msgs_per_s": round(unsigned_rate, 1),
        "signed_e2e_msgs_per_s": round(signed_rate, 1),
        "dkim_vs_unsigned": round(signed_rate / unsigned_rate, 3),
        # The dispatcher's CPU from PlanSend to done, signing processes included (medians).
        "unsigned_cpu_ms_per_msg": round(unsigned_cpu, 3),
        "signed_cpu_ms_per_msg": round(signed_cpu, 3),
        "dkim_cpu_ratio": round(unsigned_cpu / signed_cpu, 3),
        # Of that, the event loop's thread (what one dispatcher's rate is bound by) and the
        # signing processes'.
        "unsigned_loop_cpu_ms_per_msg": round(median(False, "loop_cpu_ms_per_msg"), 3),
        "signed_loop_cpu_ms_per_msg": round(median(True, "loop_cpu_ms_per_msg"), 3),
        "signed_signing_cpu_ms_per_msg": round(median(True, "signing_cpu_ms_per_msg"), 3),
        "unsigned_plan_seconds": round(median(False, "plan_seconds"), 2),
        "signed_plan_seconds": round(median(True, "plan_seconds"), 2),
        "cpu_count": os.cpu_count(),
        "sink_received": received,
        "sink_expected": sum(recipients + run["probes"] for run in runs),
        "runs": runs,
    }
