"""``newsletter bench signups``: a load test of the subscription service's signup form, fired
from a second process.

It migrates the database, gives the run a RabbitMQ vhost of its own (so thousands of
confirmation commands never reach a real renderer), starts ``python -m services.subscription``
as a separate process, then fires ``count`` signups at it with bounded concurrency (plus a
share of repeated addresses, sent concurrently with their first signup), probing ``/healthz``
all along. It then checks that every address is stored exactly once, that exactly one
confirmation command per address was queued, and prints signups/s and latency percentiles.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import pstats
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import psutil
from aio_pika.abc import AbstractRobustConnection
from sqlalchemy import text

from benchmarks import scratch
from benchmarks.signup_profile import Profile, Sampler
from shared.db.engine import create_engine
from shared.db.migrate import upgrade
from shared.messaging.topology import RENDERER_TRANSACTIONAL, connect, declare_topology
from shared.settings import DatabaseSettings


class BenchFailed(RuntimeError):
    """The load test found lost or duplicated signups, or could not run."""


@dataclass
class BenchReport:
    count: int
    repeats: int
    concurrency: int
    database: str
    elapsed_s: float
    latencies_s: list[float]
    statuses: dict[int, int]
    stored: int
    distinct: int
    commands: int
    healthz_s: list[float]
    liveness_s: list[float] = field(default_factory=list)
    probes_failed: int = 0
    workers: int = 1
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)
    transport_errors: list[str] = field(default_factory=list)
    service_cpu_s: float = 0.0
    service_rss_mb: float = 0.0
    client_cpu_s: float = 0.0
    problems: list[str] = field(default_factory=list)
    profile: Profile | None = None  # py-spy's samples of the service during the load
    profile_failure: str = ""  # why --profile has no samples

    def percentile(self, share: float) -> float:
        return _percentile(self.latencies_s, share)

    def __str__(self) -> str:
        total = self.count + self.repeats
        return "\n".join(
            [
                f"signups: {self.count} addresses + {self.repeats} repeats = {total} posts, "
                f"concurrency {self.concurrency}, database {self.database}, "
                f"{self.workers} service worker(s), load average "
                + " ".join(f"{v:.2f}" for v in self.load_average),
                f"throughput: {total / self.elapsed_s:.0f} signups/s "
                f"({total} in {self.elapsed_s:.1f} s)",
                f"latency: p50 {self.percentile(0.50) * 1000:.0f} ms, "
                f"p99 {self.percentile(0.99) * 1000:.0f} ms, "
                f"max {max(self.latencies_s) * 1000:.0f} ms, "
                f"mean {statistics.fmean(self.latencies_s) * 1000:.0f} ms",
                f"answers (0 = no answer): {dict(sorted(self.statuses.items()))}; "
                f"connections lost before an answer (then retried once): "
                f"{len(self.transport_errors)} {sorted(set(self.transport_errors))}",
                f"stored: {self.stored} subscribers, {self.distinct} distinct addresses "
                f"(expected {self.count}); confirmation commands queued: {self.commands}",
                f"service CPU: {self.service_cpu_s:.1f} s in all, "
                f"{self.service_cpu_s / total * 1000:.1f} ms per signup "
                f"(the ceiling of one process is about {total / max(self.service_cpu_s, 1e-9):.0f}"
                f" signups/s on a free core); resident memory at the end "
                f"{self.service_rss_mb:.0f} MB",
                f"load generator (this process) CPU: {self.client_cpu_s / total * 1000:.1f} ms "
                "per signup",
                "responsiveness (a fresh connection every 100 ms during the load): "
                f"/healthz on the health port {_spread(self.liveness_s)}; "
                f"on the app's port {_spread(self.healthz_s)}; "
                f"probes not answered 200: {self.probes_failed}",
                "result: " + ("OK, none lost, no duplicates" if not self.problems else "FAILED"),
            ]
            + (
                [self.profile.report(cpu_ms_per_signup=self.service_cpu_s / total * 1000)]
                if self.profile is not None
                else []
            )
            + ([self.profile_failure] if self.profile_failure else [])
        )


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def _spread(values: list[float]) -> str:
    """``p50 3 ms, p99 40 ms, max 52 ms over 400 probes``."""
    if not values:
        return "not probed"
    return (
        f"p50 {_percentile(values, 0.5) * 1000:.0f} ms, p99 {_percentile(values, 0.99) * 1000:.0f}"
        f" ms, max {max(values) * 1000:.0f} ms over {len(values)} probes"
    )


class _FormFields(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "input" and values.get("type") == "hidden" and values.get("name"):
            self.fields[str(values["name"])] = values.get("value") or ""


class _ProtocolError(RuntimeError):
    """The service's answer was not the HTTP/1.1 the client expects."""


