"""The editor's web pages, behind the admin token: a login form sets a signed, timestamped,
HttpOnly, SameSite=Strict cookie that lasts :data:`SESSION_MAX_AGE_S`; every form carries a
CSRF token derived from the secret key. After :data:`LOGIN_FAILURES_ALLOWED` wrong tokens
from one client within :data:`LOGIN_WINDOW_S`, logins from it are refused (429) for the rest
of the window.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog
from itsdangerous import BadSignature
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from services.renderer.catalogs import N_
from services.renderer.editions import render_plan
from services.renderer.editor_tools import check_issue, describe_schedule
from services.renderer.editor_views import (
    editor_language,
    keep_choice,
    language_switch,
    matrix_view,
    send_views,
)
from services.renderer.errors import IssueFormatError, RendererError
from services.renderer.fill import FillPlan, recipient_values
from services.renderer.issue import LANGUAGES, parse_sources
from services.renderer.issue_sends import (
    EarlierSend,
    IssueAlreadySent,
    IssueIdentity,
    SendRefused,
    Surface,
    earlier_sends,
)
from services.renderer.sending import (
    parse_fallbacks,
    parse_schedule,
    parse_segments,
    sample_for,
)
from services.renderer.web_desk import SECURITY_HEADERS, WebDesk
from shared.clock import SYSTEM_CLOCK
from shared.db.tables import SendIntent
from shared.rate_limit import SlidingWindowLimiter, request_client_key
from shared.token_budget import same_secret

log = structlog.get_logger(__name__)

COOKIE = "nl_editor"
SESSION_MAX_AGE_S = 8 * 3600
LOGIN_FAILURES_ALLOWED = 5
LOGIN_WINDOW_S = 300.0

EDITOR = N_("Editor")
WRONG_TOKEN = N_("Wrong token.")
THROTTLED = N_("Too many wrong tokens. Try again in a few minutes.")
BAD_CSRF = N_(
    "This form has expired or did not come from the editor page. Reload the page and try again."
)
NO_ISSUE = N_("There is no issue named %(name)s.")
TEST_REQUESTED = N_("Test send %(send_id)s requested.")
SEND_REQUESTED = N_("Send %(send_id)s requested.")
CONFIRM_TITLE = N_("Send %(name)s?")


def login_throttle(*, clock: Callable[[], float] = time.monotonic) -> SlidingWindowLimiter:
    """Wrong tokens per client within a sliding window (in memory, per process)."""
    return SlidingWindowLimiter(limit=LOGIN_FAILURES_ALLOWED, window_s=LOGIN_WINDOW_S, clock=clock)


class EditorPages(WebDesk):
    """Pick or upload an issue, see its readiness and previews, send a test, start a send.

    Every page speaks the editor's language (:mod:`services.renderer.editor_views`) and sends
    the public pages' security headers."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._login_failures = login_throttle()

    def routes(self) -> list[Route]:
        return [
            Route("/editor", self.editor),
            Route("/editor/login", self.login, methods=["POST"]),
            Route("/editor/upload", self.upload, methods=["POST"]),
            Route("/editor/issue/{name}", self.issue_page),
            Route("/editor/issue/{name}/preview/{file}", self.preview),
            Route("/editor/issue/{name}/test", self.test_send, methods=["POST"]),
            Route("/editor/issue/{name}/send", self.send, methods=["POST"]),
        ]

    def _editor(self, request: Request) -> bool:
        cookie = request.cookies.get(COOKIE, "")
        if not cookie or not cookie.isascii():
            return False
        try:
            self._session_signer.unsign(cookie, max_age=SESSION_MAX_AGE_S)
        except BadSignature:  # tampered, from another key, or expired
            return False
        return True

    def _text(self, request: Request, message: str, /, **values: object) -> str:
        return self.templates.gettext(editor_language(request), message, **values)

    def _worded(self, request: Request, err: Exception) -> str:
        """An error in the page's language: problems and refusals carry codes and values."""
        worded = getattr(err, "worded", None)
        if worded is None:
            return str(err)
        return str(worded(self.templates.translations(editor_language(request)).gettext))

    def _desk(
        self,
        request: Request,
        template: str,
        status: int = 200,
        *,
        here: str = "/editor",
        **context: Any,
    ) -> HTMLResponse:
        """An editor page in the editor's language. ``here`` is the page the language links
        lead to when this one answers a form (a POST cannot be reloaded in another language)."""
        lang = editor_language(request)
        path = request.url.path if request.method == "GET" else here
        response = self._page(
            template,
            lang,
            status,
            switch=language_switch(path, lang),
            **context,
        )
        response.headers.update(SECURITY_HEADERS)
        keep_choice(request, response)
        return response

    def _refusal(self, request: Request, message: str, status: int, **headers: str) -> Response:
        response = self._desk(
            request,
            "pages/desk_message.html",
            status,
            title=self._text(request, EDITOR),
            message=message,
        )
        response.headers.update(headers)
        return response

    async def _form(self, request: Request) -> Any:
        """The posted form of a signed-in editor with the right CSRF token, or the Response
        that refuses it (back to the login page, or 403)."""
        if not self._editor(request):
            return self._denied()
        form = await request.form()
        if not same_secret(str(form.get("csrf", "")), self._csrf):
            return self._refusal(request, self._text(request, BAD_CSRF), 403)
        return form

    def _denied(self) -> Response:
        return RedirectResponse("/editor", status_code=303)

    def _login_page(self, request: Request, *, error: str = "", status: int = 200) -> Response:
        return self._desk(
            request, "pages/login.html", status, title=self._text(request, EDITOR), error=error
        )

    def _editor_page(
        self, request: Request, *, message: str = "", error: bool = False, status: int = 200
    ) -> Response:
        return self._desk(
            request,
            "pages/editor.html",
            status,
            title=self._text(request, EDITOR),
            issues=self.library.names(),
            csrf=self._csrf,
            message=message,
            error=error,
            languages=LANGUAGES,
        )

    async def editor(self, request: Request) -> Response:
        if not self._editor(request):
            return self._login_page(request)
        return self._editor_page(request, message=request.query_params.get("message", ""))

    async def login(self, request: Request) -> Response:
        client = request_client_key(request)
        if self._login_failures.blocked(client):
            log.warning("editor_login_throttled")
            response = self._login_page(request, error=self._text(request, THROTTLED), status=429)
            response.headers["retry-after"] = str(int(LOGIN_WINDOW_S))
            return response
        form = await request.form()
        token = str(form.get("token", ""))
        if not same_secret(token, self.settings.admin_token.get_secret_value()):
            self._login_failures.record(client)
            log.warning("editor_login_refused")
            return self._login_page(request, error=self._text(request, WRONG_TOKEN), status=403)
        response = RedirectResponse("/editor", status_code=303)
        response.set_cookie(
            COOKIE,
            self._session_signer.sign(b"editor").decode(),
            max_age=SESSION_MAX_AGE_S,
            httponly=True,
            samesite="strict",
            secure=self.settings.pages_url.startswith("https://"),
            path="/",
        )
        return response

    async def upload(self, request: Request) -> Response:
        form = await self._form(request)
        if isinstance(form, Response):
            return form
        sources: dict[str, str] = {}
        for lang in LANGUAGES:
            item = form.get(lang)
            if isinstance(item, UploadFile) and item.filename:
                sources[lang] = (await item.read()).decode("utf-8", errors="replace")
        name = str(form.get("name", ""))
        try:
            self.library.store(name, sources)
        except IssueFormatError as err:
            return self._editor_page(
                request, message=self._worded(request, err), error=True, status=422
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
            return self._refusal(request, self._text(request, NO_ISSUE, name=name), 404)
        lang = editor_language(request)
        gettext = self.templates.translations(lang).gettext
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
            problems = [p.worded(gettext) for p in result.verdict.problems]
            preflight = [
                {
                    "lang": code,
                    "kb": round(report.html_bytes / 1024, 1),
                    "spam": None if report.spam_score is None else f"{report.spam_score:.1f}",
                    "findings": [f.worded(gettext) for f in report.findings],
                }
                for code, report in result.reports.items()
            ]
        except IssueFormatError as err:
            problems = [p.worded(gettext) for p in err.problems]
        except RendererError as err:
            problems = [self._worded(request, err)]
        earlier: list[EarlierSend] = []
        number = None
        if matrix is not None:
            identity = IssueIdentity.of(parse_sources(folder.sources))
            earlier = await earlier_sends(self.sessions, issue_key=identity.issue_key)
            number = identity.number
        return self._desk(
            request,
            "pages/issue.html",
            status,
            here=f"/editor/issue/{name}",
            title=name,
            name=name,
            matrix=None
            if matrix is None
            else matrix_view(matrix, templates=self.templates, lang=lang),
            problems=problems,
            preflight=preflight,
            languages=sorted(folder.sources),
            all_languages=LANGUAGES,
            csrf=self._csrf,
            message=message,
            error=error,
            earlier=send_views(earlier, templates=self.templates, lang=lang),
            number=number,
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
            response: Response = HTMLResponse(FillPlan(mail.html, escape_html=True).fill(values))
        else:
            response = PlainTextResponse(FillPlan(mail.text, escape_html=False).fill(values))
        response.headers.update(SECURITY_HEADERS)
        return response

    async def test_send(self, request: Request) -> Response:
        form = await self._form(request)
        if isinstance(form, Response):
            return form
        name = request.path_params["name"]
        folder = self.library.folder(name)
        try:
            segments = sorted(folder.sources) if folder else []
            prepared = await self._prepare(
                name,
                segments=segments,
                fallbacks={},
                test_to=str(form.get("test_to", "")).strip(),
                surface=Surface.EDITOR,
            )
            await self._start(prepared, surface=Surface.EDITOR)
        except (RendererError, ValueError) as err:
            return await self.issue_page(
                request, message=self._worded(request, err), error=True, status=422
            )
        return await self.issue_page(
            request,
            message=self._text(request, TEST_REQUESTED, send_id=prepared.command.send_id),
        )

    async def send(self, request: Request) -> Response:
        form = await self._form(request)
        if isinstance(form, Response):
            return form
        name = request.path_params["name"]
        raw_fallbacks = str(form.get("fallbacks", ""))
        raw_intent = str(form.get("intent", "first"))
        typed = str(form.get("confirm_issue", "")).strip()
        confirm_number = int(typed) if typed.isdigit() else None
        when = {k: str(form.get(k, "")).strip() or None for k in ("at", "tz", "local_time")}
        try:
            if raw_intent not in {"first", "only_new", "resend_all"}:
                raise ValueError(f"unknown choice {raw_intent!r}")
            intent = SendIntent(raw_intent)
            segments = parse_segments([str(s) for s in form.getlist("segments")])
            prepared = await self._prepare(
                name,
                segments=segments,
                fallbacks=parse_fallbacks([raw_fallbacks]),
                test_to=None,
                surface=Surface.EDITOR,
                intent=intent,
                confirm_number=confirm_number,
                schedule=parse_schedule(
                    at=when["at"], tz=when["tz"], local_time=when["local_time"], clock=SYSTEM_CLOCK
                ),
            )
        except SendRefused as err:
            status = 409 if isinstance(err, IssueAlreadySent) else 422
            return await self.issue_page(
                request, message=self._worded(request, err), error=True, status=status
            )
        except (RendererError, ValueError) as err:
            return await self.issue_page(
                request, message=self._worded(request, err), error=True, status=422
            )
        if form.get("confirm") != "yes":
            rows, total = await self._sizes(prepared)
            return self._desk(
                request,
                "pages/confirm.html",
                here=f"/editor/issue/{name}",
                title=self._text(request, CONFIRM_TITLE, name=name),
                name=name,
                rows=rows,
                total=total,
                segments=segments,
                fallbacks=raw_fallbacks,
                csrf=self._csrf,
                intent=str(intent),
                confirm_issue=typed,
                at=when["at"] or "",
                tz=when["tz"] or "",
                local_time=when["local_time"] or "",
                schedule=(
                    describe_schedule(prepared.command.schedule)
                    if prepared.command.schedule
                    else ""
                ),
            )
        try:
            await self._start(prepared, surface=Surface.EDITOR, confirm_number=confirm_number)
        except SendRefused as err:
            return await self.issue_page(
                request, message=self._worded(request, err), error=True, status=409
            )
        return await self.issue_page(
            request, message=self._text(request, SEND_REQUESTED, send_id=prepared.command.send_id)
        )
