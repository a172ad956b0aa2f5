"""Admin API for issues, with ``Authorization: Bearer <NEWSLETTER_ADMIN_TOKEN>``.

``GET /admin/api/issues``; ``GET``/``PUT /admin/api/issues/{name}`` (``{"sources": {lang: text}}``;
optional query ``segments=en,ru`` and ``fallback=be=ru``) answers the readiness verdict (``ready``,
``problems`` as ``file:line:column: …``, ``warnings``, ``plan``, the matrix);
``POST /admin/api/issues/{name}/sends`` (``segments``, ``fallbacks``,
``test_to``, ``confirm``) answers the segments and their sizes until ``"confirm": true`` (or a
test send) starts the send (202 with ``send_id``), like the editor page's confirmation step.
"""

from __future__ import annotations

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.renderer.errors import IssueFormatError, IssueNotReady, RendererError
from services.renderer.readiness import verdict
from services.renderer.sending import parse_fallbacks, parse_segments
from services.renderer.web_desk import WebDesk, same_secret

log = structlog.get_logger(__name__)


class AdminApi(WebDesk):
    """The editor page's actions as JSON."""

    def routes(self) -> list[Route]:
        return [
            Route("/admin/api/issues", self.api_list),
            Route("/admin/api/issues/{name}", self.api_issue, methods=["GET", "PUT"]),
            Route("/admin/api/issues/{name}/sends", self.api_send, methods=["POST"]),
        ]

    def _api_ok(self, request: Request) -> bool:
        expected = f"Bearer {self.settings.admin_token.get_secret_value()}"
        return same_secret(request.headers.get("authorization", ""), expected)

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
            segments = parse_segments(request.query_params.get("segments"))
            fallbacks = parse_fallbacks(request.query_params.getlist("fallback"))
        except RendererError as err:
            return JSONResponse({"detail": str(err)}, 422)
        # The verdict ``issue check`` prints and ``issue send`` refuses on.
        found = verdict(folder.sources, segments=segments, fallbacks=fallbacks)
        status = 200 if found.matrix is not None else 422
        return JSONResponse({"name": name, **found.as_dict()}, status)

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
            body: dict[str, object] = {"detail": str(err)}
            if isinstance(err, IssueNotReady):  # the verdict's errors, as ``GET`` lists them
                body["problems"] = [str(p) for p in err.problems]
            return JSONResponse(body, 422)
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
