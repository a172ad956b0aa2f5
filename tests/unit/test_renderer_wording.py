"""Problems, preflight findings and send refusals carry a code and values: English for the CLI
and the admin API, the editor's language on the editor page."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from services.renderer.catalogs import load_translations
from services.renderer.errors import IssueFormatError, Problem, Wording
from services.renderer.issue import parse_sources
from services.renderer.issue_sends import EarlierSend, IssueIdentity, Surface, refusal
from services.renderer.preflight import PreflightReport
from services.renderer.readiness import verdict
from shared.db.tables import SendIntent

SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "sample-issue"


def gettext(language: str):  # type: ignore[no-untyped-def]
    return load_translations(language).gettext


def test_a_problem_keeps_its_place_and_english_and_is_worded_per_language() -> None:
    problem = Problem.coded(
        "be.md",
        7,
        "article key %(key)r is used twice (first on line %(first)s)",
        column=12,
        hint="give each article its own key",
        key="potash",
        first=3,
    )
    assert str(problem) == (
        "be.md:7:12: article key 'potash' is used twice (first on line 3) "
        "(give each article its own key)"
    )
    assert problem.worded(gettext("ru")) == (
        "be.md:7:12: ключ статьи 'potash' использован дважды (впервые в строке 3) "
        "(дайте каждой статье свой ключ)"
    )
    assert problem.worded(gettext("be")).startswith("be.md:7:12: ключ артыкула 'potash'")


def test_a_warning_says_so_in_the_pages_language() -> None:
    week = "dates: 2021-12-13 .. 2021-12-19"
    sources = {"ru": _sample("ru").replace(week, "dates: 2021-12-13 .. 2022-03-13")}
    warnings = [p for p in verdict(sources, segments=["ru"]).problems if not p.is_error]
    assert warnings, "a three-month week gives a warning"
    shown = warnings[0].worded(gettext("ru"))
    assert shown.startswith("ru.md:4:8: предупреждение: промежуток 2021-12-13 .. 2022-03-13")


def test_parse_errors_of_every_file_are_worded_together() -> None:
    try:
        parse_sources({"be": "no header", "ru": "no header either"})
    except IssueFormatError as err:
        worded = err.worded(gettext("be"))
    assert worded.splitlines() == [
        "be.md:1:1: файл павінен пачынацца з загалоўка метаданых '---' "
        "(пачніце з '---', потым радкі 'ключ: значэнне', потым '---')",
        "ru.md:1:1: файл павінен пачынацца з загалоўка метаданых '---' "
        "(пачніце з '---', потым радкі 'ключ: значэнне', потым '---')",
    ]


def test_a_preflight_finding_is_worded_with_its_level() -> None:
    report = PreflightReport(language="ru")
    report.error("subject", Wording("the subject is empty"))
    report.warn(
        "size", Wording.of("HTML is %(size)s bytes, close to the %(limit)s clip", size=1, limit=2)
    )
    assert str(report.findings[0]) == "error: subject: the subject is empty"
    assert report.findings[0].worded(gettext("ru")) == "ошибка: subject: тема пустая"
    assert report.findings[1].worded(gettext("be")).startswith("папярэджанне: size: памер HTML")


def test_a_refusal_is_english_for_scripts_and_the_editors_language_on_the_page() -> None:
    issue = IssueIdentity("issue-51", 51, date(2021, 12, 20), date(2021, 12, 26))
    earlier = EarlierSend(
        send_id="s-1",
        intent="first",
        requested_at=datetime(2026, 12, 1, 21, 40, tzinfo=UTC),
        status="done",
        date_from=issue.date_from,
        date_to=issue.date_to,
        counts={"sent": 30},
    )
    cli = refusal(issue, SendIntent.FIRST, [earlier], surface=Surface.CLI)
    editor = refusal(issue, SendIntent.FIRST, [earlier], surface=Surface.EDITOR)
    assert cli is not None
    assert editor is not None
    assert "add --only-new" in str(cli)
    assert cli.worded(gettext("ru")).count("--only-new") == 1, "the CLI's words stay"
    text = editor.worded(gettext("be"))
    assert text.startswith("выпуск 51 (2021-12-20 .. 2021-12-26): рассылак ужо 1; першая — ")
    assert "выберыце «Усім зноў» і ўвядзіце 51" in text
    assert "already" not in text


def _sample(language: str) -> str:
    return (SAMPLE / f"{language}.md").read_text(encoding="utf-8")
