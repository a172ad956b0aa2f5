"""One public origin: the subscription app forwards the archive's paths to the renderer.

Readers reach everything at ``NEWSLETTER_PUBLIC_URL``: the signup, confirm, preferences and
unsubscribe pages are this app's own; the archive (``/{lang}/``, ``/{lang}/issues/{n}``,
``/{lang}/feed.atom``, ``/sitemap.xml`` and the old ``/archive/...`` links) belongs to the
renderer, which serves it on its internal port (``renderer_probe_port``). ``GET`` and ``HEAD``
of those paths are passed on over HTTP with short timeouts, never importing the renderer's code;
a renderer that does not answer gives a 502, not a hung page. In production the reverse proxy of
``deploy/nginx/newsletter.conf`` routes the same paths before they reach this app.
"""

from __future__ import annotations

import httpx
import structlog
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import PlainTextResponse, Response

from shared.settings import LANGUAGES, Settings

log = structlog.get_logger(__name__)

#: The paths the archive owns on the public origin (a prefix, or the whole path).
ARCHIVE_PATHS: tuple[str, ...] = ("/archive", "/sitemap.xml", *(f"/{lang}" for lang in LANGUAGES))
PASSED_HEADERS = (
    "content-type",
    "location",
    "cache-control",
    "etag",
    "last-modified",
    "content-security-policy",
    "x-frame-options",
    "x-content-type-options",
    "referrer-policy",
)
#: Request headers passed on: what the click counter of ``/{lang}/r/...`` needs to tell a
#: reader from a link scanner or a prefetch (issue 18).
FORWARDED_REQUEST_HEADERS = ("accept", "user-agent", "purpose", "sec-purpose", "x-moz")
TIMEOUT = httpx.Timeout(10.0, connect=2.0)


def renderer_pages_url(settings: Settings) -> str:
    """Where the renderer serves its pages inside the host (its probe port)."""
    return f"http://{settings.http_host}:{settings.renderer_probe_port}"


def is_archive_path(path: str) -> bool:
    """An archive path, with no dot segment: the HTTP client resolves ``/en/../editor`` (sent
    as ``/en/%2e%2e/editor``) to the renderer's ``/editor``, which readers must never reach."""
    segments = path.split("/")
    if "." in segments or ".." in segments:
        return False
    return any(path == p or path.startswith(p + "/") for p in ARCHIVE_PATHS)


class ArchiveForwarder:
    """Passes one request on to the renderer; the client is owned by the app's lifespan."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    @classmethod
    def client_for(
        cls, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=renderer_pages_url(settings),
            timeout=TIMEOUT,
            transport=transport,
            follow_redirects=False,
        )

    @staticmethod
    def _headers(request: Request) -> dict[str, str]:
        headers = {"accept": request.headers.get("accept", "*/*")}
        for name in FORWARDED_REQUEST_HEADERS[1:]:
            value = request.headers.get(name)
            if value is not None:
                headers[name] = value
        if request.client is not None:
            headers["x-forwarded-for"] = request.client.host
        return headers

    async def forward(self, request: Request) -> Response:
        path = request.url.path
        if not is_archive_path(path):
            raise HTTPException(status_code=404)  # the answer of any other unknown path
        try:
            upstream = await self._client.request(
                request.method,
                path,
                params=list(request.query_params.multi_items()),
                headers=self._headers(request),
            )
        except httpx.HTTPError as err:
            log.warning("archive_unreachable", path=path, error=type(err).__name__)
            return PlainTextResponse(
                "The archive is unavailable right now. Please try again in a minute.",
                status_code=502,
            )
        headers = {k: v for k, v in upstream.headers.items() if k.lower() in PASSED_HEADERS}
        return Response(upstream.content, status_code=upstream.status_code, headers=headers)


router = APIRouter(include_in_schema=False)


async def _forward(request: Request) -> Response:
    forwarder: ArchiveForwarder = request.app.state.archive
    return await forwarder.forward(request)


for _path in ARCHIVE_PATHS:
    router.add_api_route(_path, _forward, methods=["GET", "HEAD"])
    if _path != "/sitemap.xml":
        router.add_api_route(_path + "/{rest:path}", _forward, methods=["GET", "HEAD"])
