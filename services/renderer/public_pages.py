"""The public archive, served under the one public origin (``NEWSLETTER_PUBLIC_URL``).

- ``/{lang}/``: the language's issues, newest first by number and week, with their sections
  and article titles;
- ``/{lang}/issues/{number}``: one issue as a web page (no mail-only parts), a subscribe box
  linking to the signup form in that language, links to the issue in the other languages;
- ``/{lang}/feed.atom`` (Atom, one entry per issue), ``/sitemap.xml`` (every page with its
  ``hreflang`` alternates), 404 pages in the reader's language;
- ``/archive/{lang}``, ``/archive/{lang}/feed.atom`` and ``/archive/{lang}/{send_id}`` (the
  links of mails sent before) answer 301 with the new URL. A test send's view-in-browser link
  shows its edition marked ``noindex``: test sends never appear in the archive, feed or sitemap.

The subscription service forwards these paths here (``services/subscription/archive_proxy.py``);
``deploy/nginx/newsletter.conf`` routes them the same way in front of both services.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import date
from functools import partial
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import structlog
from babel import Locale
from babel.dates import format_date
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from services.renderer.archive_store import PublishedIssue, issue_of_send, published_issues
from services.renderer.catalogs import N_
from services.renderer.click_store import links_of_issue
from services.renderer.dates import format_date_range
from services.renderer.issue import LANGUAGES
from services.renderer.issue_web import WebSection, sections_of
from services.renderer.opens import without_pixel
from services.renderer.store import edition
from services.renderer.tracking import LinkTokens, untracked_html
from services.renderer.web_desk import SECURITY_HEADERS, WebDesk
from shared.tokens import TokenSigner

log = structlog.get_logger(__name__)

ARCHIVE_TITLE = (N_("Archive of the Weekly Digest"), N_("Archive of %(name)s"))
NOT_FOUND = N_("Page not found")


def language_name(code: str) -> str:
    """The language's name as its own speakers write it at the start of a line."""
    name = Locale.parse(code).get_display_name(code) or code
    return name[:1].upper() + name[1:]


def issue_week(start: date, end: date, *, language: str) -> str:
    """'December 20 – 26, 2021', '20–26 снежня 2021', '20–26 декабря 2021'.

    English follows CLDR's interval pattern with the month written out; Belarusian and Russian
    take :func:`~services.renderer.dates.format_date_range` (CLDR's own interval patterns
    abbreviate their months, "20—26 дек. 2021 г.").
    """
    if language != "en" or start >= end:
        return format_date_range(start, end, language=language)
    field = "y" if start.year != end.year else "M" if start.month != end.month else "d"
    first, second = Locale.parse("en").interval_formats["yMMMd"][field]
    text = format_date(start, _full_months(first), locale="en") + format_date(
        end, _full_months(second), locale="en"
    )
    return text.replace("\u2009", " ").replace("\u202f", " ")


def _subject_alone(subject: str, sections: Sequence[WebSection]) -> bool:
    """Whether the subject says more than the article titles (often it is one of them)."""
    said = " ".join(subject.split())
    return all(said != a.title for section in sections for a in section.articles)


def _full_months(pattern: str) -> str:
    return re.sub(r"(?<!M)MMM(?!M)", "MMMM", pattern)


