"""Seeding for the dispatcher's tests: subscribers in segments, editions with markers, waits.

Editions are inserted directly into the ``edition`` table, with the per-recipient markers of
``shared.messaging.placeholders`` in html and text: that table is the renderer's real contract.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence

from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.addresses import address_domain, address_hash
from shared.db.tables.deliveries import RECEIVED_STATUSES, Delivery, Send
from shared.db.tables.editions import Edition
from shared.db.tables.subscribers import Subscriber, SubscriberLanguage
from shared.db.tables.timestamps import UTCDateTime, utcnow
from shared.messaging import placeholders

SUBJECTS = {
    "en": "Weekly digest: what happened",
    "be": "Штотыднёвы дайджэст: што здарылася",
    "ru": "Еженедельный дайджест: что случилось",
}
# SMTP ends the data at a line holding a single dot: lines that start with one must be stuffed.
LEADING_DOT_LINE = ".NET developers: see the last item."
PARAGRAPH = {
    "en": "The council met on Tuesday and agreed the budget for the new library. ",
    "be": "Рада сабралася ў аўторак і зацвердзіла бюджэт новай бібліятэкі. ",
    "ru": "Совет собрался во вторник и утвердил бюджет новой библиотеки. ",
}


def edition_html(language: str, *, paragraphs: int = 20) -> str:
    # One long line per paragraph on purpose: the dispatcher must wrap it under 998 bytes.
    body = "".join(f"<p>{PARAGRAPH[language] * 12}</p>\n" for _ in range(paragraphs))
    return (
        f'<!doctype html><html lang="{language}"><body><h1>{SUBJECTS[language]}</h1>\n{body}'
        f"<p>To: {placeholders.RECIPIENT}</p>\n"
        f'<p><a href="{placeholders.UNSUBSCRIBE_URL}">unsubscribe</a> '
        f'<a href="{placeholders.PREFERENCES_URL}">preferences</a></p></body></html>\n'
    )


def edition_text(language: str, *, paragraphs: int = 20) -> str:
    body = "\n\n".join(PARAGRAPH[language] * 12 for _ in range(paragraphs))
    return (
        f"{SUBJECTS[language]}\n\n{body}\n\n{LEADING_DOT_LINE}\n\n"
        f"Unsubscribe:\n{placeholders.UNSUBSCRIBE_URL}\n"
        f"Preferences:\n{placeholders.PREFERENCES_URL}\n"
    )


async def add_editions(
    sessions: async_sessionmaker[AsyncSession],
    send_id: str,
    languages: Iterable[str],
    *,
    paragraphs: int = 20,
) -> None:
    """The send's editions (``paragraphs`` long paragraphs each; 1 where bytes do not matter)."""
    async with sessions() as session:
        for language in languages:
            session.add(
                Edition(
                    send_id=send_id,
                    issue_key="2026-w48",
                    language=language,
                    content_language=language,
                    subject=SUBJECTS[language],
                    html=edition_html(language, paragraphs=paragraphs),
                    text=edition_text(language, paragraphs=paragraphs),
                )
            )
        await session.commit()


async def add_subscribers(
    sessions: async_sessionmaker[AsyncSession],
    per_language: int,
    *,
    languages: Iterable[str] = ("en", "be", "ru"),
    domains: tuple[str, ...] = ("example.org", "example.net", "example.com"),
    status: str = "active",
    prefix: str = "reader",
) -> list[str]:
    """Subscribers ``<prefix>-<lang>-<n>@<domain>``; returns their addresses."""
    addresses: list[str] = []
    tag = uuid.uuid4().hex[:6]
    async with sessions() as session:
        for language in languages:
            for n in range(per_language):
                address = f"{prefix}-{tag}-{language}-{n}@{domains[n % len(domains)]}"
                subscriber = Subscriber(
                    email=address,
                    email_hash=address_hash(address),
                    email_domain=address_domain(address),
                    status=status,
                    locale=language,
                )
                session.add(subscriber)
                await session.flush()
                assert subscriber.id is not None
                session.add(SubscriberLanguage(subscriber_id=subscriber.id, language=language))
                addresses.append(address)
        await session.commit()
    return addresses


async def wait_for_send(
    sessions: async_sessionmaker[AsyncSession], send_id: str, *, timeout: float = 60.0
) -> Send:
    deadline = time.monotonic() + timeout
    while True:
        async with sessions() as session:
            send = await session.get(Send, send_id)
        if send is not None and send.status == "done":
            return send
        if time.monotonic() > deadline:
            counts = await status_counts(sessions, send_id)
            raise AssertionError(
                f"send {send_id} not done in {timeout}s: {send and send.status} {counts}"
            )
        await asyncio.sleep(0.2)


