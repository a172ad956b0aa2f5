"""The renderer's HTTP pages, served with its probes on ``renderer_probe_port``.

Public (reached through ``NEWSLETTER_PUBLIC_URL``, see :mod:`services.renderer.public_pages`):
``/{lang}/``, ``/{lang}/issues/{number}``, ``/{lang}/feed.atom``, ``/sitemap.xml``, and 301s
from the old ``/archive/...`` links; ``/{lang}/r/{token}``, the tracked article links
(:mod:`services.renderer.click_pages`).
Editors (admin token; a signed cookie after ``/editor/login``, CSRF-checked forms):
``/editor`` (pick or upload an issue), ``/editor/issue/{name}`` (readiness matrix, previews, test
send, send with a confirmation step naming segments and their sizes). The admin API offers the
same with ``Authorization: Bearer <NEWSLETTER_ADMIN_TOKEN>`` under ``/admin/api/issues``.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from services.renderer.admin_api import AdminApi
from services.renderer.catalogs import Templates
from services.renderer.click_pages import ClickPages
from services.renderer.clicks import ClickService
from services.renderer.editor_pages import EditorPages
from services.renderer.public_pages import PublicPages
from services.renderer.report_pages import ReportPages
from services.renderer.settings import RendererSettings
from services.renderer.store import Sessions
from shared.messaging.publisher import Publisher
from shared.probes import ReadinessCheck, probe_app


def build_app(
    *,
    settings: RendererSettings,
    sessions: Sessions,
    publisher: Publisher,
    templates: Templates,
    checks: Mapping[str, ReadinessCheck],
    registry: CollectorRegistry,
    clicks: ClickService | None = None,
) -> Starlette:
    """The probe app with the renderer's pages added (the click redirect before the archive's
    catch-all ``/{lang}/{rest}``)."""
    app = probe_app(checks, registry)
    if clicks is not None:
        redirects = ClickPages(
            clicks=clicks,
            settings=settings,
            sessions=sessions,
            publisher=publisher,
            templates=templates,
        )
        app.router.routes.extend(redirects.routes())
    for pages in (PublicPages, EditorPages, ReportPages, AdminApi):
        desk = pages(settings=settings, sessions=sessions, publisher=publisher, templates=templates)
        app.router.routes.extend(desk.routes())
    return app
