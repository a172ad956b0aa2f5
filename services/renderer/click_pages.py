"""``/{lang}/r/{token}``: the redirect of a tracked article link (public, through the origin).

The hot path is one token check (an HMAC over seven bytes), one dictionary lookup of the
target and one buffered counter increment. A token whose signature fails never redirects: the
page says the link is damaged and, when what it names is a link of ours, shows that link's
address as text (our own ``tracked_link`` row, never anything read from the token), with the
issue's page in the archive. A good token of a link we do not know (a database restored from
before the send) gets the same page without an address.

Per-reader mode (``NEWSLETTER_PER_READER_ANALYTICS=true``) adds ``/{lang}/r/{token}/{ref}``:
the same redirect, whose ``ref`` (checked with one more HMAC, :mod:`shared.reader_refs`) names
the delivery of a consenting reader's mail. The click is counted in the aggregate as any other
and, when counted as a reader's, buffered for the flusher, which writes it only while that
reader's consent stands. A bad reference is ignored (the aggregate still counts). With the
mode off the route does not exist.

With ``NEWSLETTER_OPEN_TRACKING=true`` (only then) ``/{lang}/o/{token}.gif`` answers the open
pixel (:mod:`services.renderer.opens`): always the same transparent GIF, so a mail never shows
a broken image; a load is counted only when the token is authentic.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from services.renderer.catalogs import N_
from services.renderer.click_counter import classify
from services.renderer.click_store import tracked_link
from services.renderer.clicks import ClickService
from services.renderer.opens import OPEN_PATH, PIXEL_GIF, PIXEL_HEADERS, classify_open
from services.renderer.public_pages import PublicPages
from services.renderer.tracking import CLICK_PATH, LinkRef
from shared.settings import LANGUAGES

DAMAGED_TITLE = N_("This link is damaged")
REDIRECT_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def _client(request: Request) -> int:
    """An in-memory key of the client for the burst rule (never stored, never logged)."""
    forwarded = request.headers.get("x-forwarded-for", "")
    address = forwarded.split(",", 1)[0].strip() or (request.client.host if request.client else "")
    return hash((address, request.headers.get("user-agent", "")))


class ClickPages(PublicPages):
    """The click redirect; pages in the archive's layout."""

    def __init__(self, *, clicks: ClickService, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clicks = clicks

    def routes(self) -> list[Route]:
        routes = [
            Route(f"/{lang}/{CLICK_PATH}/{{token}}", self.follow, methods=["GET", "HEAD"])
            for lang in LANGUAGES
        ]
        if self.clicks.reader_refs is not None:
            routes += [
                Route(
                    f"/{lang}/{CLICK_PATH}/{{token}}/{{ref}}", self.follow, methods=["GET", "HEAD"]
                )
                for lang in LANGUAGES
            ]
        if self.settings.open_tracking:
            routes += [
                Route(f"/{lang}/{OPEN_PATH}/{{token}}.gif", self.pixel, methods=["GET", "HEAD"])
                for lang in LANGUAGES
            ]
        return routes

    async def pixel(self, request: Request) -> Response:
        ref = self.clicks.open_tokens.check(request.path_params["token"])
        if ref is not None:
            self.clicks.opens.load(ref, classify_open(request.method, request.headers))
        return Response(PIXEL_GIF, media_type="image/gif", headers=PIXEL_HEADERS)

    async def follow(self, request: Request) -> Response:
        token = request.path_params["token"]
        ref, good = self.clicks.tokens.check(token)
        if not good or ref is None:
            return await self._damaged(request, ref)
        url = await self.clicks.target(ref)
        if url is None:
            return await self._damaged(request, None)
        verdict = classify(request.method, request.headers)
        if verdict is None:
            delivery = None
            reader_ref = request.path_params.get("ref")
            if reader_ref is not None and self.clicks.reader_refs is not None:
                delivery = self.clicks.reader_refs.check(reader_ref)
            self.clicks.counter.click(ref, client=_client(request), delivery=delivery)
        else:
            self.clicks.counter.filtered(ref, verdict)
        return RedirectResponse(url, status_code=302, headers=REDIRECT_HEADERS)

    async def _damaged(self, request: Request, claimed: LinkRef | None) -> Response:
        lang = self._lang(request)
        known = None
        if claimed is not None:
            # Only a row of ours is shown, as text: a forged token can at most pick which of
            # the links we sent is named, never put an address of its own on this page.
            known = await tracked_link(
                self.sessions,
                issue=claimed.issue,
                edition=claimed.edition,
                article=claimed.article,
                link=claimed.link,
            )
        response = self._public(
            "pages/public_link_damaged.html",
            lang,
            status=400,
            title=self.templates.gettext(lang, DAMAGED_TITLE),
            canonical=None,
            noindex=True,
            switch=self._switch(lang, self.home_url),
            known_url=known.url if known is not None else None,
            issue_url=self.issue_url(lang, known.issue_number) if known is not None else None,
        )
        response.headers["Cache-Control"] = "no-store"
        return response
