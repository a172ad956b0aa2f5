"""The answer page of a POST is rendered once per language: the same page as a fresh render,
with the CSRF cookie still set per request."""

from __future__ import annotations

from starlette.requests import Request

from services.subscription import page_texts as texts
from services.subscription.form_guard import CSRF_COOKIE, CsrfGuard
from services.subscription.pages import Pages


def _post(cookie: str | None = None) -> Request:
    headers = [(b"cookie", f"{CSRF_COOKIE}={cookie}".encode())] if cookie else []
    return Request(
        {
            "type": "http",
            "method": "POST",
            "path": "/subscribe",
            "query_string": b"",
            "headers": headers,
        }
    )


def _done(pages: Pages, request: Request, lang: str) -> tuple[str, str | None]:
    response = pages.posted_message(
        request, lang=lang, heading=texts.SIGNUP_DONE_HEADING, paragraphs=[texts.SIGNUP_DONE_TEXT]
    )
    return bytes(response.body).decode(), response.headers.get("set-cookie")


def test_the_cached_page_is_the_rendered_page_in_each_language() -> None:
    pages = Pages(csrf=CsrfGuard("p" * 40), secure_cookies=False)
    for lang in ("en", "be", "ru"):
        fresh = pages.message(
            _post(),
            lang=lang,
            heading=texts.SIGNUP_DONE_HEADING,
            paragraphs=[texts.SIGNUP_DONE_TEXT],
        )
        first, _ = _done(pages, _post("c" * 32), lang)
        again, _ = _done(pages, _post("d" * 32), lang)
        assert first == again == bytes(fresh.body).decode(), f"{lang}: cached page differs"
        assert f'lang="{lang}"' in again
    assert len({_done(pages, _post("c" * 32), lang)[0] for lang in ("en", "be", "ru")}) == 3


def test_a_post_without_a_csrf_cookie_still_gets_a_new_one_from_the_cache() -> None:
    pages = Pages(csrf=CsrfGuard("p" * 40), secure_cookies=False)
    _done(pages, _post("c" * 32), "en")  # fills the cache
    _, with_cookie = _done(pages, _post("c" * 32), "en")
    _, without = _done(pages, _post(), "en")
    assert with_cookie is None, "a valid cookie is kept, not replaced"
    assert without is not None
    assert without.startswith(f"{CSRF_COOKIE}=")
    assert "httponly" in without.lower()
