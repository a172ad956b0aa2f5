"""Typed FastAPI dependencies over the resources the lifespan puts on ``app.state``.

The lifespan (``app.py``) sets ``app.state.settings`` (Settings), ``app.state.sessions``
(async_sessionmaker), ``app.state.publisher`` (Publisher) and ``app.state.components``
(this service's own collaborators); routes take them through these aliases instead of
reaching for globals.

The getters are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in its thread
pool, and two thread hand-offs per signup cost more CPU than the rest of the request's
plumbing under a rush (measured by profiling the signup load test).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import structlog
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel.ext.asyncio.session import AsyncSession

from services.subscription.admin_sessions import COOKIE, admin_sessions
from services.subscription.components import Components
from services.subscription.mail_commands import TransactionalMail
from shared.messaging.publisher import Publisher
from shared.rate_limit import request_client_key
from shared.settings import Settings
from shared.token_budget import TokenCheck, bearer_token

log = structlog.get_logger(__name__)


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


async def get_publisher(request: Request) -> Publisher:
    publisher: Publisher = request.app.state.publisher
    return publisher


async def get_components(request: Request) -> Components:
    components: Components = request.app.state.components
    return components


async def get_mail(request: Request) -> TransactionalMail:
    mail: TransactionalMail = request.app.state.mail
    return mail


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
PublisherDep = Annotated[Publisher, Depends(get_publisher)]
ComponentsDep = Annotated[Components, Depends(get_components)]
MailDep = Annotated[TransactionalMail, Depends(get_mail)]


# Declared so that OpenAPI documents the scheme; the check itself is ``require_admin``.
admin_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="`Authorization: Bearer <NEWSLETTER_ADMIN_TOKEN>`",
)


async def require_admin(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)] = None,
) -> None:
    """Bearer ``NEWSLETTER_ADMIN_TOKEN`` (header), or an ops-page session cookie
    (:mod:`services.subscription.admin_sessions`; it never holds the token).

    A wrong bearer token costs its client one unit of ``NEWSLETTER_ADMIN_API_FAILURES_ALLOWED``;
    once they are spent, that client's bearer requests answer 429, the right token too, until
    the window frees one (:mod:`shared.token_budget`). Also callable directly (the ops page
    does): without ``credentials`` it reads the header.
    """
    header = request.headers.get("authorization", "")
    given = credentials.credentials if credentials is not None else bearer_token(header)
    sessions = admin_sessions(request, settings)
    if not given and sessions.valid(request.cookies.get(COOKIE, "")):
        return
    if header:
        client = request_client_key(request)
        expected = settings.admin_token.get_secret_value()
        checked = sessions.api_failures.check(client, given, expected)
        if checked is TokenCheck.ACCEPTED:
            return
        if checked is TokenCheck.THROTTLED:
            log.warning("admin_api_throttled")
            raise HTTPException(
                status_code=status.HTTP_429_TOO_MANY_REQUESTS,
                detail="too many wrong tokens from this client",
                headers={"Retry-After": str(sessions.api_failures.retry_after_s(client))},
            )
        log.info("admin_api_token_refused")
    raise HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="admin token required",
        headers={"WWW-Authenticate": "Bearer"},
    )


AdminDep = Annotated[None, Depends(require_admin)]
