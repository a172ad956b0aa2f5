"""What the editor pages show, in the editor's language: the language choice and switch, the
readiness matrix and the earlier sends of an issue, put into words from the catalogs.

The language is the one the public pages would choose (``?lang=``, else ``Accept-Language``,
:mod:`shared.languages`); a ``?lang=`` choice is kept in a cookie, since the editor moves
between forms and redirects that carry no query string. The editor stays off the public origin,
so it takes no ``/{lang}/`` prefix (those paths are forwarded to the archive).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from services.renderer.catalogs import N_, Templates
from services.renderer.issue_sends import EarlierSend
from services.renderer.readiness import MISSING, OK, Matrix
from shared.languages import LANGUAGE_NAMES, choose_language
from shared.settings import LANGUAGES

LANG_COOKIE = "nl_editor_lang"
LANG_COOKIE_MAX_AGE_S = 365 * 24 * 3600

ROW_LABELS = {
    "subject": N_("Subject"),
    "preheader": N_("Preheader"),
    "links": N_("Links"),
    "images with alt": N_("Images with alt text"),
    "markdown": N_("Markdown"),
}
ARTICLE_ROW = N_("Article %(key)s")
CELLS = {OK: N_("ok"), MISSING: N_("missing")}
# "2 problems", "1 bad", "3 no alt" (the matrix's own words): a label and a count, no plurals.
COUNTED = {
    "problem": N_("problems: %(count)s"),
    "bad": N_("broken: %(count)s"),
    "no alt": N_("without alt text: %(count)s"),
}
INTENTS = {
    "first": N_("first send"),
    "only_new": N_("only new readers"),
    "resend_all": N_("everyone again"),
    "test": N_("test"),
}
STATUSES = {
    "requested": N_("requested"),
    "planning": N_("planning"),
    "running": N_("sending"),
    "paused": N_("paused"),
    "cancelled": N_("cancelled"),
    "done": N_("done"),
}
DELIVERY_STATUSES = {
    "pending": N_("pending"),
    "queued": N_("queued"),
    "sending": N_("sending"),
    "sent": N_("sent"),
    "deferred": N_("deferred"),
    "bounced": N_("bounced"),
    "failed": N_("failed"),
    "unknown": N_("unknown"),
    "cancelled": N_("cancelled"),
    "complained": N_("complained"),
    "unsubscribed": N_("unsubscribed"),
}
_COUNTED_CELL = re.compile(r"^(\d+) (problems?|bad|no alt)$")


def editor_language(request: Request) -> str:
    """``?lang=``, else the cookie of an earlier choice, else ``Accept-Language``, else en."""
    explicit = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE)
    return choose_language(explicit, request.headers.get("accept-language"))


def keep_choice(request: Request, response: Response) -> None:
    """Remember an explicit ``?lang=`` for the editor's next pages."""
    chosen = request.query_params.get("lang", "").lower()
    if chosen in LANGUAGES and chosen != request.cookies.get(LANG_COOKIE):
        response.set_cookie(
            LANG_COOKIE,
            chosen,
            max_age=LANG_COOKIE_MAX_AGE_S,
            httponly=True,
            samesite="strict",
            path="/editor",
        )


@dataclass(frozen=True)
class Switch:
    lang: str
    name: str
    url: str
    current: bool


def language_switch(path: str, lang: str) -> list[Switch]:
    """The editor's language links: the same page (``path``) in each language."""
    return [
        Switch(code, LANGUAGE_NAMES[code], f"{path}?lang={code}", code == lang)
        for code in LANGUAGES
    ]


@dataclass(frozen=True)
class MatrixView:
    languages: list[str]
    rows: list[tuple[str, list[tuple[str, bool]]]]  # label, then (cell text, ok) per language


def matrix_view(matrix: Matrix, *, templates: Templates, lang: str) -> MatrixView:
    """The readiness matrix with its labels and cells in ``lang``."""

    def label(raw: str) -> str:
        if raw.startswith("article "):
            return templates.gettext(lang, ARTICLE_ROW, key=raw.removeprefix("article "))
        return templates.gettext(lang, ROW_LABELS[raw]) if raw in ROW_LABELS else raw

    def cell(raw: str) -> str:
        if raw in CELLS:
            return templates.gettext(lang, CELLS[raw])
        counted = _COUNTED_CELL.match(raw)
        if counted:
            noun = counted.group(2).removesuffix("s") if counted.group(2) != "bad" else "bad"
            return templates.gettext(lang, COUNTED[noun], count=counted.group(1))
        return raw

    rows = [
        (
            label(raw_label),
            [(cell(cells.get(code, "-")), cells.get(code) == OK) for code in matrix.languages],
        )
        for raw_label, cells in matrix.rows
    ]
    return MatrixView(languages=list(matrix.languages), rows=rows)


@dataclass(frozen=True)
class SendView:
    send_id: str
    intent: str
    requested: str  # UTC, "2026-12-01 22:58"
    status: str
    done: bool
    deliveries: int
    counts: list[tuple[str, int]]


def send_views(
    earlier: Sequence[EarlierSend], *, templates: Templates, lang: str
) -> list[SendView]:
    """Each earlier send of the issue with its progress (deliveries by status)."""

    def word(table: dict[str, str], raw: str) -> str:
        return templates.gettext(lang, table[raw]) if raw in table else raw

    return [
        SendView(
            send_id=send.send_id,
            intent=word(INTENTS, send.intent),
            requested=send.requested_at.strftime("%Y-%m-%d %H:%M"),
            status=word(STATUSES, send.status),
            done=send.status == "done",
            deliveries=send.deliveries,
            counts=[(word(DELIVERY_STATUSES, s), n) for s, n in sorted(send.counts.items())],
        )
        for send in earlier
    ]
