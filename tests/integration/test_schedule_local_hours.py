"""``--local-time 09:00`` for 10,000 readers in 24 time zones, on the real broker and database,
with a fake clock moved minute by minute through a day: each reader's delivery becomes due from
the ledger at 09:00 their time (nothing waits in a queue), none goes out early, none in the
quiet hours."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dispatcher.local_hours import in_quiet_hours
from shared.clock import FakeClock
from shared.db.engine import create_engine, session_factory
from shared.db.tables.deliveries import Send
from shared.db.tables.editions import Edition
from shared.db.tables.timestamps import UTCDateTime
from shared.messaging.publisher import Publisher
from shared.messaging.schemas import PlanSend, SendSchedule
from shared.messaging.topology import PLAN_SEND, connect
from tests.support import dispatch_seed, infra
from tests.support.schedule_clock import ClockedDispatcher, wait_until
from tests.support.test_mta import ScriptedMta

# 10,000 mails through one dispatcher and a real SMTP server: minutes on a loaded machine.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

READERS = 10_000
# 24 zones, whole, half and three-quarter hours, both sides of the date line, with and without
# daylight saving time.
ZONES = (
    "Europe/Minsk",
    "Europe/London",
    "Europe/Warsaw",
    "Europe/Vilnius",
    "Europe/Berlin",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
    "America/St_Johns",
    "America/Sao_Paulo",
    "Atlantic/Azores",
    "Asia/Tbilisi",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Almaty",
    "Asia/Bangkok",
    "Asia/Tokyo",
    "Australia/Adelaide",
    "Pacific/Auckland",
    "Pacific/Chatham",
    "Pacific/Kiritimati",
)
START = datetime(2027, 3, 1, 0, 0, tzinfo=UTC)  # ahead of the real clock (real deadlines)
STEP = timedelta(minutes=1)
QUIET = (time(22, 0), time(7, 0))

_SEED = text(
    "INSERT INTO subscriber (email, email_hash, email_domain, status, locale, created_at, "
    "updated_at, time_zone, cadence) "
    "SELECT 'tz-' || g || '@d' || (g % 40) || '.example.org', "
    "encode(sha256(('tz-' || g)::bytea), 'hex'), 'd' || (g % 40) || '.example.org', "
    "'active', (ARRAY['en','be','ru'])[g % 3 + 1], now(), now(), "
    "(CAST(:zones AS TEXT[]))[g % 24 + 1], 'every' FROM generate_series(1, :n) g"
)
_SEGMENTS = text(
    "INSERT INTO subscriber_language (subscriber_id, language) SELECT id, locale FROM subscriber"
)
# Rows on their way (published, claimed, waiting for a retry) or due: one snapshot, so a batch
# the broker refused (queued -> pending) is never missed between two counts.
_UNSETTLED = text(
    "SELECT COUNT(*) FROM delivery WHERE send_id = :s AND (status IN ('queued', 'sending', "
    "'deferred') OR (status = 'pending' AND due_at <= :now))"
).bindparams(bindparam("now", type_=UTCDateTime()))
_SENT = text(
    "SELECT d.id, s.time_zone FROM delivery d JOIN subscriber s ON s.id = d.subscriber_id "
    "WHERE d.send_id = :s AND d.status = 'sent'"
)


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    name, url = await dispatch_seed.fresh_postgres()
    try:
        yield url
    finally:
        await infra.drop_database(name)


@pytest.fixture
async def sessions(postgres_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(postgres_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def count(sessions: async_sessionmaker[AsyncSession], query: object, **params: object) -> int:
    async with sessions() as session:
        return int((await session.execute(query, params)).scalar_one())  # type: ignore[call-overload]


async def test_ten_thousand_readers_get_the_issue_at_nine_in_their_own_time_zone(
    vhost_url: str,
    postgres_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    async with sessions() as session:
        await session.execute(_SEED, {"zones": list(ZONES), "n": READERS})
        await session.execute(_SEGMENTS)
        await session.commit()
    send_id = str(uuid.uuid4())
    async with sessions() as session:  # short editions: the test is about hours, not bytes
        for language in ("en", "be", "ru"):
            session.add(
                Edition(
                    send_id=send_id,
                    issue_key="2027-w09",
                    language=language,
                    content_language=language,
                    subject=dispatch_seed.SUBJECTS[language],
                    html=dispatch_seed.edition_html(language, paragraphs=1),
                    text=dispatch_seed.edition_text(language, paragraphs=1),
                )
            )
        await session.commit()
    clock = FakeClock(START)
    sent_at: dict[int, tuple[datetime, str]] = {}
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=postgres_url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            quiet_hours="22:00-07:00",
            dispatch_outbox_sweep_s=0.1,
            dispatch_smtp_connections=8,
        )
        async with ClockedDispatcher(settings, clock=clock):
            connection = await connect(vhost_url)
            try:
                await (await Publisher.open(connection)).publish(
                    PlanSend(
                        send_id=send_id,
                        issue_key="2027-w09",
                        segments=["en", "be", "ru"],
                        schedule=SendSchedule(local_time="09:00"),
                    ),
                    routing_key=PLAN_SEND,
                )
            finally:
                await connection.close()

            async def planned() -> bool:
                async with sessions() as session:
                    send = await session.get(Send, send_id)
                return send is not None and send.status == "running"

            await wait_until(planned, "the send planned", timeout=600)
            now = START
            while now <= START + timedelta(hours=26):
                # Readers whose 09:00 is the start itself went out with the planning.
                if now == START or await count(sessions, _UNSETTLED, s=send_id, now=now):

                    async def settled(at: datetime = now) -> bool:
                        return not await count(sessions, _UNSETTLED, s=send_id, now=at)

                    await wait_until(settled, f"the deliveries due by {now} sent", timeout=600)
                    # Whatever went out since the last step went out at this fake minute.
                    async with sessions() as session:
                        for delivery_id, zone in await session.execute(_SENT, {"s": send_id}):
                            sent_at.setdefault(int(delivery_id), (now, str(zone)))
                now = clock.advance(STEP)
            send = await dispatch_seed.wait_for_send(sessions, send_id, timeout=600)
        copies = mta.handler.copies()
    assert send.total == READERS
    assert len(sent_at) == READERS, f"{READERS - len(sent_at)} deliveries never went out"
    assert set(copies.values()) == {1}
    late = []
    for moment, zone in sent_at.values():
        local = moment.astimezone(ZoneInfo(zone))
        nine = local.replace(hour=9, minute=0, second=0, microsecond=0)
        assert not in_quiet_hours(local.time(), QUIET), f"sent at {local} in {zone}: quiet hours"
        if not timedelta(0) <= local - nine < timedelta(minutes=5):
            late.append((zone, local.isoformat()))
    assert not late, f"{len(late)} deliveries not within 5 minutes after 09:00 local: {late[:5]}"
    assert {zone for _, zone in sent_at.values()} == set(ZONES)
