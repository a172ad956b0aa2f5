"""The editors' report page of an issue (issue 18): SVG charts rendered by the renderer from
the counts in the database, the CSV export, and no page without the editor's session."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from services.renderer.click_store import flush_counts
from shared.settings import Settings
from tests.integration.renderer_harness import running_renderer
from tests.support.analytics_stack import save_articles
from tests.support.database import sessions_on

pytestmark = pytest.mark.integration


async def seed(database_url: str) -> None:
    async with sessions_on(database_url) as sessions:
        keys = ("minsk-escalation", "economy")
        await save_articles(sessions, issue=50, articles=[(key, f"<{key}> & co") for key in keys])
        day = date(2021, 12, 20)
        await flush_counts(
            sessions,
            {
                (50, "en", 0, 0, day, "counted"): 5,
                (50, "be", 0, 0, day, "counted"): 7,
                (50, "ru", 1, 0, day, "counted"): 2,
                (50, "ru", 1, 0, day, "burst"): 9,
            },
        )
        # A second flush adds to the same rows (the upsert).
        await flush_counts(sessions, {(50, "en", 0, 0, day, "counted"): 1})


async def test_the_report_page_draws_the_issue_s_clicks_for_a_signed_in_editor(
    settings: Settings, sqlite_url: str, tmp_path: Path
) -> None:
    await seed(sqlite_url)
    async with running_renderer(settings, tmp_path) as renderer, renderer.client() as client:
        refused = await client.get("/editor/report/50")
        assert refused.status_code == 303, "no report without the editor's session"
        login = await client.post(
            "/editor/login", data={"token": settings.admin_token.get_secret_value()}
        )
        assert login.status_code == 303
        page = await client.get("/editor/report/50")
        assert page.status_code == 200, page.text
        assert page.text.count('<svg xmlns="http://www.w3.org/2000/svg" role="img"') == 2, (
            "per-article bars and the issue-by-issue line"
        )
        assert "en 6" in page.text
        assert "be 7" in page.text
        assert "&lt;economy&gt; &amp; co" in page.text, "titles are escaped in the SVG"
        assert "<economy>" not in page.text
        assert "https://cdn" not in page.text
        assert "<script" not in page.text
        csv_answer = await client.get("/editor/report/50.csv")
        assert csv_answer.status_code == 200
        assert csv_answer.headers["content-type"].startswith("text/csv")
        rows = csv_answer.text.splitlines()
        assert len(rows) == 1 + 2 * 3, rows
        assert any(r.startswith("50,economy,<economy> & co,ru,2,0,,0,0,0,9") for r in rows), rows