class _Http11:
    """A minimal HTTP/1.1 keep-alive client for the load: one POST at a time per connection.

    httpx cost the load generator about 3 ms of CPU per signup, close to half of what the
    service spends on one, and on a 2-core machine the bench and the service share the cores.
    This writes one request and reads one ``Content-Length`` answer (uvicorn always sends
    one for these pages); anything else is a :class:`_ProtocolError`, counted like a lost
    connection.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, host: bytes
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._host = host
        self.closing = False  # the server said ``Connection: close``

    @classmethod
    async def open(cls, host: str, port: int) -> _Http11:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, host=f"{host}:{port}".encode())

    async def post(self, path: str, body: bytes, *, cookies: str) -> int:
        """Send a form post and read the whole answer; return its status code."""
        self._writer.write(
            b"POST %s HTTP/1.1\r\nHost: %s\r\nCookie: %s\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
            % (path.encode(), self._host, cookies.encode(), len(body), body)
        )
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise _ProtocolError(lines[0][:80].decode(errors="replace"))
        length: int | None = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"connection" and value.strip().lower() == b"close":
                self.closing = True
        if length is None:
            raise _ProtocolError("answer without Content-Length")
        await self._reader.readexactly(length)
        return int(parts[1])

    def close(self) -> None:
        self._writer.close()


class _Load:
    """The posts of a run, fired over ``concurrency`` keep-alive connections."""

    def __init__(
        self, base_url: str, *, fields: dict[str, str], cookies: str, posts: list[str]
    ) -> None:
        target = urlsplit(base_url)
        self._host, self._port = target.hostname or "127.0.0.1", target.port or 80
        self._fields = fields
        self._cookies = cookies
        self._pending = iter(posts)
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.errors: list[str] = []

    async def connection(self) -> None:
        """One keep-alive connection that posts the next address until none is left."""
        wire: _Http11 | None = None
        try:
            for address in self._pending:
                started = time.perf_counter()
                code = 0  # no answer at all: counted, reported, never hidden
                body = urlencode({**self._fields, "email": address, "languages": "en"}).encode()
                for attempt in (1, 2):
                    try:
                        if wire is None:
                            wire = await _Http11.open(self._host, self._port)
                        code = await wire.post("/subscribe", body, cookies=self._cookies)
                    except (OSError, asyncio.IncompleteReadError, _ProtocolError) as err:
                        # A connection that died before any answer (as a browser would, send
                        # once more: a signup is idempotent, so a retry cannot duplicate).
                        self.errors.append(type(err).__name__)
                        if wire is not None:
                            wire.close()
                        wire = None
                        if attempt == 1:
                            continue
                    break
                if wire is not None and wire.closing:
                    wire.close()
                    wire = None
                self.latencies.append(time.perf_counter() - started)
                self.statuses[code] = self.statuses.get(code, 0) + 1
        finally:
            if wire is not None:
                wire.close()


def _get_once(host: str, port: int, path: str, *, timeout_s: float = 30.0) -> int:
    """One ``GET`` on a fresh connection, as a kubelet's probe does; returns the status code."""
    with socket.create_connection((host, port), timeout=timeout_s) as wire:
        wire.sendall(
            b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
            % (path.encode(), host.encode())
        )
        answer = b""
        while b"\r\n" not in answer:
            chunk = wire.recv(4096)
            if not chunk:
                return 0
            answer += chunk
        parts = answer.split(b" ", 2)
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _probe(
    url: str,
    *,
    done: threading.Event,
    timings: list[float],
    failed: list[int],
    every_s: float = 0.1,
) -> None:
    """Time ``GET url`` every ``every_s`` until ``done``: is the service still responsive?

    It runs in a thread of its own with a blocking socket (no HTTP library: its own CPU would
    be timed too), not on the event loop that fires the signups: there a probe would wait
    behind 200 requests of our own client and time the load generator instead of the
    service. A probe that fails counts with the time it took to fail.
    """
    target = urlsplit(url)
    host, port = target.hostname or "127.0.0.1", target.port or 80
    while not done.is_set():
        started = time.perf_counter()
        code = 0
        with contextlib.suppress(OSError):
            code = _get_once(host, port, target.path or "/")
        timings.append(time.perf_counter() - started)
        if code != HTTPStatus.OK:
            failed.append(code)
        done.wait(every_s)


