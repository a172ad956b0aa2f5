"""The editors' report of an issue (issue 18): ``/editor/report/{number}`` with server-side
SVG charts, and ``/editor/report/{number}.csv``. Same figures as ``newsletter report issue``.

Signed-in editors only (the editor page's session cookie, checked by ``EditorPages._editor``);
a page of its own beside the editor page: linking it from the editor's issue page is left to
whoever owns that page.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.renderer.analytics_report import clicks_by_issue, issue_report
from services.renderer.editor_pages import EditorPages
from services.renderer.report_charts import article_bars, weekly_lines
from shared.settings import LANGUAGES


class ReportPages(EditorPages):
    def routes(self) -> list[Route]:
        return [
            Route("/editor/report/{number:int}.csv", self.report_csv),
            Route("/editor/report/{number:int}", self.report_page),
        ]

    async def report_page(self, request: Request) -> Response:
        if not self._editor(request):
            return self._denied()
        number = int(request.path_params["number"])
        report = await issue_report(self.sessions, issue=number)
        editions = report.editions or list(LANGUAGES)
        weeks = await clicks_by_issue(self.sessions)
        return self._desk(
            request,
            "pages/report.html",
            title=f"Issue {number}: readers' clicks",
            report=report,
            editions=editions,
            bars=article_bars(report.articles, editions),
            lines=weekly_lines(weeks, list(LANGUAGES)),
        )

    async def report_csv(self, request: Request) -> Response:
        if not self._editor(request):
            return self._denied()
        number = int(request.path_params["number"])
        report = await issue_report(self.sessions, issue=number)
        return Response(
            report.csv(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="issue-{number}-clicks.csv"'},
        )
