"""Shared state and helpers of the renderer's web pages and admin API."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import structlog
from itsdangerous import TimestampSigner
from starlette.responses import HTMLResponse

from services.renderer import issue_sends
from services.renderer.catalogs import Templates
from services.renderer.errors import IssueNotReady
from services.renderer.issue import parse_sources
from services.renderer.issue_sends import IssueIdentity, Surface
from services.renderer.library import IssueLibrary
from services.renderer.sending import PreparedSend, prepare_send_async
from services.renderer.settings import RendererSettings
from services.renderer.store import Sessions, segment_sizes
from shared.db.tables import SendIntent
from shared.messaging.publisher import Publisher
from shared.messaging.schemas import SendSchedule
from shared.messaging.topology import RENDER_ISSUE

log = structlog.get_logger(__name__)

# Every HTML page of the renderer (public or the editor's) sends these.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}


class WebDesk:
    """What every page needs: settings, database, publisher, templates, the issue library."""

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
        # Editor sessions: a signed, timestamped cookie (valid in every replica, expires).
        self._session_signer = TimestampSigner(secret, salt=b"renderer-editor-session")
        self._csrf = hmac.new(secret, b"renderer-editor-csrf", hashlib.sha256).hexdigest()

    def _page(self, template: str, lang: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.templates.env(lang).get_template(template).render(lang=lang, **context)
        return HTMLResponse(html, status_code=status)

    async def _prepare(
        self,
        name: str,
        *,
        segments: list[str],
        fallbacks: Mapping[str, str],
        test_to: str | None,
        surface: Surface,
        intent: SendIntent = SendIntent.FIRST,
        confirm_number: int | None = None,
        schedule: SendSchedule | None = None,
    ) -> PreparedSend:
        """Check the send against the issue's earlier sends (quick), then render and preflight.

        Raise :class:`~services.renderer.issue_sends.SendRefused` or the renderer's errors."""
        folder = self.library.folder(name)
        if folder is None:
            raise IssueNotReady(f"no issue named {name!r}")
        intent = SendIntent.TEST if test_to is not None else intent
        await issue_sends.check(
            self.sessions,
            identity=IssueIdentity.of(parse_sources(folder.sources)),
            intent=intent,
            surface=surface,
            confirm_number=confirm_number,
        )
        return await prepare_send_async(
            folder,
            settings=self.settings,
            templates=self.templates,
            segments=segments,
            fallbacks=fallbacks,
            test_to=test_to,
            spam=self.settings.preflight_spam,
            intent=intent,
            schedule=schedule,
        )

    async def _start(
        self, prepared: PreparedSend, *, surface: Surface, confirm_number: int | None = None
    ) -> None:
        """Record the request (the database refuses a second first send), then publish it."""
        await issue_sends.claim(
            self.sessions,
            identity=prepared.identity,
            send_id=prepared.command.send_id,
            intent=prepared.intent,
            segments=prepared.command.segments,
            surface=surface,
            confirm_number=confirm_number,
        )
        try:
            await self.publisher.publish(prepared.command, routing_key=RENDER_ISSUE)
        except Exception:
            await issue_sends.release(self.sessions, send_id=prepared.command.send_id)
            raise
        log.info(
            "send_requested",
            send_id=prepared.command.send_id,
            issue_key=prepared.command.issue_key,
            test=prepared.command.test_to is not None,
            intent=str(prepared.intent),
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
