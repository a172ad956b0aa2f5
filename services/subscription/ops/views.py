"""How the ops pages are rendered: the templates under ``templates/ops/`` through the service's
:class:`~services.subscription.pages.Pages` (language from ``?lang=`` or ``Accept-Language``,
the public pages' stylesheet, language switch and security headers), with a CSP that also lets
the page load its own refresh script and fetch its sections."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from babel import Locale
from babel.numbers import format_decimal
from fastapi import Request
from fastapi.responses import HTMLResponse

from services.subscription.components import Components
from services.subscription.ops.state import Summary
from shared.messaging.topology import DEAD_LETTER_QUEUE

SCRIPT = Path(__file__).with_name("ops.js")
DEFAULT_REFRESH_S = 5
# The columns of a send's progress table, in this order; other states are summed in "other".
PROGRESS_COLUMNS = (
    "sent", "deferred", "bounced", "failed", "unknown", "sending", "queued", "pending",
)  # fmt: skip


@cache
def refresh_script() -> str:
    return SCRIPT.read_text(encoding="utf-8")


def _headers(components: Components, extra: dict[str, str] | None = None) -> dict[str, str]:
    csp = components.pages.content_security_policy.replace(
        "default-src 'none'; ", "default-src 'none'; script-src 'self'; connect-src 'self'; ", 1
    )
    return {"Content-Security-Policy": csp, **(extra or {})}


@cache
def number_format(lang: str) -> Callable[..., str]:
    """``number(value, digits=0)`` in the page's language: "1,234.5" in English, "1 234,5"
    in Belarusian and Russian (Babel's CLDR data), always ``digits`` decimals."""
    locale = Locale.parse(lang)

    def number(value: float, digits: int = 0) -> str:
        pattern = "#,##0." + "0" * digits if digits else "#,##0"
        return str(format_decimal(value, format=pattern, locale=locale))

    return number


def _summary_context(summary: Summary, lang: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "number": number_format(lang),
        "progress_columns": PROGRESS_COLUMNS,
        "dead_letter_queue": DEAD_LETTER_QUEUE,
    }


def login_page(
    request: Request,
    components: Components,
    *,
    lang: str,
    error: str = "",
    status_code: int = 401,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """The sign-in form; ``error`` is a sentence of ``page_texts``, translated here."""
    pages = components.pages
    return pages.render(
        request,
        "ops/login.html",
        lang=lang,
        status_code=status_code,
        headers=_headers(components, headers),
        error=pages.text(lang, error) if error else "",
    )


def ops_page(
    request: Request, components: Components, *, lang: str, summary: Summary, refresh_s: int
) -> HTMLResponse:
    return components.pages.render(
        request,
        "ops/page.html",
        lang=lang,
        headers=_headers(components),
        refresh_s=refresh_s,
        **_summary_context(summary, lang),
    )


def ops_sections(
    request: Request, components: Components, *, lang: str, summary: Summary
) -> HTMLResponse:
    return components.pages.render(
        request,
        "ops/sections.html",
        lang=lang,
        headers=_headers(components),
        **_summary_context(summary, lang),
    )
