"""The editors' report of an issue (issue 18): ``/editor/report/{number}`` with server-side
SVG charts, and ``/editor/report/{number}.csv``. Same figures as ``newsletter report issue``.

Signed-in editors only (the editor page's session cookie, checked by ``EditorPages._editor``);
in the editor's language (the renderer's catalogs, en/be/ru), linked from the editor's issue
page. Its tables become labelled cards on narrow screens; the charts scroll sideways there.
"""

from __future__ import annotations

from babel.numbers import format_percent
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.renderer.analytics_report import clicks_by_issue, issue_report
from services.renderer.catalogs import N_
from services.renderer.editor_pages import EditorPages
from services.renderer.editor_views import editor_language
from services.renderer.report_charts import article_bars, weekly_lines
from shared.settings import LANGUAGES

TITLE = N_("Issue %(number)s: readers' clicks")
BARS_LABEL = N_("Readers' clicks per article and edition")
LINES_LABEL = N_("Readers' clicks per edition, issue by issue")
NO_CLICKS = N_("No clicks yet")


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
        lang = editor_language(request)
        return self._desk(
            request,
            "pages/report.html",
            title=self._text(request, TITLE, number=number),
            report=report,
            editions=editions,
            percent=lambda share: format_percent(share, "#,##0.0%", locale=lang),
            bars=article_bars(report.articles, editions, label=self._text(request, BARS_LABEL)),
            lines=weekly_lines(
                weeks,
                list(LANGUAGES),
                label=self._text(request, LINES_LABEL),
                empty=self._text(request, NO_CLICKS),
            ),
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
