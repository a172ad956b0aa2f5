"""What an editor reads on the editor page is in the page's language: problems of an uploaded
issue file (``file:line:column: what (what to do)``, the place kept as it is) and the refusal
of a send. The CLI and the admin API keep the English wording, for scripts and logs."""

from __future__ import annotations

import html
import re
from pathlib import Path

import httpx
import pytest

from shared.settings import Settings
from tests.integration.renderer_harness import running_renderer, sample_sources

pytestmark = pytest.mark.integration


def broken_be() -> str:
    """The sample's Belarusian file with a day that is not on the calendar, an unknown header
    key and a section without articles."""
    text = sample_sources("be")["be"]
    text = text.replace("dates: 2021-12-13 .. 2021-12-19", "dates: 2021-02-30 .. 2021-03-05")
    text = text.replace("issue: 50\n", "issue: 50\nauthor: рэдакцыя\n")
    return text + "\n# Пусты раздзел\n"


def problems_of(page: str) -> list[str]:
    return [html.unescape(p) for p in re.findall(r"<li><code>(.*?)</code></li>", page, re.S)]


async def signed_in(client: httpx.AsyncClient) -> str:
    await client.post("/editor/login", data={"token": "test-admin-token"})
    listing = await client.get("/editor")
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', listing.text)
    assert csrf is not None, "no CSRF field on the editor page"
    return csrf.group(1)


EXPECTED = {
    "be": [
        "be.md:3:1: невядомы ключ загалоўка 'author' (вядомыя: issue, language, dates, "
        "subject, preheader)",
        "be.md:5:8: 2021-02-30 — не дата: колькасць дзён у месяцы «люты» 2021 года — 28 "
        "(напішыце сапраўдны каляндарны дзень, напрыклад 2021-12-13 .. 2021-12-19)",
    ],
    "ru": [
        "be.md:3:1: неизвестный ключ заголовка 'author' (известные: issue, language, dates, "
        "subject, preheader)",
        "be.md:5:8: 2021-02-30 — не дата: количество дней в месяце «февраль» 2021 года — 28 "
        "(напишите настоящий календарный день, например 2021-12-13 .. 2021-12-19)",
    ],
    "en": [
        "be.md:3:1: unknown header key 'author' (known: issue, language, dates, subject, "
        "preheader)",
        "be.md:5:8: 2021-02-30 is not a date: February 2021 has 28 days (write a real calendar "
        "day, e.g. 2021-12-13 .. 2021-12-19)",
    ],
}


@pytest.mark.parametrize("lang", ["be", "ru", "en"])
async def test_a_broken_issue_file_shows_its_problems_in_the_editors_language(
    settings: Settings, tmp_path: Path, lang: str
) -> None:
    async with running_renderer(settings, tmp_path) as renderer, renderer.client() as client:
        csrf = await signed_in(client)
        upload = await client.post(
            "/editor/upload",
            params={"lang": lang},
            data={"name": "broken", "csrf": csrf},
            files={"be": ("be.md", broken_be().encode(), "text/markdown")},
        )
        assert upload.status_code == 303, upload.text
        page = await client.get("/editor/issue/broken", params={"lang": lang})
        api = await client.get(
            "/admin/api/issues/broken", headers={"Authorization": "Bearer test-admin-token"}
        )
    assert f'<html lang="{lang}">' in page.text
    shown = problems_of(page.text)
    missing = [line for line in EXPECTED[lang] if line not in shown]
    assert not missing, f"{lang}: {missing} not among the problems shown: {shown}"
    assert any(line.startswith("be.md:") for line in shown)
    if lang != "en":
        english = [line for line in shown if "header key" in line or "is not a date" in line]
        assert not english, f"{lang}: English left on the page: {english}"
    assert "unknown header key 'author'" in api.text, "the admin API keeps the English wording"


READINESS = {
    "be": [
        "be.md:20:1: незакрытая спасылка: няма ')' пасля "
        "'https://www.osce.org/forum-for-security-cooperation'; чытачы ўбачаць сыры тэкст "
        "(закрыйце яе знакам ')' адразу пасля адраса)",
        "en.md:1:1: сегмент en: няма en.md (не стае артыкулаў: minsk-escalation) "
        "(з --fallback en=be выпуск будзе гатовы; або выключыце en з --segments)",
    ],
    "ru": [
        "be.md:20:1: незакрытая ссылка: нет ')' после "
        "'https://www.osce.org/forum-for-security-cooperation'; читатели увидят сырой текст "
        "(закройте её знаком ')' сразу после адреса)",
        "en.md:1:1: сегмент en: нет en.md (не хватает статей: minsk-escalation) "
        "(с --fallback en=be выпуск будет готов; или исключите en из --segments)",
    ],
}


@pytest.mark.parametrize("lang", ["be", "ru"])
async def test_readiness_problems_of_a_parsed_issue_are_in_the_editors_language(
    settings: Settings, tmp_path: Path, lang: str
) -> None:
    text = sample_sources("be")["be"].replace(
        "forum-for-security-cooperation)", "forum-for-security-cooperation"
    )
    async with running_renderer(settings, tmp_path) as renderer, renderer.client() as client:
        csrf = await signed_in(client)
        upload = await client.post(
            "/editor/upload",
            data={"name": "unclosed", "csrf": csrf},
            files={"be": ("be.md", text.encode(), "text/markdown")},
        )
        assert upload.status_code == 303, upload.text
        page = await client.get("/editor/issue/unclosed", params={"lang": lang})
    shown = problems_of(page.text)
    missing = [line for line in READINESS[lang] if line not in shown]
    assert not missing, f"{lang}: {missing} not among the problems shown: {shown}"


async def test_a_refused_send_is_worded_in_the_editors_language(
    settings: Settings, tmp_path: Path
) -> None:
    """The sample issue sent once; a plain second send from the Russian editor page is refused
    in Russian, with the page's own choices; the admin API says it in English."""
    async with running_renderer(settings, tmp_path) as renderer, renderer.client() as client:
        csrf = await signed_in(client)
        form = {"csrf": csrf, "segments": ["en", "be", "ru"], "fallbacks": "", "confirm": "yes"}
        first = await client.post(
            "/editor/issue/sample-issue/send", params={"lang": "ru"}, data=form
        )
        assert first.status_code == 200, first.text
        again = await client.post(
            "/editor/issue/sample-issue/send", params={"lang": "ru"}, data=form
        )
    assert again.status_code == 409
    text = html.unescape(again.text)
    assert "выпуск 50 (2021-12-13 .. 2021-12-19): рассылок уже 1; первая — рассылка " in text
    assert "чтобы отправить только тем, кто его не получил" in text
    assert "выберите «Всем повторно» и введите 50" in text
    assert "already has" not in text, "English left in the refusal"
