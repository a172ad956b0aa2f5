"""Readiness matrix and send plans: a segment without its edition needs a declared fallback."""

from __future__ import annotations

import pytest

from services.renderer.errors import IssueNotReady
from services.renderer.issue import IssueEdition, parse_sources
from services.renderer.readiness import plan_send, readiness, verdict
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
    found = verdict(
        {lang: source(lang, keys) for lang, keys in [("en", ["a", "b"]), ("be", ["a"])]}
    )
    assert not found.ready
    assert [str(p) for p in found.errors] == [
        "be.md:1:1: segment be: be.md lacks b (missing articles: b) "
        "(--fallback be=en would make it ready; or leave be out of --segments)",
        "ru.md:1:1: segment ru: no ru.md (missing articles: a, b) "
        "(--fallback ru=en would make it ready; or leave ru out of --segments)",
    ]
    text = matrix.as_text()
    assert "article b" in text
    assert "missing" in text


def test_link_and_alt_problems_show_in_the_matrix() -> None:
    found = parse_sources(
        {"en": source("en", ["a"], extra="\n[x](/relative) ![](https://example.org/i.png)\n")}
    )
    matrix = readiness(found)
    rows = dict(matrix.rows)
    assert rows["links"]["en"] == "1 bad"
    assert rows["images with alt"]["en"] == "1 no alt"
    assert rows["article a"]["en"] == "2 problems"
    assert rows["links"]["be"] == "missing"


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
    assert "be.md:1:1: segment be: no be.md (missing articles: a, b)" in message
    assert "--fallback be=en or --fallback be=ru would make it ready" in message


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


def sources_of(**articles: list[str]) -> dict[str, str]:
    return {lang: source(lang, keys) for lang, keys in articles.items()}


def test_an_issue_without_one_edition_is_not_ready_until_a_fallback_is_given() -> None:
    sources = sources_of(en=["a"], ru=["a"])
    refused = verdict(sources)
    assert not refused.ready
    assert refused.plan is None
    (problem,) = refused.errors
    assert (problem.file, problem.line, problem.column) == ("be.md", 1, 1)
    assert "--fallback be=en or --fallback be=ru would make it ready" in str(problem)
    ready = verdict(sources, fallbacks={"be": "ru"})
    assert ready.ready, ready.problems
    assert ready.plan is not None
    assert ready.plan.editions == {"en": "en", "be": "ru", "ru": "ru"}
    assert verdict(sources, segments=["en", "ru"]).ready


def test_a_typo_in_an_article_key_is_reported_at_the_heading_with_the_nearest_key() -> None:
    sources = sources_of(en=["minsk", "potash-transit"], ru=["minsk", "potash-transit"])
    sources["be"] = source("be", ["minsk", "potash-transt"])
    found = verdict(sources)
    assert not found.ready
    # the heading '## Article potash-transt {#potash-transt}' is line 15 of be.md, the key at 26
    assert [str(p) for p in found.errors] == [
        "be.md:15:26: unknown article key 'potash-transt': en.md, ru.md use 'potash-transit' "
        "(did you mean {#potash-transit}?)"
    ]
    with pytest.raises(IssueNotReady, match="did you mean"):
        plan_send(found.editions, segments=["en", "be", "ru"], fallbacks={})


def test_a_key_no_other_edition_resembles_gets_no_suggestion() -> None:
    found = verdict(sources_of(en=["a", "sanctions"], be=["a"], ru=["a", "sanctions"]))
    assert [p.message for p in found.errors] == [
        "segment be: be.md lacks sanctions (missing articles: sanctions)"
    ]
    assert "did you mean" not in str(found.errors[0])


def test_a_broken_issue_is_a_verdict_with_its_problems_not_an_exception() -> None:
    found = verdict({"en": "no header", "ru": source("ru", ["a"]).replace("issue: 3", "issue: x")})
    assert not found.ready
    assert found.matrix is None
    assert [str(p) for p in found.errors] == [
        "en.md:1:1: the file must start with a '---' metadata header "
        "(begin with '---', the 'key: value' lines, then '---')",
        "ru.md:2:8: issue must be a positive number, not 'x' (write e.g. 'issue: 51')",
    ]


def test_warnings_do_not_block_a_send() -> None:
    sources = {
        lang: text.replace("2021-12-13 .. 2021-12-19", "2021-01-01 .. 2021-03-31")
        for lang, text in sources_of(en=["a"], be=["a"], ru=["a"]).items()
    }
    found = verdict(sources)
    assert found.ready, found.problems
    assert next(str(p) for p in found.warnings) == (
        "en.md:4:8: warning: the range 2021-01-01 .. 2021-03-31 is 90 days long, not one week "
        "(a weekly issue covers seven days, e.g. 2021-12-13 .. 2021-12-19)"
    )