def _rss_mb(process: subprocess.Popen[bytes]) -> float:
    """Resident memory of the service process and its live workers, in MB."""
    try:
        parent = psutil.Process(process.pid)
        members = [parent, *parent.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for member in members:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total / 1e6


def _cpu_seconds(process: subprocess.Popen[bytes]) -> float:
    """User + system CPU time of the service process and its live workers so far."""
    try:
        parent = psutil.Process(process.pid)
        members = [parent, *parent.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for member in members:
        with contextlib.suppress(psutil.Error):
            times = member.cpu_times()
            total += times.user + times.system
    return total


def _package_of(filename: str) -> str:
    """``sqlalchemy``, ``services/subscription``, ``stdlib`` ...: who owns a profiled function."""
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    for ours in ("services/", "shared/"):
        if f"/{ours}" in filename:
            tail = filename.rsplit(f"/{ours}", 1)[1]
            return ours + tail.split("/", 1)[0]
    return "builtins" if filename.startswith("~") else "stdlib"


def top_functions(profile: Path, *, limit: int = 25) -> str:
    """Own CPU time of a cProfile dump per package, then its functions with the most own time.

    Cumulative times are left out: for coroutines cProfile counts every resumption as a call,
    which makes them meaningless.
    """
    stream = io.StringIO()
    stats = pstats.Stats(str(profile), stream=stream)
    shares: dict[str, float] = {}
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]]
    raw = stats.stats  # type: ignore[attr-defined]
    for (filename, _, _), (_, _, own, _, _) in raw.items():
        shares[_package_of(filename)] = shares.get(_package_of(filename), 0.0) + own
    total = sum(shares.values()) or 1.0
    lines = ["own CPU time per package:"]
    lines += [
        f"  {seconds:7.2f} s {seconds / total:6.1%}  {package}"
        for package, seconds in sorted(shares.items(), key=lambda kv: -kv[1])[:20]
    ]
    stats.sort_stats("tottime").print_stats(limit)
    return "\n".join(lines) + "\n" + stream.getvalue()


async def _form_fields(client: httpx.AsyncClient) -> dict[str, str]:
    """The hidden fields (CSRF token, time-trap stamp) of the form, as a browser keeps them."""
    parser = _FormFields()
    parser.feed((await client.get("/?lang=en")).text)
    return parser.fields


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _private_vhost(base_url: str) -> tuple[str, str]:
    try:
        return scratch.create_vhost(base_url, prefix="newsletter-bench")
    except (OSError, subprocess.SubprocessError) as err:
        raise BenchFailed(
            "the load test needs a local RabbitMQ and rabbitmqctl for a vhost of its own"
        ) from err