async def status_counts(sessions: async_sessionmaker[AsyncSession], send_id: str) -> dict[str, int]:
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT status, COUNT(*) FROM delivery WHERE send_id = :s GROUP BY status"),
            {"s": send_id},
        )
        return {str(r[0]): int(r[1]) for r in rows}


async def deliveries(sessions: async_sessionmaker[AsyncSession], send_id: str) -> list[Delivery]:
    from sqlmodel import select

    async with sessions() as session:
        return list((await session.exec(select(Delivery).where(Delivery.send_id == send_id))).all())


class RunningDispatcher:
    """``services.dispatcher.service.run`` as a task of the test's loop.

    Entered once the dispatcher has started: its probe server (on a port of this test's own)
    answers, and the service starts that only after every consumer, so a message the test
    publishes next finds its queues consumed (a per-process queue such as the domain alerts'
    exists only from then on).
    """

    def __init__(self, settings: object, *, start_timeout: float = 120.0) -> None:
        self.settings = settings
        self.start_timeout = start_timeout
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RunningDispatcher:
        import httpx

        from services.dispatcher import service
        from tests.support.ports import free_port

        port = free_port()
        settings = self.settings.model_copy(update={"dispatcher_probe_port": port})  # type: ignore[attr-defined]
        self.task = asyncio.create_task(service.run(settings, stop=self.stop))
        deadline = time.monotonic() + self.start_timeout
        async with httpx.AsyncClient(timeout=5.0) as client:
            while True:
                if self.task.done():
                    self.task.result()
                    raise AssertionError("the dispatcher stopped while starting")
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"the dispatcher did not start in {self.start_timeout}s")
                await asyncio.sleep(0.1)

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 60)


def make_settings(
    *, amqp_url: str, database_url: str, smtp_url: str, tmp_path: object, **extra: object
) -> object:
    from services.dispatcher.settings import load_dispatcher_settings

    values: dict[str, object] = {
        "mode": "test",
        "amqp_url": amqp_url,
        "database_url": database_url,
        "smtp_url": smtp_url,
        "var_dir": tmp_path,
        "secret_key": "test-secret-key-" + "x" * 32,
        "dispatch_retry_tiers": "1s",
        "dispatch_outbox_sweep_s": 1.0,
        "smtp_timeout_s": 2.0,
    }
    values.update(extra)
    return load_dispatcher_settings(**values)


async def publish(amqp_url: str, message: object, *, routing_key: str, **kwargs: object) -> None:
    from shared.messaging.publisher import Publisher
    from shared.messaging.topology import connect

    connection = await connect(amqp_url)
    try:
        publisher = await Publisher.open(connection)
        await publisher.publish(message, routing_key=routing_key, **kwargs)  # type: ignore[arg-type]
    finally:
        await connection.close()


async def plan(amqp_url: str, send_id: str, segments: Sequence[str]) -> None:
    """Publish the ``PlanSend`` of a test send (issue ``w48``) to those segments."""
    from shared.messaging.schemas import PlanSend
    from shared.messaging.topology import PLAN_SEND

    await publish(
        amqp_url,
        PlanSend(send_id=send_id, issue_key="w48", segments=list(segments)),
        routing_key=PLAN_SEND,
    )


