"""``newsletter send list|reschedule|cancel|warmup`` and the ramp in ``send status``, on a real
(SQLite) database."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from newsletter_cli.main import app as cli
from shared.db.engine import create_engine, session_factory
from shared.db.tables.deliveries import Send

pytestmark = pytest.mark.integration


def _seed(sqlite_url: str, send_id: str) -> None:
    async def seed() -> None:
        engine = create_engine(sqlite_url)
        try:
            async with session_factory(engine)() as session:
                session.add(
                    Send(
                        id=send_id,
                        issue_key="2099-w49",
                        languages="en,be",
                        status="scheduled",
                        scheduled_at=datetime(2099, 12, 7, 6, 0, tzinfo=UTC),
                        schedule_tz="Europe/Minsk",
                        local_time="09:00",
                    )
                )
                await session.commit()
        finally:
            await engine.dispose()

    asyncio.run(seed())


def test_list_reschedule_cancel_and_warm_up_from_the_command_line(
    sqlite_url: str, vhost_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    send_id = str(uuid.uuid4())
    _seed(sqlite_url, send_id)
    monkeypatch.setenv("NEWSLETTER_MODE", "test")
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("NEWSLETTER_AMQP_URL", vhost_url)
    runner = CliRunner()
    listed = runner.invoke(cli, ["send", "list", "--status", "scheduled"])
    assert listed.exit_code == 0, listed.output
    assert f"{send_id}  scheduled 2099-w49 first at 2099-12-07 06:00 UTC (Europe/Minsk)" in (
        listed.output
    )
    assert "local 09:00" in listed.output
    moved = runner.invoke(
        cli, ["send", "reschedule", send_id, "--at", "2099-12-08 10:30", "--tz", "Europe/Minsk"]
    )
    assert moved.exit_code == 0, moved.output
    assert "scheduled at 2099-12-08 07:30 UTC (Europe/Minsk)" in moved.output
    as_json = json.loads(runner.invoke(cli, ["send", "list", "--json"]).output)
    assert as_json[0]["scheduled_at"] == "2099-12-08T07:30:00+00:00"
    bad = runner.invoke(cli, ["send", "reschedule", send_id, "--at", "soon"])
    assert bad.exit_code == 2
    cancelled = runner.invoke(cli, ["send", "cancel", send_id])
    assert cancelled.exit_code == 0, cancelled.output
    assert f"send {send_id} cancelled" in cancelled.output
    late = runner.invoke(cli, ["send", "reschedule", send_id, "--at", "2099-12-09 10:30"])
    assert late.exit_code == 1
    assert "only a scheduled send moves" in late.output

    today = datetime.now(UTC).date().isoformat()
    marked = runner.invoke(
        cli, ["send", "warmup", "example.org", "--caps", "50,100,200", "--start", today]
    )
    assert marked.exit_code == 0, marked.output
    status = runner.invoke(cli, ["send", "status", send_id])
    assert "warm-up: example.org day 1 of 3 (caps 50,100,200)" in status.output, status.output
    assert runner.invoke(cli, ["send", "warmup", "example.org", "--caps", "0"]).exit_code == 2
    lifted = runner.invoke(cli, ["send", "warmup", "example.org", "--done"])
    assert "caps lifted" in lifted.output
