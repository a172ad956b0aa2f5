"""The editor pages' words: the language choice, and the readiness matrix and earlier sends put
into the editor's language."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from starlette.requests import Request

from services.renderer.catalogs import Templates
from services.renderer.editor_views import (
    LANG_COOKIE,
    editor_language,
    language_switch,
    matrix_view,
    send_views,
)
from services.renderer.issue_sends import EarlierSend
from services.renderer.readiness import Matrix


def request(query: str = "", *, cookie: str = "", accept: str = "") -> Request:
    headers = []
    if cookie:
        headers.append((b"cookie", f"{LANG_COOKIE}={cookie}".encode()))
    if accept:
        headers.append((b"accept-language", accept.encode()))
    scope = {"type": "http", "method": "GET", "path": "/editor", "query_string": query.encode()}
    return Request({**scope, "headers": headers})


@pytest.mark.parametrize(
    ("query", "cookie", "accept", "expected"),
    [
        ("", "", "", "en"),
        ("", "", "ru-RU,en;q=0.5", "ru"),
        ("", "be", "ru-RU", "be"),
        ("lang=ru", "be", "en", "ru"),
        ("lang=de", "", "be", "be"),
    ],
)
def test_the_editor_language_is_the_choice_then_the_cookie_then_the_browser(
    query: str, cookie: str, accept: str, expected: str
) -> None:
    assert editor_language(request(query, cookie=cookie, accept=accept)) == expected


def test_the_switch_offers_the_same_page_in_each_language_by_its_own_name() -> None:
    switch = language_switch("/editor/issue/x", "be")
    assert [(s.name, s.url, s.current) for s in switch] == [
        ("English", "/editor/issue/x?lang=en", False),
        ("Беларуская", "/editor/issue/x?lang=be", True),
        ("Русский", "/editor/issue/x?lang=ru", False),
    ]


def test_the_matrix_is_worded_in_the_editors_language() -> None:
    matrix = Matrix(
        languages=["en", "be", "ru"],
        rows=[
            ("article minsk", {"en": "ok", "be": "missing", "ru": "2 problems"}),
            ("links", {"en": "1 bad", "be": "ok", "ru": "3 no alt"}),
        ],
    )
    view = matrix_view(matrix, templates=Templates(), lang="be")
    assert view.rows == [
        ("Артыкул minsk", [("у парадку", True), ("няма", False), ("праблем: 2", False)]),
        (
            "Спасылкі",
            [("не працуюць: 1", False), ("у парадку", True), ("без alt-тэксту: 3", False)],
        ),
    ]


def test_an_earlier_send_shows_its_progress_in_words() -> None:
    send = EarlierSend(
        send_id="s-1",
        intent="only_new",
        requested_at=datetime(2026, 12, 1, 22, 58, tzinfo=UTC),
        status="running",
        date_from=date(2021, 12, 13),
        date_to=date(2021, 12, 19),
        counts={"sent": 40, "deferred": 2},
    )
    [view] = send_views([send], templates=Templates(), lang="ru")
    assert (view.intent, view.status, view.requested) == (
        "только новым читателям",
        "отправляется",
        "2026-12-01 22:58",
    )
    assert view.deliveries == 42
    assert view.counts == [("отложено", 2), ("отправлено", 40)]
