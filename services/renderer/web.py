"""The renderer's HTTP pages, served with its probes on ``renderer_probe_port``.

Public: ``/archive/{lang}`` (archive page), ``/archive/{lang}/feed.atom`` (Atom feed) and
``/archive/{lang}/{send_id}`` (view in browser, with ``hreflang`` links to the other languages).
Editors (admin token; a signed cookie after ``/editor/login``, CSRF-checked forms):
``/editor`` (pick or upload an issue), ``/editor/issue/{name}`` (readiness matrix, previews, test
send, send with a confirmation step naming segments and their sizes). The admin API offers the
same with ``Authorization: Bearer <NEWSLETTER_ADMIN_TOKEN>`` under ``/admin/api/issues``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape

import structlog
from babel import Locale
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from services.renderer.catalogs import N_, Templates
from services.renderer.editions import archive_url, render_plan, view_url
from services.renderer.editor_tools import check_issue
from services.renderer.errors import IssueFormatError, IssueNotReady, RendererError
from services.renderer.fill import FillPlan, recipient_values
from services.renderer.issue import LANGUAGES, parse_sources
from services.renderer.library import IssueLibrary
from services.renderer.readiness import readiness
from services.renderer.sending import (
    PreparedSend,
    parse_fallbacks,
    parse_segments,
    prepare_send_async,
    sample_for,
)
from services.renderer.settings import RendererSettings
from services.renderer.store import Sessions, archive, edition, editions_of_send, segment_sizes
from shared.messaging.publisher import Publisher
from shared.messaging.topology import RENDER_ISSUE
from shared.probes import ReadinessCheck, probe_app

log = structlog.get_logger(__name__)

COOKIE = "nl_editor"
ARCHIVE_TITLE = N_("Archive of the Weekly Digest")
OTHER_LANGUAGES = N_("Other languages")
_BODY = re.compile(r"<body[^>]*>", re.IGNORECASE)


class Pages:
    def __init__(
        self,
        *,
        settings: RendererSettings,
        sessions: Sessions,
        publisher: Publisher,
        templates: Templates,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.publisher = publisher
        self.templates = templates
        self.library = IssueLibrary(
            issues_dir=settings.issues_dir, uploads_dir=settings.var_dir / "issues"
        )
        secret = settings.secret_key.get_secret_value().encode()
        self._session = hmac.new(secret, b"renderer-editor-session", hashlib.sha256).hexdigest()
        self._csrf = hmac.new(secret, b"renderer-editor-csrf", hashlib.sha256).hexdigest()

    def routes(self) -> list[Route]:
        return [
            Route("/archive/{lang}", self.archive_page),
            Route("/archive/{lang}/feed.atom", self.feed),
            Route("/archive/{lang}/{send_id}", self.view),
            Route("/editor", self.editor),
            Route("/editor/login", self.login, methods=["POST"]),
            Route("/editor/upload", self.upload, methods=["POST"]),
            Route("/editor/issue/{name}", self.issue_page),
            Route("/editor/issue/{name}/preview/{file}", self.preview),
            Route("/editor/issue/{name}/test", self.test_send, methods=["POST"]),
            Route("/editor/issue/{name}/send", self.send, methods=["POST"]),
            Route("/admin/api/issues", self.api_list),
            Route("/admin/api/issues/{name}", self.api_issue, methods=["GET", "PUT"]),
            Route("/admin/api/issues/{name}/sends", self.api_send, methods=["POST"]),
        ]

    # -- public pages ---------------------------------------------------------------------

    def _page(self, template: str, lang: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.templates.env(lang).get_template(template).render(lang=lang, **context)
        return HTMLResponse(html, status_code=status)

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
                    "url": view_url(pages, segment=lang, send_id=row.send_id),
                    "subject": row.subject,
                    "date": row.rendered_at.date().isoformat(),
                }
                for row in rows
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
        updated = rows[0].rendered_at.isoformat() if rows else "2021-12-19T00:00:00+00:00"
        entries = "".join(
            "<entry>"
            f"<id>urn:uuid:{escape(row.send_id)}</id>"
            f"<title>{escape(row.subject)}</title>"
            f"<updated>{row.rendered_at.isoformat()}</updated>"
            '<link rel="alternate" type="text/html" '
            f'href="{escape(view_url(pages, segment=lang, send_id=row.send_id))}"/>'
            f"<summary>{escape(row.preheader)}</summary>"
            "</entry>"
            for row in rows
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

    # -- editor pages -----------------------------------------------------------------------

    def _editor(self, request: Request) -> bool:
        return hmac.compare_digest(request.cookies.get(COOKIE, ""), self._session)

    async def _form(self, request: Request) -> Any | None:
        form = await request.form()
        if not hmac.compare_digest(str(form.get("csrf", "")), self._csrf):
            return None
        return form

    def _denied(self) -> Response:
        return RedirectResponse("/editor", status_code=303)

    async def editor(self, request: Request) -> Response:
        if not self._editor(request):
            return self._page("pages/login.html", "en", title="Editor", error="")
        return self._page(
            "pages/editor.html",
            "en",
            title="Editor",
            issues=self.library.names(),
            csrf=self._csrf,
            message=request.query_params.get("message", ""),
            error=False,
        )

    async def login(self, request: Request) -> Response:
        form = await request.form()
        token = str(form.get("token", ""))
        if not hmac.compare_digest(token, self.settings.admin_token.get_secret_value()):
            log.warning("editor_login_refused")
            return self._page("pages/login.html", "en", 403, title="Editor", error="Wrong token.")
        response = RedirectResponse("/editor", status_code=303)
        response.set_cookie(
            COOKIE,
            self._session,
            httponly=True,
            samesite="strict",
            secure=self.settings.pages_url.startswith("https://"),
            path="/",
        )
        return response

    async def upload(self, request: Request) -> Response:
        if not self._editor(request):
            return self._denied()
        form = await self._form(request)
        if form is None:
            return PlainTextResponse("bad CSRF token", status_code=403)
        sources: dict[str, str] = {}
        for lang in LANGUAGES:
            item = form.get(lang)
            if isinstance(item, UploadFile) and item.filename:
                sources[lang] = (await item.read()).decode("utf-8", errors="replace")
        name = str(form.get("name", ""))
        try:
            self.library.store(name, sources)
        except IssueFormatError as err:
            return self._page(
                "pages/editor.html",
                "en",
                422,
                title="Editor",
                issues=self.library.names(),
                csrf=self._csrf,
                message=str(err),
                error=True,
            )
        return RedirectResponse(f"/editor/issue/{name}", status_code=303)

    async def issue_page(
        self, request: Request, message: str = "", error: bool = False, status: int = 200
    ) -> Response:
        if not self._editor(request):
            return self._denied()
        name = request.path_params["name"]
        folder = self.library.folder(name)
        if folder is None:
            return PlainTextResponse("no such issue", status_code=404)
        matrix, problems = None, []
        preflight: list[dict[str, object]] = []
        spam = request.query_params.get("spam") == "1"
        try:
            result = await asyncio.to_thread(
                check_issue,
                folder.path,
                settings=self.settings,
                templates=self.templates,
                spam=spam,
            )
            matrix = result.matrix
            problems = matrix.problems
            preflight = [
                {
                    "lang": lang,
                    "kb": round(report.html_bytes / 1024, 1),
                    "spam": "not run" if report.spam_score is None else f"{report.spam_score:.1f}",
                    "findings": [str(f) for f in report.findings],
                }
                for lang, report in result.reports.items()
            ]
        except IssueFormatError as err:
            problems = [str(p) for p in err.problems]
        except RendererError as err:
            problems = [str(err)]
        return self._page(
            "pages/issue.html",
            "en",
            status,
            title=name,
            name=name,
            matrix=matrix,
            problems=problems,
            preflight=preflight,
            languages=sorted(folder.sources),
            all_languages=LANGUAGES,
            csrf=self._csrf,
            message=message,
            error=error,
        )

    async def preview(self, request: Request) -> Response:
        if not self._editor(request):
            return self._denied()
        name, file = request.path_params["name"], request.path_params["file"]
        lang, _, kind = file.partition(".")
        folder = self.library.folder(name)
        if folder is None or lang not in folder.sources or kind not in {"html", "txt"}:
            return PlainTextResponse("no such preview", status_code=404)
        try:
            editions = parse_sources({lang: folder.sources[lang]})
            _plan, rendered = render_plan(
                self.templates,
                editions,
                segments=[lang],
                fallbacks={},
                pages_url=self.settings.pages_url,
                send_id="preview",
            )
        except RendererError as err:
            return PlainTextResponse(str(err), status_code=422)
        sample = sample_for(self.settings)
        values = recipient_values(
            unsubscribe_url=sample.unsubscribe_url,
            preferences_url=sample.preferences_url,
            recipient=sample.to,
        )
        mail = rendered[lang].mail
        if kind == "html":
            return HTMLResponse(FillPlan(mail.html, escape_html=True).fill(values))
        return PlainTextResponse(FillPlan(mail.text, escape_html=False).fill(values))

    async def _prepare(
        self, name: str, *, segments: list[str], fallbacks: Mapping[str, str], test_to: str | None
    ) -> PreparedSend:
        folder = self.library.folder(name)
        if folder is None:
            raise IssueNotReady(f"no issue named {name!r}")
        return await prepare_send_async(
            folder,
            settings=self.settings,
            templates=self.templates,
            segments=segments,
            fallbacks=fallbacks,
            test_to=test_to,
        )

    async def _start(self, prepared: PreparedSend) -> None:
        await self.publisher.publish(prepared.command, routing_key=RENDER_ISSUE)
        log.info(
            "send_requested",
            send_id=prepared.command.send_id,
            issue_key=prepared.command.issue_key,
            test=prepared.command.test_to is not None,
        )

    async def test_send(self, request: Request) -> Response:
        if not self._editor(request):
            return self._denied()
        form = await self._form(request)
        if form is None:
            return PlainTextResponse("bad CSRF token", status_code=403)
        name = request.path_params["name"]
        folder = self.library.folder(name)
        try:
            segments = sorted(folder.sources) if folder else []
            prepared = await self._prepare(
                name, segments=segments, fallbacks={}, test_to=str(form.get("test_to", "")).strip()
            )
            await self._start(prepared)
        except (RendererError, ValueError) as err:
            return await self.issue_page(request, message=str(err), error=True, status=422)
        return await self.issue_page(
            request, message=f"Test send {prepared.command.send_id} requested."
        )

    async def _sizes(self, prepared: PreparedSend) -> tuple[list[dict[str, object]], int]:
        sizes = await segment_sizes(self.sessions, languages=list(prepared.plan.editions))
        rows: list[dict[str, object]] = [
            {
                "segment": segment,
                "edition": language,
                "size": sizes.get(segment, 0),
                "subscribers": sizes.get(segment, 0),
                "html_bytes": len(prepared.rendered[segment].mail.html.encode()),
                "html_kb": round(len(prepared.rendered[segment].mail.html.encode()) / 1024, 1),
            }
            for segment, language in prepared.plan.editions.items()
        ]
        return rows, sum(sizes.values())

    async def send(self, request: Request) -> Response:
        if not self._editor(request):
            return self._denied()
        form = await self._form(request)
        if form is None:
            return PlainTextResponse("bad CSRF token", status_code=403)
        name = request.path_params["name"]
        raw_fallbacks = str(form.get("fallbacks", ""))
        try:
            segments = parse_segments([str(s) for s in form.getlist("segments")])
            prepared = await self._prepare(
                name, segments=segments, fallbacks=parse_fallbacks([raw_fallbacks]), test_to=None
            )
        except (RendererError, ValueError) as err:
            return await self.issue_page(request, message=str(err), error=True, status=422)
        if form.get("confirm") != "yes":
            rows, total = await self._sizes(prepared)
            return self._page(
                "pages/confirm.html",
                "en",
                title=f"Send {name}?",
                name=name,
                rows=rows,
                total=total,
                segments=segments,
                fallbacks=raw_fallbacks,
                csrf=self._csrf,
            )
        await self._start(prepared)
        return await self.issue_page(request, message=f"Send {prepared.command.send_id} requested.")

    # -- admin API --------------------------------------------------------------------------

    def _api_ok(self, request: Request) -> bool:
        expected = f"Bearer {self.settings.admin_token.get_secret_value()}"
        return hmac.compare_digest(request.headers.get("authorization", ""), expected)

    @staticmethod
    def _unauthorized() -> Response:
        return JSONResponse(
            {"detail": "bearer token required"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def api_list(self, request: Request) -> Response:
        if not self._api_ok(request):
            return self._unauthorized()
        return JSONResponse({"issues": self.library.names()})

    async def api_issue(self, request: Request) -> Response:
        if not self._api_ok(request):
            return self._unauthorized()
        name = request.path_params["name"]
        if request.method == "PUT":
            payload = await request.json()
            sources = payload.get("sources") if isinstance(payload, dict) else None
            if not isinstance(sources, dict) or not all(
                isinstance(v, str) for v in sources.values()
            ):
                return JSONResponse({"detail": 'body must be {"sources": {lang: text}}'}, 422)
            try:
                self.library.store(name, sources)
            except IssueFormatError as err:
                return JSONResponse({"problems": [str(p) for p in err.problems]}, 422)
        folder = self.library.folder(name)
        if folder is None:
            return JSONResponse({"detail": "no such issue"}, 404)
        try:
            matrix = readiness(parse_sources(folder.sources))
        except IssueFormatError as err:
            return JSONResponse(
                {"name": name, "ready": False, "problems": [str(p) for p in err.problems]}, 422
            )
        return JSONResponse({"name": name, **matrix.as_dict()})

    async def api_send(self, request: Request) -> Response:
        if not self._api_ok(request):
            return self._unauthorized()
        name = request.path_params["name"]
        payload = await request.json()
        if not isinstance(payload, dict):
            return JSONResponse({"detail": "body must be a JSON object"}, 422)
        test_to = payload.get("test_to")
        try:
            segments = parse_segments(payload.get("segments"))
            fallbacks = payload.get("fallbacks") or {}
            fallbacks = parse_fallbacks([f"{k}={v}" for k, v in dict(fallbacks).items()])
            prepared = await self._prepare(
                name, segments=segments, fallbacks=fallbacks, test_to=test_to
            )
        except IssueFormatError as err:
            return JSONResponse({"problems": [str(p) for p in err.problems]}, 422)
        except (RendererError, ValueError, TypeError) as err:
            return JSONResponse({"detail": str(err)}, 422)
        rows, total = await self._sizes(prepared)
        summary = [
            {k: r[k] for k in ("segment", "edition", "subscribers", "html_bytes")} for r in rows
        ]
        if test_to is None and payload.get("confirm") is not True:
            return JSONResponse(
                {"confirm_required": True, "segments": summary, "total": total}, status_code=200
            )
        await self._start(prepared)
        return JSONResponse(
            {"send_id": prepared.command.send_id, "segments": summary, "total": total},
            status_code=202,
        )


def build_app(
    *,
    settings: RendererSettings,
    sessions: Sessions,
    publisher: Publisher,
    templates: Templates,
    checks: Mapping[str, ReadinessCheck],
    registry: CollectorRegistry,
) -> Starlette:
    """The probe app with the renderer's pages added."""
    app = probe_app(checks, registry)
    pages = Pages(settings=settings, sessions=sessions, publisher=publisher, templates=templates)
    app.router.routes.extend(pages.routes())
    return app
