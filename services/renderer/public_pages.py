"""Public pages: the archive and Atom feed per language, and the view-in-browser page of each
sent edition with ``hreflang`` links to its other languages.

The archive and the feed hold one entry per issue and language, however often it was sent
(``store.archive``); every send's own view-in-browser page keeps working.
"""

from __future__ import annotations

import re
from typing import Any
from xml.sax.saxutils import escape

import structlog
from babel import Locale
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from services.renderer.catalogs import N_
from services.renderer.editions import archive_url, view_url
from services.renderer.fill import FillPlan, recipient_values
from services.renderer.issue import LANGUAGES
from services.renderer.store import archive, edition, editions_of_send
from services.renderer.web_desk import WebDesk

log = structlog.get_logger(__name__)

ARCHIVE_TITLE = N_("Archive of the Weekly Digest")
OTHER_LANGUAGES = N_("Other languages")
_BODY = re.compile(r"<body[^>]*>", re.IGNORECASE)


class PublicPages(WebDesk):
    """Archive page, Atom feed and view-in-browser page of each language (no login)."""

    def routes(self) -> list[Route]:
        return [
            Route("/archive/{lang}", self.archive_page),
            Route("/archive/{lang}/feed.atom", self.feed),
            Route("/archive/{lang}/{send_id}", self.view),
        ]

    def _alternates(self, lang: str, url: Any) -> list[dict[str, str]]:
        return [
            {"lang": other, "url": url(other), "name": Locale.parse(other).display_name or other}
            for other in LANGUAGES
            if other != lang
        ]

    async def archive_page(self, request: Request) -> Response:
        lang = request.path_params["lang"]
        if lang not in LANGUAGES:
            return PlainTextResponse("unknown language", status_code=404)
        pages = self.settings.pages_url
        rows = await archive(self.sessions, language=lang)
        return self._page(
            "pages/archive.html",
            lang,
            title=self.templates.gettext(lang, ARCHIVE_TITLE),
            feed_url=f"{archive_url(pages, segment=lang)}/feed.atom",
            alternates=self._alternates(lang, lambda other: archive_url(pages, segment=other)),
            editions=[
                {
                    "url": view_url(pages, segment=lang, send_id=entry.latest.send_id),
                    "subject": entry.latest.subject,
                    "date": entry.first.rendered_at.date().isoformat(),
                }
                for entry in rows
            ],
        )

    async def feed(self, request: Request) -> Response:
        lang = request.path_params["lang"]
        if lang not in LANGUAGES:
            return PlainTextResponse("unknown language", status_code=404)
        pages = self.settings.pages_url
        rows = await archive(self.sessions, language=lang)
        home = archive_url(pages, segment=lang)
        title = self.templates.gettext(lang, ARCHIVE_TITLE)
        updated = (
            max(e.latest.rendered_at for e in rows).isoformat()
            if rows
            else "2021-12-19T00:00:00+00:00"
        )
        # An entry keeps the id of the issue's first send: a resend updates it, never repeats it.
        entries = "".join(
            "<entry>"
            f"<id>urn:uuid:{escape(entry.first.send_id)}</id>"
            f"<title>{escape(entry.latest.subject)}</title>"
            f"<published>{entry.first.rendered_at.isoformat()}</published>"
            f"<updated>{entry.latest.rendered_at.isoformat()}</updated>"
            '<link rel="alternate" type="text/html" '
            f'href="{escape(view_url(pages, segment=lang, send_id=entry.latest.send_id))}"/>'
            f"<summary>{escape(entry.latest.preheader)}</summary>"
            "</entry>"
            for entry in rows
        )
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="{lang}">'
            f"<id>{escape(home)}</id><title>{escape(title)}</title><updated>{updated}</updated>"
            f'<link rel="self" href="{escape(home)}/feed.atom"/>'
            f'<link rel="alternate" type="text/html" href="{escape(home)}"/>'
            f"<author><name>{escape(self.templates.gettext(lang, 'Weekly Digest'))}</name></author>"
            f"{entries}</feed>"
        )
        return Response(body, media_type="application/atom+xml; charset=utf-8")

    async def view(self, request: Request) -> Response:
        lang, send_id = request.path_params["lang"], request.path_params["send_id"]
        row = await edition(self.sessions, send_id=send_id, language=lang)
        if row is None or lang not in LANGUAGES:
            return PlainTextResponse("no such edition", status_code=404)
        home = self.settings.public_url + "/"
        html = FillPlan(row.html, escape_html=True).fill(
            recipient_values(unsubscribe_url=home, preferences_url=home, recipient="…")
        )
        others = [
            e for e in await editions_of_send(self.sessions, send_id=send_id) if e.language != lang
        ]
        pages = self.settings.pages_url
        links = "".join(
            f'<link rel="alternate" hreflang="{e.language}" '
            f'href="{escape(view_url(pages, segment=e.language, send_id=send_id))}">'
            for e in others
        )
        nav = ""
        if others:
            label = escape(self.templates.gettext(lang, OTHER_LANGUAGES))
            items = " · ".join(
                f'<a href="{escape(view_url(pages, segment=e.language, send_id=send_id))}" '
                f'hreflang="{e.language}" lang="{e.language}">'
                f"{escape(Locale.parse(e.language).display_name or e.language)}</a>"
                for e in others
            )
            nav = (
                '<p style="text-align:center;font-family:Arial,sans-serif;font-size:13px">'
                f"{label}: {items}</p>"
            )
        html = html.replace("</head>", links + "\n</head>", 1)
        html = _BODY.sub(lambda m: m.group(0) + nav, html, count=1)
        return HTMLResponse(html)
