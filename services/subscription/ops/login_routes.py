"""Signing in to the ops page and out of it.

``POST /admin/login`` checks the admin token and sets the session cookie (HttpOnly,
SameSite=Strict; a signed, expiring session id, never the token: ``admin_sessions.py``);
wrong tokens are counted per client and, past the limit, answered 429 for the rest of the
window. ``POST /admin/logout`` revokes the session on the server. The form carries the page
language, so its answers (and the page after it) keep speaking it.
"""

from __future__ import annotations

import hmac
from typing import Annotated

import structlog
from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from services.subscription import page_texts
from services.subscription.admin_sessions import (
    COOKIE,
    LOGIN_WINDOW_S,
    SESSION_MAX_AGE_S,
    admin_sessions,
)
from services.subscription.dependencies import ComponentsDep, SettingsDep
from services.subscription.languages import DEFAULT_LANGUAGE
from services.subscription.ops import views

log = structlog.get_logger(__name__)

router = APIRouter()


def _admin_url(lang: str) -> str:
    return "/admin" if lang == DEFAULT_LANGUAGE else f"/admin?lang={lang}"


@router.post("/admin/login", include_in_schema=False)
async def admin_login(
    request: Request,
    settings: SettingsDep,
    components: ComponentsDep,
    token: Annotated[str, Form()] = "",
    lang: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    language = components.pages.language(request, lang or None)
    sessions = admin_sessions(request, settings)
    client = components.limit_key(request)
    if sessions.login_failures.blocked(client):
        log.warning("admin_login_throttled")
        return views.login_page(
            request,
            components,
            lang=language,
            error=page_texts.OPS_TOO_MANY_TOKENS,
            status_code=429,
            headers={"Retry-After": str(int(LOGIN_WINDOW_S))},
        )
    expected = settings.admin_token.get_secret_value()
    if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        sessions.login_failures.record(client)  # counts this wrong token
        log.info("admin_login_refused")
        return views.login_page(
            request, components, lang=language, error=page_texts.OPS_WRONG_TOKEN
        )
    response = RedirectResponse(_admin_url(language), status_code=303)
    response.set_cookie(
        COOKIE,
        sessions.open(),
        max_age=SESSION_MAX_AGE_S,
        httponly=True,
        samesite="strict",
        secure=settings.public_url.startswith("https://"),
        path="/",
    )
    log.info("admin_login")
    return response


@router.post("/admin/logout", include_in_schema=False)
async def admin_logout(request: Request, settings: SettingsDep) -> Response:
    admin_sessions(request, settings).revoke(request.cookies.get(COOKIE, ""))
    response = RedirectResponse("/admin", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response
