"""The claim reads the reader again, on SQLite and PostgreSQL: whoever unsubscribed, unticked
the edition, was suppressed, paused or went monthly (with this month's issue delivered) after
the send was planned is not claimed, and the row says why; everyone else is claimed. The whole
batch costs one statement that reads the readers and claims or drops each row, however many
rows it holds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from services.dispatcher import cadence, ledger
from shared.addresses import address_domain, address_hash
from shared.db.engine import create_engine, session_factory
from shared.db.tables.deliveries import Delivery, DeliveryStatus, Send
from shared.db.tables.subscribers import Subscriber, SubscriberLanguage, Suppression

pytestmark = pytest.mark.integration

NOW = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)  # the dispatcher's clock at the claim
# reader -> (status, cadence, paused_until, reads "be", suppressed)
READERS: dict[str, tuple[str, str, datetime | None, bool, bool]] = {
    "every": ("active", "every", None, True, False),
    "paused": ("active", "paused", NOW + timedelta(weeks=3), True, False),
    "pause-over": ("active", "paused", NOW - timedelta(days=1), True, False),
    "monthly-had-one": ("active", "monthly", None, True, False),
    "monthly-first": ("active", "monthly", None, True, False),
    "monthly-last-month": ("active", "monthly", None, True, False),
    "unsubscribed": ("unsubscribed", "every", None, True, False),
    "unticked": ("active", "every", None, False, False),
    "suppressed": ("active", "every", None, True, True),
}


async def test_a_claim_drops_readers_who_changed_their_minds_with_the_reason_in_one_statement(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    tag = uuid.uuid4().hex[:8]
    earlier, current = str(uuid.uuid4()), str(uuid.uuid4())
    ids: dict[str, int] = {}
    try:
        async with sessions() as session:
            session.add(Send(id=earlier, issue_key=f"{tag}-9", languages="be", status="done"))
            session.add(Send(id=current, issue_key=f"{tag}-10", languages="be", status="running"))
            await session.flush()
            readers: dict[str, Subscriber] = {}
            for name, (status, chosen, until, reads, suppressed) in READERS.items():
                address = f"{name}-{tag}@example.org"
                reader = Subscriber(
                    email=address,
                    email_hash=address_hash(address),
                    email_domain=address_domain(address),
                    status=status,
                    locale="be",
                    cadence=chosen,
                    paused_until=until,
                )
                session.add(reader)
                await session.flush()
                assert reader.id is not None
                readers[name] = reader
                if reads:
                    session.add(SubscriberLanguage(subscriber_id=reader.id, language="be"))
                if suppressed:
                    session.add(Suppression(email_hash=reader.email_hash, reason="hard_bounce"))
            # Issue 9 reached two monthly readers: one this month, one last month.
            for name, when in (
                ("monthly-had-one", NOW - timedelta(days=3)),
                ("monthly-last-month", NOW - timedelta(days=20)),
            ):
                session.add(_delivery(earlier, readers[name], status="sent", created_at=when))
            await session.flush()
            for name, reader in readers.items():
                row = _delivery(
                    current, reader, status="queued", created_at=NOW - timedelta(hours=2)
                )
                session.add(row)
                await session.flush()
                assert row.id is not None
                ids[name] = row.id
            await session.commit()

        statements: list[str] = []

        def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
            statements.append(statement)

        event.listen(engine.sync_engine, "before_cursor_execute", seen)
        claims = await ledger.claim(
            engine,
            [ledger.ClaimRequest(ident, redelivered=False) for ident in ids.values()],
            schedule_now=NOW,
        )
        event.remove(engine.sync_engine, "before_cursor_execute", seen)
        async with sessions() as session:
            rows = {
                name: await session.get(Delivery, ident, populate_existing=True)
                for name, ident in ids.items()
            }
    finally:
        await engine.dispose()

    by_name = dict(zip(ids, claims, strict=True))
    assert {n for n, c in by_name.items() if c.claimed} == {
        "every",
        "pause-over",
        "monthly-first",
        "monthly-last-month",
    }
    expected = {
        "paused": (DeliveryStatus.CANCELLED, cadence.PAUSED_REASON),
        "monthly-had-one": (DeliveryStatus.CANCELLED, cadence.MONTHLY_REASON),
        "unsubscribed": (DeliveryStatus.UNSUBSCRIBED, ledger.NOT_SUBSCRIBED),
        "unticked": (DeliveryStatus.UNSUBSCRIBED, ledger.EDITION_DROPPED),
        "suppressed": (DeliveryStatus.UNSUBSCRIBED, ledger.SUPPRESSED),
    }
    assert {n: (c.status, c.reason) for n, c in by_name.items() if not c.claimed} == expected
    stored = {n: (r.status, r.smtp_reply) for n, r in rows.items() if r is not None}
    assert {n: stored[n] for n in expected} == expected, "the ledger keeps the reason"
    assert all(stored[n][0] == DeliveryStatus.SENDING for n in READERS if n not in expected)
    reading_readers = [s for s in statements if "subscriber" in s]
    assert len(reading_readers) == 1, f"one statement per batch reads the readers: {statements}"
    writes = [s for s in statements if "UPDATE delivery" in s]
    assert len(writes) == 1, f"one statement claims the batch and drops the unwanted: {writes}"


def _delivery(send_id: str, reader: Subscriber, *, status: str, created_at: datetime) -> Delivery:
    assert reader.id is not None
    assert reader.email is not None
    return Delivery(
        dedupe_key=f"send:{send_id}:{reader.id}:be",
        send_id=send_id,
        subscriber_id=reader.id,
        email=reader.email,
        email_domain=reader.email_domain,
        language="be",
        status=status,
        created_at=created_at,
        updated_at=created_at,
    )
