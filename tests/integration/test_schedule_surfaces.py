"""Scheduling from the editor's surfaces on the real renderer: the admin API and the editor
page take a start (``at`` + ``tz``) and a local hour, refuse a start in the past, and the
command that reaches the dispatcher carries the schedule; the admin API lists sends and has
the dispatcher reschedule or cancel one until it starts."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.clock import SYSTEM_CLOCK
from shared.db.engine import create_engine, session_factory
from shared.db.tables.deliveries import Send
from shared.messaging.schemas import PlanSend, decode
from shared.messaging.topology import DISPATCHER_PLANNER
from shared.settings import Settings, load_settings
from tests.integration.renderer_harness import running_renderer, sample_sources, take
from tests.support import dispatch_seed
from tests.support.schedule_clock import ClockedDispatcher, wait_until

pytestmark = pytest.mark.integration
ADMIN = {"Authorization": "Bearer test-admin-token"}


async def test_the_admin_api_schedules_a_send_and_refuses_a_start_in_the_past(
    settings: Settings, tmp_path: Path
) -> None:
    async with running_renderer(settings, tmp_path) as renderer, renderer.client() as client:
        stored = await client.put(
            "/admin/api/issues/sched-api",
            headers=ADMIN,
            json={"sources": sample_sources("en", "be", "ru")},
        )
        assert stored.status_code == 200, stored.text
        past = await client.post(
            "/admin/api/issues/sched-api/sends",
            headers=ADMIN,
            json={"at": "2020-01-01 09:00", "tz": "Europe/Minsk", "confirm": True},
        )
        assert past.status_code == 422
        assert "in the past" in past.json()["detail"]
        bad_hour = await client.post(
            "/admin/api/issues/sched-api/sends",
            headers=ADMIN,
            json={"local_time": "9 am", "confirm": True},
        )
        assert bad_hour.status_code == 422
        started = await client.post(
            "/admin/api/issues/sched-api/sends",
            headers=ADMIN,
            json={
                "at": "2099-12-07 09:00",
                "tz": "Europe/Minsk",
                "local_time": "09:00",
                "confirm": True,
            },
        )
        assert started.status_code == 202, started.text
        assert started.json()["schedule"] == {
            "start_at": "2099-12-07T06:00:00Z",
            "time_zone": "Europe/Minsk",
            "local_time": "09:00",
        }
        send_id = started.json()["send_id"]
        found = await take(
            renderer.connection,
            DISPATCHER_PLANNER.name,
            lambda m: json.loads(m.body).get("send_id") == send_id,
        )
    assert found, "the scheduled send was not rendered at once"
    schedule = decode(PlanSend, found[0].body).schedule
    assert schedule is not None
    assert schedule.start_at == datetime(2099, 12, 7, 6, 0, tzinfo=UTC)
    assert schedule.local_time == "09:00"


async def test_the_editor_page_carries_the_start_to_the_confirmation(
    settings: Settings, tmp_path: Path
) -> None:
    async with running_renderer(settings, tmp_path) as renderer, renderer.client() as client:
        assert (
            await client.post("/editor/login", data={"token": "test-admin-token"})
        ).status_code == 303
        page = await client.get("/editor/issue/sample-issue")
        assert 'name="at"' in page.text
        assert 'name="local_time"' in page.text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert csrf is not None
        review = await client.post(
            "/editor/issue/sample-issue/send",
            data={
                "csrf": csrf.group(1),
                "segments": ["en", "be", "ru"],
                "intent": "first",
                "at": "2099-12-07 09:00",
                "tz": "Europe/Minsk",
                "local_time": "09:00",
            },
        )
        assert review.status_code == 200, review.text
        assert '<input type="hidden" name="at" value="2099-12-07 09:00">' in review.text
        assert "scheduled for 2099-12-07 09:00 Europe/Minsk" in review.text
        assert "each reader at 09:00 in their own time zone" in review.text


async def test_the_admin_api_lists_reschedules_and_cancels_through_the_dispatcher(
    vhost_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = load_settings(
        mode="test",
        amqp_url=vhost_url,
        database_url=sqlite_url,
        var_dir=tmp_path,
        secret_key="test-secret-key-" + "x" * 32,
        admin_token="test-admin-token",
    )
    dispatcher_settings = dispatch_seed.make_settings(
        amqp_url=vhost_url,
        database_url=sqlite_url,
        smtp_url="smtp://127.0.0.1:9",  # nothing is sent: the send never starts
        tmp_path=tmp_path,
        admin_token="test-admin-token",
    )
    engine = create_engine(sqlite_url)
    sessions = session_factory(engine)

    async def status(send_id: str) -> Send | None:
        async with sessions() as session:
            return await session.get(Send, send_id)

    try:
        async with (
            running_renderer(settings, tmp_path) as renderer,
            renderer.client() as client,
            ClockedDispatcher(dispatcher_settings, clock=SYSTEM_CLOCK),
        ):
            started = await client.post(
                "/admin/api/issues/sample-issue/sends",
                headers=ADMIN,
                json={"at": "2099-12-07 09:00", "tz": "Europe/Minsk", "confirm": True},
            )
            assert started.status_code == 202, started.text
            send_id = started.json()["send_id"]

            async def scheduled() -> bool:
                row = await status(send_id)
                return row is not None and row.status == "scheduled"

            await wait_until(scheduled, "the send stored as scheduled")
            listed = await client.get("/admin/api/sends?status=scheduled", headers=ADMIN)
            assert [s["send_id"] for s in listed.json()["sends"]] == [send_id]
            assert listed.json()["sends"][0]["scheduled_at"] == "2099-12-07T06:00:00+00:00"

            moved = await client.post(
                f"/admin/api/sends/{send_id}/reschedule",
                headers=ADMIN,
                json={"at": "2099-12-08 10:30", "tz": "Europe/Minsk"},
            )
            assert moved.status_code == 202, moved.text

            async def rescheduled() -> bool:
                row = await status(send_id)
                return row is not None and row.scheduled_at == datetime(
                    2099, 12, 8, 7, 30, tzinfo=UTC
                )

            await wait_until(rescheduled, "the dispatcher applied the new start")
            cancelled = await client.post(f"/admin/api/sends/{send_id}/cancel", headers=ADMIN)
            assert cancelled.status_code == 202

            async def gone() -> bool:
                row = await status(send_id)
                return row is not None and row.status == "cancelled"

            await wait_until(gone, "the dispatcher cancelled the send")
            late = await client.post(
                f"/admin/api/sends/{send_id}/reschedule",
                headers=ADMIN,
                json={"at": "2099-12-09 10:30"},
            )
            assert late.status_code == 409
            unknown = await client.post("/admin/api/sends/nope/cancel", headers=ADMIN)
            assert unknown.status_code == 404
    finally:
        await engine.dispose()