async def wait_until(condition: Callable[[], bool], *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        if condition():
            return
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met in {timeout}s")


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 60.0, what: str = "condition"
) -> None:
    """Poll an async ``check`` (a database or queue read) until it holds; fail after
    ``timeout`` seconds naming ``what``. Generous by default: the suite runs on three xdist
    workers on a loaded machine."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not so after {timeout}s")
        await asyncio.sleep(0.1)


async def consumers_on(amqp_url: str, queue: str) -> int:
    """How many consumers RabbitMQ counts on ``queue`` right now."""
    from shared.messaging.topology import connect

    connection = await connect(amqp_url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.consumer_count or 0)
    finally:
        await connection.close()


async def wait_for_consumers(amqp_url: str, queue: str, count: int, timeout: float = 90.0) -> None:
    """Until ``count`` consumers take from ``queue``: the processes started are ready to work
    (a process still importing on a loaded machine would otherwise get no share)."""

    async def enough() -> bool:
        return await consumers_on(amqp_url, queue) >= count

    await eventually(enough, timeout=timeout, what=f"{count} consumers on {queue}")


# The reader's cadence (issue 17), as the planner applies it: other tests in the shared
# database may leave a paused reader, or a monthly one who had an issue this month.
_RECEIVED = ", ".join(f"'{status}'" for status in sorted(RECEIVED_STATUSES))
_CADENCE_ALLOWS = (
    "AND (s.cadence <> 'paused' OR s.paused_until IS NULL OR s.paused_until <= :now) "
    "AND (s.cadence <> 'monthly' OR NOT EXISTS (SELECT 1 FROM delivery m "
    "JOIN send ms ON ms.id = m.send_id WHERE m.subscriber_id = s.id "
    "AND m.language = sl.language AND ms.test_to IS NULL AND m.created_at >= :month_start "
    f"AND m.status IN ({_RECEIVED}))) "
)


def _cadence_params() -> dict[str, object]:
    now = utcnow()
    return {
        "now": now,
        "month_start": now.replace(day=1, hour=0, minute=0, second=0, microsecond=0),
    }


def _with_cadence(sql: str) -> TextClause:
    return text(sql).bindparams(
        bindparam("now", type_=UTCDateTime()), bindparam("month_start", type_=UTCDateTime())
    )


async def expected_audience(
    sessions: async_sessionmaker[AsyncSession], segments: Iterable[str]
) -> set[str]:
    """Who a send to ``segments`` must reach: active, unsuppressed members of a segment."""
    async with sessions() as session:
        rows = await session.execute(
            _with_cadence(
                "SELECT DISTINCT s.email FROM subscriber s "
                "JOIN subscriber_language sl ON sl.subscriber_id = s.id "
                "WHERE s.status = 'active' AND s.email IS NOT NULL AND sl.language IN "
                "(" + ",".join(f"'{lang}'" for lang in segments) + ") "
                "AND NOT EXISTS (SELECT 1 FROM suppression p "
                "WHERE p.email_hash = s.email_hash AND p.lifted_at IS NULL) " + _CADENCE_ALLOWS
            ),
            _cadence_params(),
        )
        return {str(r[0]) for r in rows}


async def expected_copies(
    sessions: async_sessionmaker[AsyncSession], segments: Iterable[str]
) -> dict[str, int]:
    """How many mails each address must get from a send to ``segments``: one per segment it
    is in (a reader of en and ru gets both editions)."""
    async with sessions() as session:
        rows = await session.execute(
            _with_cadence(
                "SELECT s.email, COUNT(*) FROM subscriber s "
                "JOIN subscriber_language sl ON sl.subscriber_id = s.id "
                "WHERE s.status = 'active' AND s.email IS NOT NULL AND sl.language IN "
                "(" + ",".join(f"'{lang}'" for lang in segments) + ") "
                "AND NOT EXISTS (SELECT 1 FROM suppression p "
                "WHERE p.email_hash = s.email_hash AND p.lifted_at IS NULL) "
                + _CADENCE_ALLOWS
                + "GROUP BY s.email"
            ),
            _cadence_params(),
        )
        return {str(r[0]): int(r[1]) for r in rows}


def settings_env(settings: object) -> dict[str, str]:
    """The environment that makes a process read ``settings`` (``NEWSLETTER_*``, JSON logs)."""
    import os

    values = settings.model_dump(by_alias=False)  # type: ignore[attr-defined]
    env = dict(os.environ)
    for key, value in values.items():
        if value is None:
            continue
        raw = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        env[f"NEWSLETTER_{key.upper().rstrip('_')}"] = str(raw)
    env["NEWSLETTER_FROM"] = values["from_"]
    env["NEWSLETTER_LOG_FORMAT"] = "json"
    return env


def spawn_dispatcher(
    *, settings: object, log_path: object, **env_overrides: str
) -> subprocess.Popen[bytes]:
    """A real dispatcher process (``python -m services.dispatcher``) logging JSON to a file."""
    import sys
    from pathlib import Path

    from tests.support.ports import free_port

    env = settings_env(settings)
    env["NEWSLETTER_DISPATCHER_PROBE_PORT"] = str(free_port())
    env.update(env_overrides)
    log = Path(str(log_path)).open("ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "services.dispatcher"], env=env, stdout=log, stderr=log
    )


def log_events(log_path: object, event: str) -> int:
    from pathlib import Path

    path = Path(str(log_path))
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text(errors="replace").splitlines() if f'"{event}"' in line)


async def fresh_postgres() -> tuple[str, str]:
    """A throwaway migrated PostgreSQL database (the caller drops it with infra)."""
    from shared.db.migrate import upgrade_async
    from tests.support import infra

    name, url = await infra.create_database()
    await upgrade_async(url)
    return name, url