# The service under cProfile with a CPU clock: on a loaded machine a wall clock would charge
# every function with the time the process spent waiting for a core.
_PROFILED = """
import cProfile, sys, time
from services.subscription.cli import run_service
profiler = cProfile.Profile(time.process_time)
sys.argv = ["services.subscription"]
try:
    profiler.runcall(run_service)
except SystemExit:
    pass
finally:
    profiler.dump_stats({path!r})
"""


def _start_service(
    env: dict[str, str], log_path: Path, *, workers: int = 1, profile: Path | None = None
) -> subprocess.Popen[bytes]:
    """The service under test, in its own process(es), as in production.

    With ``profile`` the (single) service process runs under cProfile, which writes its
    statistics there when the process stops.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "services.subscription", "--workers", str(workers)]
    if profile is not None:
        command = [sys.executable, "-c", _PROFILED.format(path=str(profile))]
    with log_path.open("wb") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=log)  # noqa: S603


async def _wait_ready(client: httpx.AsyncClient, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchFailed(f"the service exited with {process.returncode}")
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    raise BenchFailed("the service did not become ready in 60 s")


async def run_bench(
    *,
    count: int,
    database_url: str | None,
    concurrency: int = 200,
    repeats: float = 0.02,
    response_floor_s: float = 0.2,
    workers: int = 1,
    profile: Path | None = None,
    profiler: str = "py-spy",
    log_level: str = "WARNING",
    var_dir: Path = Path("./var/bench"),
) -> BenchReport:
    """Run the load test; with ``profile``, ``profiler`` is ``py-spy`` (samples of the service
    and its workers during the load, printed by area) or ``cprofile`` (one worker under
    cProfile from start to stop; :func:`top_functions` prints its dump)."""
    if profiler not in {"py-spy", "cprofile"}:
        raise BenchFailed(f"--profiler is py-spy or cprofile, not {profiler!r}")
    database_url = database_url or DatabaseSettings().database_url
    try:
        await asyncio.to_thread(upgrade, database_url)
    except Exception as err:  # any driver's error: say which database and why
        raise BenchFailed(f"cannot migrate {urlsplit(database_url).path}: {err}") from err
    base_amqp = os.environ.get("NEWSLETTER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    vhost, amqp_url = await asyncio.to_thread(_private_vhost, base_amqp)
    connection = await connect(amqp_url)
    await declare_topology(await connection.channel())
    port, health_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "NEWSLETTER_MODE": "demo",
        "NEWSLETTER_SECRET_KEY": secrets.token_urlsafe(48),
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_AMQP_URL": amqp_url,
        "NEWSLETTER_SUBSCRIPTION_PORT": str(port),
        "NEWSLETTER_SUBSCRIPTION_HEALTH_PORT": str(health_port),
        "NEWSLETTER_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "NEWSLETTER_IP_LIMIT": "0",  # every post comes from 127.0.0.1
        "NEWSLETTER_SIGNUP_MIN_SECONDS": "1",
        "NEWSLETTER_RESPONSE_FLOOR_S": str(response_floor_s),
        "NEWSLETTER_LOG_LEVEL": log_level,
        "NEWSLETTER_LOG_FORMAT": "json",
    }
    process = _start_service(
        env,
        var_dir / f"subscription-{vhost}.log",
        workers=workers,
        profile=profile if profiler == "cprofile" else None,
    )
    try:
        return await _fire(
            base_url=f"http://127.0.0.1:{port}",
            health_url=f"http://127.0.0.1:{health_port}/healthz",
            process=process,
            database_url=database_url,
            connection_queue=connection,
            count=count,
            concurrency=concurrency,
            repeats=repeats,
            workers=workers,
            samples=profile if profiler == "py-spy" else None,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 30)
        except subprocess.TimeoutExpired:
            process.kill()
        await connection.close()
        await asyncio.to_thread(scratch.delete_vhost, vhost)


async def _fire(
    *,
    base_url: str,
    health_url: str,
    process: subprocess.Popen[bytes],
    database_url: str,
    connection_queue: AbstractRobustConnection,
    count: int,
    concurrency: int,
    repeats: float,
    workers: int = 1,
    samples: Path | None = None,
) -> BenchReport:
    run = uuid.uuid4().hex[:10]
    addresses = [f"bench-{run}-{i}@example.org" for i in range(count)]
    extra = int(count * repeats)
    posts = addresses + random.sample(addresses, min(extra, count))
    random.shuffle(posts)
    async with httpx.AsyncClient(base_url=base_url, timeout=120.0) as client:
        await _wait_ready(client, process)
        fields = await _form_fields(client)
        cookies = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    await asyncio.sleep(1.1)  # the time trap wants a person's pause
    load = _Load(base_url, fields=fields, cookies=cookies, posts=posts)
    done = threading.Event()
    health: list[float] = []
    liveness: list[float] = []
    failed: list[int] = []
    probers = [
        asyncio.create_task(asyncio.to_thread(_probe, url, done=done, timings=out, failed=failed))
        for url, out in ((f"{base_url}/healthz", health), (health_url, liveness))
    ]
    sampler = Sampler(process.pid, samples) if samples is not None else None
    cpu_before = _cpu_seconds(process)
    client_cpu_before = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(load.connection() for _ in range(min(concurrency, len(posts)))))
    elapsed = time.perf_counter() - started
    service_cpu = _cpu_seconds(process) - cpu_before
    service_rss = _rss_mb(process)
    client_cpu = time.process_time() - client_cpu_before
    profile_failure = ""
    if sampler is not None:
        await asyncio.to_thread(sampler.stop)
        profile_failure = await asyncio.to_thread(sampler.failure)
    load_average = os.getloadavg()
    done.set()
    await asyncio.gather(*probers)
    stored, distinct = await _count_stored(database_url, f"bench-{run}-%")
    commands = await _queued_commands(connection_queue)
    report = BenchReport(
        count=count,
        repeats=len(posts) - count,
        concurrency=concurrency,
        database=urlsplit(database_url).scheme,
        elapsed_s=elapsed,
        latencies_s=load.latencies,
        statuses=load.statuses,
        stored=stored,
        distinct=distinct,
        commands=commands,
        healthz_s=health,
        liveness_s=liveness,
        probes_failed=len(failed),
        profile=await asyncio.to_thread(Profile.read, samples) if samples is not None else None,
        profile_failure=profile_failure,
        workers=workers,
        load_average=load_average,
        transport_errors=load.errors,
        service_cpu_s=service_cpu,
        service_rss_mb=service_rss,
        client_cpu_s=client_cpu,
    )
    _judge(report, posts=len(posts), process=process)
    return report


def _judge(report: BenchReport, *, posts: int, process: subprocess.Popen[bytes]) -> None:
    """Fill ``report.problems``; raise :class:`BenchFailed` if there is any."""
    statuses, stored, distinct = report.statuses, report.stored, report.distinct
    count, commands = report.count, report.commands
    if process.poll() is not None:
        report.problems.append(f"the service process exited with {process.returncode}")
    if statuses != {200: posts}:
        report.problems.append(f"not every post was answered 200: {statuses}")
    if stored != count or distinct != count:
        report.problems.append(f"stored {stored} rows / {distinct} addresses, expected {count}")
    if commands != count:
        report.problems.append(f"{commands} confirmation commands queued, expected {count}")
    if report.problems:
        raise BenchFailed(str(report) + "\n" + "\n".join(report.problems))


async def _count_stored(database_url: str, pattern: str) -> tuple[int, int]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            row = (
                await connection.execute(
                    text(
                        "SELECT count(*), count(DISTINCT email) FROM subscriber "
                        "WHERE email LIKE :pattern"
                    ),
                    {"pattern": pattern},
                )
            ).one()
            return int(row[0]), int(row[1])
    finally:
        await engine.dispose()


async def _queued_commands(connection: AbstractRobustConnection) -> int:
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(RENDERER_TRANSACTIONAL.name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await channel.close()
