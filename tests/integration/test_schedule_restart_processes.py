"""A send scheduled two minutes ahead starts on time after ``kill -9`` of every process, once
(issue 17), with the suite's real processes: a renderer and two dispatchers as OS processes
(``python -m services.<name>``), scheduled with ``newsletter issue send --at``, on a vhost and a
PostgreSQL database of the test's own and a real SMTP server over a socket.

The dispatchers read one clock file: the test moves their time forward past the two minutes
instead of waiting for them, and time flows on as on the machine from there.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.support import dispatch_seed, schedule_seed
from tests.support.own_database import OwnDatabase
from tests.support.schedule_clock import wait_until
from tests.support.schedule_processes import ROOT, Suite
from tests.support.test_mta import ScriptedMta

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
pytest_plugins = ("tests.support.dispatch_fixtures",)  # own_database

SEGMENTS = ("en", "be", "ru")
# How late after its scheduled time a send may start: the schedulers look every 0.2 s, and the
# start is one message from the scheduler to a planner, on a machine shared by other work.
TOLERANCE = timedelta(seconds=5)


def schedule(env: dict[str, str], *, at: datetime, tz: str) -> str:
    """``newsletter issue send deploy/sample-issue --at ... --tz ...``; the send's id."""
    local = at.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")
    command = ["issue", "send", str(ROOT / "deploy" / "sample-issue"), "--at", local, "--tz", tz]
    done = subprocess.run(
        [sys.executable, "-m", "newsletter_cli.main", *command, "--no-spam"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, f"issue send failed:\n{done.stdout}\n{done.stderr[-3000:]}"
    found = re.search(r"send ([0-9a-f-]{36}) requested", done.stdout)
    assert found, done.stdout
    return found.group(1)


async def test_a_send_scheduled_two_minutes_ahead_starts_on_time_once_after_kill_9_of_every_process(
    vhost_url: str, own_database: OwnDatabase, tmp_path: Path
) -> None:
    sessions = own_database.sessions
    readers = await schedule_seed.add_readers(
        sessions, 12, prefix="restart", languages=SEGMENTS, domains=("example.org", "example.net")
    )

    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=own_database.url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            schedule_poll_s=0.2,
        )
        suite = Suite(settings, log_dir=tmp_path, dispatchers=2, renderer=True)
        try:
            await suite.start()
            due = (datetime.now(UTC) + timedelta(minutes=2)).replace(microsecond=0)
            send_id = await asyncio.to_thread(schedule, suite.env, at=due, tz="Europe/Minsk")

            async def scheduled() -> bool:
                row = await schedule_seed.send_row(sessions, send_id)
                return row is not None and row.status == "scheduled"

            await wait_until(scheduled, "the send recorded as scheduled")
            assert await schedule_seed.edition_count(sessions, send_id) == 3, (
                "rendered and stored when scheduled"
            )
            suite.kill()  # every process, well before the start
            assert datetime.now(UTC) < due - timedelta(seconds=30)
            await suite.start()  # new processes: only the database knows the send
            suite.set_clock(due - timedelta(minutes=1))
            await suite.scheduler_passes_after(2)
            row = await schedule_seed.send_row(sessions, send_id)
            assert row is not None
            assert row.status == "scheduled", f"started a minute early: {row.status}"
            assert await dispatch_seed.status_counts(sessions, send_id) == {}
            suite.set_clock(due - timedelta(seconds=2))
            done = await dispatch_seed.wait_for_send(sessions, send_id, timeout=60)
        finally:
            codes = suite.stop()
        copies = mta.handler.copies()
    assert codes == [0, 0, 0], f"a process did not stop cleanly: {codes}\n{suite.logs_tail()}"
    assert done.started_at is not None
    late = done.started_at - due
    assert timedelta(0) <= late <= TOLERANCE, f"started {late} after {due}"
    assert done.total == len(readers)
    assert await dispatch_seed.status_counts(sessions, send_id) == {"sent": len(readers)}
    assert copies == dict.fromkeys(readers, 1), f"not every reader mailed exactly once: {copies}"
    started = suite.log_events("scheduled_send_started")
    published = suite.log_events("scheduled_send_due")
    assert started == 1, f"the send moved to planning {started} times"
    assert published == 1, f"{published} schedulers published its start"
