"""Rendering our HTML pages: language, CSRF cookie, security headers, one place.

Every page is rendered by :meth:`Pages.render`, which sets ``<html lang>``, the language
switch, a CSRF pair (cookie + hidden field) and headers that keep pages out of frames and
caches and links from leaking tokens in ``Referer``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment

from services.subscription.form_guard import CSRF_COOKIE, CsrfGuard, CsrfPair
from services.subscription.i18n import load_translations, page_environments
from services.subscription.languages import LANGUAGE_NAMES, choose_language
from services.subscription.publication import SAMPLE_NAME, Publication
from services.subscription.reading_times import TIME_ZONE_SCRIPT_HASH

CSP_TEMPLATE = (
    f"default-src 'none'; style-src 'unsafe-inline'; script-src '{TIME_ZONE_SCRIPT_HASH}'; "
    "img-src 'self'{logo}; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP_TEMPLATE.format(logo=""),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Pages:
    def __init__(
        self,
        *,
        csrf: CsrfGuard,
        secure_cookies: bool,
        publication: Publication | None = None,
    ) -> None:
        self._environments: dict[str, Environment] = page_environments()
        self._translations = {lang: load_translations(lang) for lang in self._environments}
        self._csrf = csrf
        self._secure = secure_cookies
        self._publication = publication or Publication()
        origin = self._publication.logo_origin
        self._headers = {
            **SECURITY_HEADERS,
            "Content-Security-Policy": CSP_TEMPLATE.format(logo=f" {origin}" if origin else ""),
        }
        self._static: dict[tuple[str, str, str, tuple[str, ...]], str] = {}

    @property
    def content_security_policy(self) -> str:
        """The pages' CSP (with the logo's origin): pages that need more extend it."""
        return self._headers["Content-Security-Policy"]

    def publication_name(self, lang: str) -> str:
        """The sample name is translated; a publication's own name is shown as it is set."""
        name = self._publication.name
        return self.text(lang, name) if name == SAMPLE_NAME else name

    def naming_text(self, lang: str, message: str, named: str) -> str:
        """A sentence naming the publication: ``message`` (the sample's own wording) for the
        sample, ``named`` with the publication's name otherwise."""
        name = self._publication.name
        if name == SAMPLE_NAME:
            return self.text(lang, message)
        return self.text(lang, named) % {"name": name}

    def language(self, request: Request, explicit: str | None = None) -> str:
        return choose_language(
            explicit or request.query_params.get("lang"), request.headers.get("accept-language")
        )

    def text(self, lang: str, message: str) -> str:
        return str(self._translations[lang].gettext(message))

    def render(
        self,
        request: Request,
        template: str,
        *,
        lang: str,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        pair = self._csrf.pair_for(request.cookies.get(CSRF_COOKIE))
        keep = {
            key: value
            for key, value in request.query_params.items()
            if key == "token" and request.method == "GET"
        }
        switch_links = [
            (code, name, f"{request.url.path}?{urlencode({**keep, 'lang': code})}")
            for code, name in LANGUAGE_NAMES.items()
        ]
        html = (
            self._environments[lang]
            .get_template(template)
            .render(
                lang=lang,
                switch_links=switch_links,
                language_names=LANGUAGE_NAMES,
                csrf_token=pair.field,
                publication_name=self.publication_name(lang),
                pitch=self._publication.pitch(lang),
                logo_url=self._publication.logo_url,
                **context,
            )
        )
        return self._response(html, pair, lang=lang, status_code=status_code, headers=headers)

    def _response(
        self,
        html: str,
        pair: CsrfPair,
        *,
        lang: str,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
    ) -> HTMLResponse:
        response = HTMLResponse(
            html,
            status_code=status_code,
            headers={**self._headers, "Content-Language": lang, **(headers or {})},
        )
        if pair.is_new:
            response.set_cookie(
                CSRF_COOKIE,
                pair.cookie,
                httponly=True,
                samesite="lax",
                secure=self._secure,
                path="/",
            )
        return response

    def posted_message(
        self, request: Request, *, lang: str, heading: str, paragraphs: list[str]
    ) -> HTMLResponse:
        """:meth:`message` for the answer to a POST, rendered once per language and path.

        ``message.html`` shows no CSRF field, and after a POST the language links carry no
        token, so the page depends only on these; the CSRF cookie is still set per request.
        The signup's "check your inbox" page is rendered for every signup of a rush.
        """
        key = (lang, request.url.path, heading, tuple(paragraphs))
        html = self._static.get(key)
        if html is None or request.method != "POST":
            rendered = self.message(request, lang=lang, heading=heading, paragraphs=paragraphs)
            if request.method == "POST" and len(self._static) < 64:
                self._static[key] = bytes(rendered.body).decode()
            return rendered
        return self._response(
            html, self._csrf.pair_for(request.cookies.get(CSRF_COOKIE)), lang=lang
        )

    def message(
        self,
        request: Request,
        *,
        lang: str,
        heading: str,
        paragraphs: list[str],
        status_code: int = 200,
        link: tuple[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> HTMLResponse:
        """A page of translated sentences (``page_texts`` constants) and an optional link."""
        return self.render(
            request,
            "message.html",
            lang=lang,
            status_code=status_code,
            headers=headers,
            heading=self.text(lang, heading),
            paragraphs=[self.text(lang, p) for p in paragraphs],
            link_href=link[0] if link else None,
            link_text=self.text(lang, link[1]) if link else None,
        )
