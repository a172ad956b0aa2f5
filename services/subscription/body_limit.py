"""A cap on request bodies, so a hostile client cannot make us buffer megabytes.

Forms are tiny; only the admin CSV import may be large. A declared ``Content-Length`` over
the cap gets 413 at once; a chunked body that grows past it is cut off (the app then sees a
disconnected client and answers 400).
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

FORM_LIMIT = 64 * 1024
IMPORT_LIMIT = 11 * 1024 * 1024
IMPORT_PATH = "/api/subscribers/import"


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = IMPORT_LIMIT if scope.get("path") == IMPORT_PATH else FORM_LIMIT
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await PlainTextResponse("request body too large\n", 413)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise ClientDisconnect()
            return message

        await self.app(scope, counted, send)
