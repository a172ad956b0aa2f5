"""What one delivery costs the database: how often its row is written, and in how many statements.

Every ``UPDATE`` of a ``delivery`` row is a new row version in the heap and in each of its six
indexes, and WAL for all of them; on PostgreSQL every statement the dispatcher runs is also
planned afresh (``shared/db/engine.py``). So the relay writes a row once when it queues it (its
deadline runs from that mark, not rewritten at the confirm), and a batch of outcomes is one
statement on PostgreSQL, with the same result as the per-row statement SQLite runs.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import event, text

from services.dispatcher import ledger
from services.dispatcher.metrics import DispatcherMetrics
from services.dispatcher.planner import Planner
from shared.db.engine import create_engine, session_factory
from shared.db.tables.deliveries import Delivery, Send
from shared.db.tables.timestamps import utcnow
from shared.messaging.schemas import DeliverIssue
from tests.support import dispatch_seed, infra

pytestmark = pytest.mark.integration


class _Publisher:
    """Takes every batch as the broker would (confirmed), and keeps the jobs."""

    def __init__(self) -> None:
        self.jobs: list[DeliverIssue] = []

    async def publish_many(self, messages: list[DeliverIssue], **_: Any) -> None:
        self.jobs += messages


def _statements(engine: Any) -> list[tuple[str, bool]]:
    """Every statement the engine sends from now on, and whether it went as an executemany."""
    seen: list[tuple[str, bool]] = []

    def note(_conn: Any, _cursor: Any, statement: str, _params: Any, _ctx: Any, many: bool) -> None:
        seen.append((statement, many))

    event.listen(engine.sync_engine, "before_cursor_execute", note)
    return seen


async def test_the_relay_writes_each_row_once_with_its_deadline_from_the_mark(
    tmp_path: Path,
) -> None:
    name, url = await dispatch_seed.fresh_postgres()
    engine = create_engine(url)
    sessions = session_factory(engine)
    send_id = str(uuid.uuid4())
    try:
        await dispatch_seed.add_subscribers(sessions, 5, languages=("en",))
        async with sessions() as session:
            session.add(Send(id=send_id, issue_key="w50", languages="en", status="running"))
            await session.flush()
            await session.execute(
                text(
                    "INSERT INTO delivery (dedupe_key, kind, send_id, subscriber_id, email, "
                    "email_domain, language, status, attempts, smtp_reply, message_id, "
                    "created_at, updated_at, retries, redriven) SELECT 'send:' || :s || ':' || "
                    "id, 'issue', :s, id, email, email_domain, 'en', 'pending', 0, '', '', "
                    "now(), now(), 0, 0 FROM subscriber"
                ),
                {"s": send_id},
            )
            await session.commit()
        settings = dispatch_seed.make_settings(
            amqp_url="amqp://guest:guest@127.0.0.1:5672/",
            database_url=url,
            smtp_url="smtp://127.0.0.1:9",
            tmp_path=tmp_path,
            dispatch_queued_deadline_s=120.0,
        )
        publisher = _Publisher()
        planner = Planner(
            settings=settings,  # type: ignore[arg-type]
            engine=engine,
            sessions=sessions,
            publisher=publisher,  # type: ignore[arg-type]
            raw_channel=None,
            metrics=DispatcherMetrics.create(CollectorRegistry()),
        )
        statements = _statements(engine)
        assert await planner.relay(send_id) == 5
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    text("SELECT status, queued_at, due_at FROM delivery WHERE send_id = :s"),
                    {"s": send_id},
                )
            ).all()
    finally:
        await engine.dispose()
        await infra.drop_database(name)
    assert len(publisher.jobs) == 5, "every pending row was published"
    assert {r[0] for r in rows} == {"queued"}
    assert all(r[2] - r[1] == timedelta(seconds=120) for r in rows), (
        f"a queued row's deadline is the queued deadline from its mark, not rewritten: {rows}"
    )
    updates = [s for s, _ in statements if s.lstrip().upper().startswith("UPDATE DELIVERY")]
    assert len(updates) == 1, f"one write of the rows per relayed batch, not {updates}"


async def test_a_batch_of_outcomes_is_one_statement_on_postgresql_with_the_same_rows(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    states = ("sending", "sending", "sending", "sending", "sent")
    ids: list[int] = []
    tag = uuid.uuid4().hex[:8]
    try:
        async with sessions() as session:
            for n, state in enumerate(states):
                row = Delivery(
                    dedupe_key=f"rows:{tag}:{n}",
                    email=f"r{n}@example.org",
                    email_domain="example.org",
                    language="en",
                    status=state,
                    message_id="<kept@example.org>" if n == 3 else "",
                    retries=1,
                )
                session.add(row)
                await session.flush()
                assert row.id is not None
                ids.append(row.id)
            await session.commit()
        later = utcnow() + timedelta(minutes=10)
        results = [
            ledger.Result(ids[0], None, "sent", 250, "2.0.0 ok", "<a@example.org>"),
            ledger.Result(ids[1], None, "deferred", 451, "4.7.1 later", "<b@example.org>", later),
            ledger.Result(ids[2], None, "bounced", 550, "5.1.1 no such user", "<c@example.org>"),
            ledger.Result(ids[3], None, "unknown", None, "timed out"),
            ledger.Result(ids[4], None, "failed", 554, "too late: it was sent"),
        ]
        statements = _statements(engine)
        await ledger.record(engine, results)
        async with engine.connect() as connection:
            found = {
                int(r[0]): tuple(r[1:])
                for r in await connection.execute(
                    text(
                        "SELECT id, status, smtp_code, smtp_reply, message_id, retries, "
                        "sent_at IS NOT NULL, due_at IS NOT NULL, lease_until IS NULL "
                        "FROM delivery WHERE dedupe_key LIKE :key"
                    ),
                    {"key": f"rows:{tag}:%"},
                )
            }
    finally:
        await engine.dispose()
    assert found == {
        ids[0]: ("sent", 250, "2.0.0 ok", "<a@example.org>", 1, True, False, True),
        ids[1]: ("deferred", 451, "4.7.1 later", "<b@example.org>", 2, False, True, True),
        ids[2]: ("bounced", 550, "5.1.1 no such user", "<c@example.org>", 1, False, False, True),
        ids[3]: ("unknown", None, "timed out", "<kept@example.org>", 1, False, False, True),
        ids[4]: ("sent", None, "", "", 1, False, False, True),
    }, "outcomes as the per-row rule writes them (a sent row is never overwritten)"
    updates = [(s, many) for s, many in statements if "UPDATE delivery" in s]
    if engine.dialect.name == "postgresql":
        assert len(updates) == 1, f"one statement for the batch: {updates}"
        assert not updates[0][1], "the batch is one execution, not one per row"
