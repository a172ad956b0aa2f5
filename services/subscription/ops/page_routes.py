"""The operators' page, ``/admin``: sends in progress, queues, errors, dead letters, reputation.

Behind the admin token: a bearer header, or the session cookie of ``login_routes.py``. Without
either, ``/admin`` answers the sign-in form (401). The page refreshes itself: its script
(``/admin/ops.js``) fetches the rendered sections (``/admin/sections``) every few seconds; the
same data is served as JSON at ``/admin/summary.json``. This router's lifespan keeps the queue
gauges of ``/metrics`` fresh (``state.py``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, Response

from services.subscription import page_texts
from services.subscription.dependencies import (
    AdminDep,
    ComponentsDep,
    SessionDep,
    SettingsDep,
    require_admin,
)
from services.subscription.ops import views
from services.subscription.ops.state import Summary, build_summary, ops_lifespan, ops_state
from shared.settings import Settings

router = APIRouter(lifespan=ops_lifespan)


async def _summary(request: Request, settings: Settings, session: SessionDep) -> Summary:
    return await build_summary(state=ops_state(request, settings), session=session)


@router.get("/admin", response_class=HTMLResponse, include_in_schema=False)
async def admin_page(
    request: Request,
    settings: SettingsDep,
    session: SessionDep,
    components: ComponentsDep,
    refresh: Annotated[int, Query(ge=1, le=300)] = views.DEFAULT_REFRESH_S,
) -> Response:
    lang = components.pages.language(request)
    try:
        await require_admin(request, settings)
    except HTTPException as refused:
        if refused.status_code == status.HTTP_429_TOO_MANY_REQUESTS:  # the token budget
            return views.login_page(
                request,
                components,
                lang=lang,
                error=page_texts.OPS_TOO_MANY_TOKENS,
                status_code=refused.status_code,
                headers=dict(refused.headers or {}),
            )
        return views.login_page(request, components, lang=lang)
    summary = await _summary(request, settings, session)
    return views.ops_page(request, components, lang=lang, summary=summary, refresh_s=refresh)


@router.get("/admin/sections", response_class=HTMLResponse, include_in_schema=False)
async def admin_sections(
    request: Request,
    settings: SettingsDep,
    session: SessionDep,
    components: ComponentsDep,
    _: AdminDep,
) -> Response:
    summary = await _summary(request, settings, session)
    lang = components.pages.language(request)
    return views.ops_sections(request, components, lang=lang, summary=summary)


@router.get("/admin/summary.json")
async def admin_summary(
    request: Request, settings: SettingsDep, session: SessionDep, _: AdminDep
) -> JSONResponse:
    """Everything the ops page shows, as JSON (for scripts and dashboards)."""
    summary = await _summary(request, settings, session)
    return JSONResponse(summary.as_dict(), headers={"cache-control": "no-store"})


@router.get("/admin/ops.js", include_in_schema=False)
async def admin_script() -> Response:
    return Response(
        views.refresh_script(),
        media_type="text/javascript",
        headers={"cache-control": "max-age=300", "X-Content-Type-Options": "nosniff"},
    )
