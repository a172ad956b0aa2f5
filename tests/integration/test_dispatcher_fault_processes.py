"""Faults of dispatcher processes: kill -9 mid-send then restart; three processes on the queues.

After each: every audience member has exactly one terminal state, the SMTP server received
every sent delivery, and duplicates are at most the in-flight window and visible in the logs.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db.tables.deliveries import TERMINAL_STATUSES
from shared.messaging.topology import DISPATCHER_DELIVERIES
from tests.support import dispatch_seed
from tests.support.own_database import OwnDatabase
from tests.support.test_mta import ScriptedMta

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
# The fixtures own_database, own_database_url, one_node and cluster
pytest_plugins = ("tests.support.dispatch_fixtures",)
PREFETCH = 40
SEGMENTS = ["en", "be", "ru"]


async def check_ledger(
    sessions: async_sessionmaker[AsyncSession], send_id: str, copies: dict[str, int]
) -> tuple[set[str], int]:
    """Exactly one terminal state each; every sent delivery arrived. Returns (sent, duplicates)."""
    audience = await dispatch_seed.expected_audience(sessions, SEGMENTS)
    rows = await dispatch_seed.deliveries(sessions, send_id)
    by_email = {d.email: d for d in rows}
    assert len(rows) == len(by_email) == len(audience), "one delivery row per subscriber"
    assert set(by_email) == audience
    assert all(d.status in TERMINAL_STATUSES for d in rows), "every delivery ended"
    sent = {e for e, d in by_email.items() if d.status == "sent"}
    assert sent == audience
    missing = [e for e in sent if copies.get(e, 0) < 1]
    assert not missing, f"{len(missing)} sent deliveries never reached the server"
    duplicates = sum(n - 1 for n in copies.values() if n > 1)
    return sent, duplicates


async def test_kill_9_mid_send_then_restart_loses_nobody(
    vhost_url: str,
    own_database: OwnDatabase,
    tmp_path: Path,
) -> None:
    url, sessions = own_database.url, own_database.sessions
    await dispatch_seed.add_subscribers(sessions, 200)
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, SEGMENTS)
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            dispatch_prefetch=PREFETCH,
            dispatch_rate_limit=150.0,
        )
        first = dispatch_seed.spawn_dispatcher(settings=settings, log_path=log_a)
        try:
            await dispatch_seed.wait_for_consumers(vhost_url, DISPATCHER_DELIVERIES.name, 1)
            await dispatch_seed.plan(vhost_url, send_id, SEGMENTS)
            await dispatch_seed.wait_until(lambda: len(mta.handler.accepted) >= 150, timeout=60)
        finally:
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
        killed_at = len(mta.handler.accepted)
        assert killed_at < 600, "the process died in the middle of the send"
        second = dispatch_seed.spawn_dispatcher(settings=settings, log_path=log_b)
        try:
            await dispatch_seed.wait_for_send(sessions, send_id, timeout=90)
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0, "the dispatcher stops cleanly on SIGTERM"
        copies = dict(mta.handler.copies())
    _, duplicates = await check_ledger(sessions, send_id, copies)
    assert duplicates <= PREFETCH, "duplicates stay within the in-flight window"
    logged = dispatch_seed.log_events(log_b, "possible_duplicate_resend")
    assert duplicates <= logged, "every possible duplicate is in the log"


async def test_three_processes_share_the_queues_and_mail_everyone_once(
    vhost_url: str,
    own_database: OwnDatabase,
    tmp_path: Path,
) -> None:
    url, sessions = own_database.url, own_database.sessions
    await dispatch_seed.add_subscribers(sessions, 150)
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, SEGMENTS)
    logs = [tmp_path / f"p{n}.log" for n in range(3)]
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            dispatch_prefetch=20,
            dispatch_smtp_connections=4,
            dispatch_rate_limit=100.0,
        )
        processes = [dispatch_seed.spawn_dispatcher(settings=settings, log_path=p) for p in logs]
        try:
            await dispatch_seed.wait_for_consumers(vhost_url, DISPATCHER_DELIVERIES.name, 3)
            await dispatch_seed.plan(vhost_url, send_id, SEGMENTS)
            await dispatch_seed.wait_for_send(sessions, send_id, timeout=90)
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            codes = [process.wait(30) for process in processes]
        copies = dict(mta.handler.copies())
    assert codes == [0, 0, 0]
    _, duplicates = await check_ledger(sessions, send_id, copies)
    assert duplicates == 0, "no process crashed, so nobody is mailed twice"
    per_process = [dispatch_seed.log_events(p, "email_sent") for p in logs]
    assert sum(per_process) == 450
    assert all(n > 0 for n in per_process), f"every process delivered some: {per_process}"
