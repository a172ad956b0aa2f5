"""Readiness matrix and send plans: a segment without its edition needs a declared fallback."""

from __future__ import annotations

import pytest

from services.renderer.errors import IssueNotReady
from services.renderer.issue import IssueEdition, parse_sources
from services.renderer.readiness import plan_send, readiness
from services.renderer.sending import parse_fallbacks, parse_segments


def source(language: str, articles: list[str], *, extra: str = "") -> str:
    body = "".join(f"\n## Article {key} {{#{key}}}\n\nLead of {key}.\n{extra}" for key in articles)
    return (
        f"---\nissue: 3\nlanguage: {language}\ndates: 2021-12-13 .. 2021-12-19\n"
        f"subject: Subject {language}\npreheader: Preheader\n---\n\n# Section\n{body}"
    )


def editions(**articles: list[str]) -> dict[str, IssueEdition]:
    return parse_sources({lang: source(lang, keys) for lang, keys in articles.items()})


def test_the_matrix_shows_articles_by_language_and_the_edition_checks() -> None:
    matrix = readiness(editions(en=["a", "b"], ru=["a", "b"], be=["a"]))
    rows = dict(matrix.rows)
    assert rows["article a"] == {"en": "ok", "be": "ok", "ru": "ok"}
    assert rows["article b"] == {"en": "ok", "be": "missing", "ru": "ok"}
    assert rows["subject"]["be"] == "ok"
    assert "be.md lacks the articles b" in matrix.problems
    assert not matrix.ready
    text = matrix.as_text()
    assert "article b" in text
    assert "missing" in text


def test_link_and_alt_problems_show_in_the_matrix() -> None:
    found = parse_sources(
        {"en": source("en", ["a"], extra="\n[x](/relative) ![](https://example.org/i.png)\n")}
    )
    matrix = readiness(found)
    rows = dict(matrix.rows)
    assert rows["links absolute"]["en"] == "1 bad"
    assert rows["images with alt"]["en"] == "1 no alt"
    assert rows["article a"]["en"] == "2 problems"
    assert rows["links absolute"]["be"] == "missing"


def test_a_complete_issue_plans_each_segment_its_own_edition() -> None:
    plan = plan_send(
        editions(en=["a"], be=["a"], ru=["a"]), segments=["en", "be", "ru"], fallbacks={}
    )
    assert plan.editions == {"en": "en", "be": "be", "ru": "ru"}
    assert plan.fallbacks == {}


def test_a_missing_edition_without_fallback_refuses_and_names_the_articles() -> None:
    with pytest.raises(IssueNotReady) as caught:
        plan_send(editions(en=["a", "b"], ru=["a", "b"]), segments=["en", "be", "ru"], fallbacks={})
    message = str(caught.value)
    assert "segment be: no be.md (missing articles: a, b)" in message
    assert "--fallback be=<language>" in message


def test_an_incomplete_edition_without_fallback_refuses_and_names_what_it_lacks() -> None:
    with pytest.raises(IssueNotReady, match=r"segment be: be.md lacks b \(missing articles: b\)"):
        plan_send(editions(en=["a", "b"], be=["a"]), segments=["be"], fallbacks={})


def test_a_declared_fallback_lets_the_segment_receive_another_edition() -> None:
    plan = plan_send(editions(en=["a"], ru=["a"]), segments=["en", "be"], fallbacks={"be": "ru"})
    assert plan.editions == {"en": "en", "be": "ru"}
    assert plan.fallbacks == {"be": "ru"}


def test_a_fallback_to_a_missing_edition_is_refused() -> None:
    with pytest.raises(IssueNotReady, match="its fallback en is not complete either"):
        plan_send(editions(ru=["a"]), segments=["be"], fallbacks={"be": "en"})


def test_segments_and_fallbacks_are_parsed_strictly() -> None:
    assert parse_segments("en, ru") == ["en", "ru"]
    assert parse_segments(None) == ["en", "be", "ru"]
    assert parse_fallbacks(["be=ru", "en=ru"]) == {"be": "ru", "en": "ru"}
    with pytest.raises(IssueNotReady, match="segments must be among"):
        parse_segments("en,de")
    with pytest.raises(IssueNotReady, match="must be SEGMENT=LANGUAGE"):
        parse_fallbacks(["be:ru"])