class PublicPages(WebDesk):
    """Archive, issue pages, feeds, sitemap and the redirects of the old URLs (no login)."""

    def routes(self) -> list[Route]:
        return [
            Route("/sitemap.xml", self.sitemap),
            Route("/archive/{lang}", self.old_archive),
            Route("/archive/{lang}/feed.atom", self.old_feed),
            Route("/archive/{lang}/{send_id}", self.old_view),
            *(
                route
                for lang in LANGUAGES
                for route in (
                    Route(f"/{lang}", self._to_home(lang)),
                    Route(f"/{lang}/", self.archive_page),
                    Route(f"/{lang}/feed.atom", self.feed),
                    Route(f"/{lang}/issues/{{number:int}}", self.issue_page),
                    Route(f"/{lang}/{{rest:path}}", self.not_found),
                )
            ),
        ]

    # --- URLs -----------------------------------------------------------------------------

    @property
    def _base(self) -> str:
        return self.settings.pages_url

    def home_url(self, lang: str) -> str:
        return f"{self._base}/{lang}/"

    def issue_url(self, lang: str, number: int) -> str:
        return f"{self._base}/{lang}/issues/{number}"

    def _issue_url_of(self, number: int, lang: str) -> str:
        return self.issue_url(lang, number)

    def feed_url(self, lang: str) -> str:
        return f"{self._base}/{lang}/feed.atom"

    def signup_url(self, lang: str) -> str:
        return f"{self.settings.public_url}/?lang={lang}"

    @staticmethod
    def _lang(request: Request) -> str:
        path = request.url.path.strip("/").split("/")
        if path[0] == "archive":  # the old URLs: /archive/{lang}/...
            path = path[1:]
        return path[0] if path and path[0] in LANGUAGES else "en"

    # --- pages ----------------------------------------------------------------------------

    def _public(self, template: str, lang: str, *, status: int = 200, **context: Any) -> Response:
        response = self._page(
            template,
            lang,
            status,
            home_url=self.home_url(lang),
            signup_url=self.signup_url(lang),
            pitch=self.settings.publication_pitch(lang),
            **context,
        )
        response.headers.update(SECURITY_HEADERS)
        return response

    def _switch(self, lang: str, url: Any, languages: Sequence[str] = LANGUAGES) -> list[Any]:
        return [
            {"lang": code, "name": language_name(code), "url": url(code), "current": code == lang}
            for code in LANGUAGES
            if code in languages
        ]

    def _to_home(self, lang: str) -> Any:
        async def redirect(request: Request) -> Response:
            return RedirectResponse(self.home_url(lang), status_code=301)

        return redirect

    async def archive_page(self, request: Request) -> Response:
        lang = self._lang(request)
        issues = await published_issues(self.sessions, language=lang)
        entries = []
        for issue in issues:
            sections = sections_of(issue.latest.html)
            entries.append(
                {
                    "url": self.issue_url(lang, issue.number),
                    "label": self._label(issue),
                    "subject": issue.latest.subject,
                    "subject_alone": _subject_alone(issue.latest.subject, sections),
                    "content_lang": issue.latest.content_language,
                    "sections": sections,
                }
            )
        return self._public(
            "pages/public_archive.html",
            lang,
            title=self.templates.named(lang, *ARCHIVE_TITLE),
            canonical=self.home_url(lang),
            feed_url=self.feed_url(lang),
            switch=self._switch(lang, self.home_url),
            entries=entries,
        )

    def _label(self, issue: PublishedIssue) -> str:
        lang = issue.language
        number = self.templates.gettext(lang, "Issue %(number)s", number=issue.number)
        return f"{number} · {issue_week(issue.date_from, issue.date_to, language=lang)}"

    async def issue_page(self, request: Request) -> Response:
        lang, number = self._lang(request), int(request.path_params["number"])
        issues = {i.language: i for i in await published_issues(self.sessions, number=number)}
        issue = issues.get(lang)
        if issue is None:
            return await self.not_found(request)
        # The edition keeps the mail's tracked links: on the web they go straight to targets.
        html = untracked_html(
            without_pixel(issue.latest.html),
            tokens=LinkTokens(TokenSigner(self.settings.secret_key.get_secret_value())),
            links=await links_of_issue(self.sessions, issue=number),
        )
        return self._issue(
            issue, canonical=self.issue_url(lang, number), languages=sorted(issues), html=html
        )

    def _issue(
        self,
        issue: PublishedIssue,
        *,
        canonical: str | None,
        languages: Sequence[str],
        html: str | None = None,
    ) -> Response:
        lang = issue.language
        sections = sections_of(issue.latest.html if html is None else html)
        return self._public(
            "pages/public_issue.html",
            lang,
            title=f"{issue.latest.subject} · {self._label(issue)}",
            subject=issue.latest.subject,
            label=self._label(issue),
            canonical=canonical,
            noindex=canonical is None,
            content_lang=issue.latest.content_language,
            subject_alone=_subject_alone(issue.latest.subject, sections),
            sections=sections,
            switch=self._switch(lang, lambda code: self.issue_url(code, issue.number), languages),
            archive_url=self.home_url(lang),
        )

    async def not_found(self, request: Request) -> Response:
        lang = self._lang(request)
        return self._public(
            "pages/public_not_found.html",
            lang,
            status=404,
            title=self.templates.gettext(lang, NOT_FOUND),
            canonical=None,
            noindex=True,
            switch=self._switch(lang, self.home_url),
        )

    async def feed(self, request: Request) -> Response:
        lang = self._lang(request)
        issues = await published_issues(self.sessions, language=lang)
        home, title = self.home_url(lang), self.templates.named(lang, *ARCHIVE_TITLE)
        updated = (
            max(i.latest.rendered_at for i in issues).isoformat()
            if issues
            else "2021-12-19T00:00:00+00:00"
        )
        # An entry's id is the issue's page: a resend updates the entry, never repeats it.
        entries = "".join(
            "<entry>"
            f"<id>{escape(self.issue_url(lang, i.number))}</id>"
            f"<title>{escape(self._label(i))}: {escape(i.latest.subject)}</title>"
            f"<published>{i.first_rendered_at.isoformat()}</published>"
            f"<updated>{i.latest.rendered_at.isoformat()}</updated>"
            '<link rel="alternate" type="text/html" '
            f"href={quoteattr(self.issue_url(lang, i.number))}/>"
            f"<summary>{escape(i.latest.preheader)}</summary>"
            "</entry>"
            for i in issues
        )
        author = self.templates.publication_name(lang)
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="{lang}">'
            f"<id>{escape(home)}</id><title>{escape(title)}</title><updated>{updated}</updated>"
            f'<link rel="self" href={quoteattr(self.feed_url(lang))}/>'
            f'<link rel="alternate" type="text/html" href={quoteattr(home)}/>'
            f"<author><name>{escape(author)}</name></author>"
            f"{entries}</feed>"
        )
        return Response(body, media_type="application/atom+xml; charset=utf-8")

    async def sitemap(self, request: Request) -> Response:
        issues = await published_issues(self.sessions)
        by_number: dict[int, list[str]] = {}
        for issue in issues:
            by_number.setdefault(issue.number, []).append(issue.language)
        pages: list[tuple[Callable[[str], str], list[str]]] = [(self.home_url, list(LANGUAGES))]
        pages += [(partial(self._issue_url_of, n), sorted(ls)) for n, ls in by_number.items()]
        urls = []
        for url, languages in pages:
            alternates = "".join(
                f'<xhtml:link rel="alternate" hreflang="{code}" href={quoteattr(url(code))}/>'
                for code in languages
            )
            urls += [f"<url><loc>{escape(url(code))}</loc>{alternates}</url>" for code in languages]
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9" '
            'xmlns:xhtml="http://www.w3.org/1999/xhtml">' + "".join(urls) + "</urlset>"
        )
        return Response(body, media_type="application/xml; charset=utf-8")

    # --- old URLs -------------------------------------------------------------------------

    async def old_archive(self, request: Request) -> Response:
        lang = request.path_params["lang"]
        if lang not in LANGUAGES:
            return await self.not_found(request)
        return RedirectResponse(self.home_url(lang), status_code=301)

    async def old_feed(self, request: Request) -> Response:
        lang = request.path_params["lang"]
        if lang not in LANGUAGES:
            return await self.not_found(request)
        return RedirectResponse(self.feed_url(lang), status_code=301)

    async def old_view(self, request: Request) -> Response:
        """A mail's view-in-browser link: the issue's page, or a test send's own edition."""
        lang, send_id = request.path_params["lang"], request.path_params["send_id"]
        row = await edition(self.sessions, send_id=send_id, language=lang)
        request_row = await issue_of_send(self.sessions, send_id=send_id)
        if row is None or request_row is None or lang not in LANGUAGES:
            return await self.not_found(request)
        if not row.is_test and request_row.intent != "test":
            return RedirectResponse(self.issue_url(lang, request_row.issue_number), status_code=301)
        test = PublishedIssue(
            number=request_row.issue_number,
            date_from=request_row.date_from,
            date_to=request_row.date_to,
            latest=row,
            first_rendered_at=row.rendered_at,
        )
        return self._issue(test, canonical=None, languages=[lang])
