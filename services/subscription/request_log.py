"""One canonical log line per HTTP request, with a request id bound for every line inside it.

Only the path is logged, never the query string (tokens travel there) nor any form field.
A request id is a random prefix of the process and a counter: unique across the processes of
a deployment like a ``uuid4``, without a random draw (a system call) per request.
"""

from __future__ import annotations

import itertools
import secrets
import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger(__name__)
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._prefix = secrets.token_hex(5)
        self._numbers = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def remember_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with structlog.contextvars.bound_contextvars(
            request_id=f"{self._prefix}{next(self._numbers):06x}"
        ):
            try:
                await self.app(scope, receive, remember_status)
            finally:
                path = str(scope.get("path", ""))[:200]
                if path not in _QUIET_PATHS or status >= 400:
                    log.info(
                        "request_handled",
                        method=scope.get("method", ""),
                        path=path,
                        status=status,
                        duration_ms=round((time.perf_counter() - started) * 1000, 1),
                    )
