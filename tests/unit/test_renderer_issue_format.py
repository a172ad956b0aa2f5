"""The issue format: the sample parses, and every broken file is named with its line and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.renderer.errors import IssueFormatError
from services.renderer.issue import IssueFolder, link_problem, parse_edition, parse_sources

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "deploy" / "sample-issue"

HEADER = """---
issue: 7
language: en
dates: 2021-12-13 .. 2021-12-19
subject: A subject
preheader: A preheader
---
"""
BODY = """
# Section

## An article {#first}

The lead.

A body paragraph with [a link](https://example.org/a).
"""


def problems_of(text: str, file: str = "en.md") -> list[str]:
    with pytest.raises(IssueFormatError) as caught:
        parse_edition(text, file=file)
    return [str(p) for p in caught.value.problems]


def test_the_sample_issue_parses_in_every_language_with_the_same_articles() -> None:
    editions = parse_sources(IssueFolder.read(SAMPLE).sources)
    assert sorted(editions) == ["be", "en", "ru"]
    for edition in editions.values():
        assert edition.number == 50
        assert [a.key for a in edition.articles] == ["minsk-escalation"]
        assert edition.link_problems() == []
        assert edition.articles[0].images
        assert edition.articles[0].images[0].alt


def test_a_valid_file_gives_sections_articles_lead_and_links_with_lines() -> None:
    edition = parse_edition(HEADER + BODY, file="en.md")
    article = edition.articles[0]
    assert (edition.sections[0].title, article.key, article.title) == (
        "Section",
        "first",
        "An article",
    )
    assert article.line == 11
    assert article.lead is not None
    assert article.lead.content == "The lead."
    assert [(link.url, link.line) for link in article.links] == [("https://example.org/a", 15)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("no header\n" + BODY, "en.md:1:1: the file must start with a '---' metadata header"),
        ("---\nissue: 7\n", "the metadata header is not closed"),
        (
            HEADER.replace("issue: 7", "issue 7"),
            "en.md:2:1: header line 'issue 7' is not 'key: value'",
        ),
        (
            HEADER.replace("issue: 7", "issue: 7\nauthor: me"),
            "en.md:3:1: unknown header key 'author'",
        ),
        (
            HEADER.replace("issue: 7", "issue: 7\nissue: 8"),
            "en.md:3:1: header key 'issue' appears twice",
        ),
        (HEADER.replace("subject: A subject\n", ""), "the header has no 'subject'"),
        (
            HEADER.replace("preheader: A preheader", "preheader:"),
            "en.md:6:1: the header has no 'preheader'",
        ),
        (HEADER.replace("issue: 7", "issue: seven"), "en.md:2:8: issue must be a positive number"),
        (HEADER.replace("language: en", "language: de"), "en.md:3:11: language 'de' is not one of"),
        (
            HEADER.replace("language: en", "language: ru"),
            "en.md:3:11: language 'ru' does not match",
        ),
        (
            HEADER.replace("2021-12-13 .. ", "13.12.2021 .. "),
            "en.md:4:8: '13.12.2021' is not a date written YYYY-MM-DD",
        ),
        (
            HEADER.replace("2021-12-13 .. 2021-12-19", "2021-12-19 .. 2021-12-13"),
            "en.md:4:22: the date range ends (2021-12-13) before it starts",
        ),
        (HEADER.replace("A subject", "x" * 151), "en.md:5:10: subject is 151 characters"),
    ],
)
def test_header_problems_name_file_line_and_problem(text: str, expected: str) -> None:
    found = problems_of(text + BODY if text.startswith("---") and "# Section" not in text else text)
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("\n# Section\n\n## No key\n\nLead.\n", "en.md:11:1: an article heading needs a key"),
        ("\n## Early {#early}\n\nLead.\n", "en.md:9:1: an article comes before any '# Section'"),
        (
            BODY + "\n## Again {#first}\n\nLead.\n",
            "en.md:17:10: article key 'first' is used twice (first on line 11)",
        ),
        (
            "\n# Section\n\nStray text.\n\n## A {#a}\n\nLead.\n",
            "en.md:11:1: text outside an article",
        ),
        (
            BODY + "\n#### Deep\n",
            "subheadings deeper than '###' are not allowed (use '###' for subheadings)",
        ),
        ("\n# Empty\n" + BODY, "en.md:9:1: section 'Empty' has no articles"),
        (
            "\n# Section\n\n## A {#a}\n\n- only a list\n",
            "en.md:11:1: article 'a' has no lead paragraph",
        ),
        ("\nJust text.\n", "the issue has no sections"),
    ],
)
def test_body_problems_name_file_line_and_problem(body: str, expected: str) -> None:
    found = problems_of(HEADER + body)
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(
    ("url", "image", "expected"),
    [
        ("/relative/page", False, "is not absolute"),
        ("ftp://example.org/file", False, "uses the scheme 'ftp'"),
        ("https://", False, "has no host"),
        ("mailto:editor@example.org", True, "uses the scheme 'mailto'"),
        ("https://example.org/a b", False, "contains spaces"),
    ],
)
def test_link_problems_say_why_a_link_is_not_absolute_and_well_formed(
    url: str, image: bool, expected: str
) -> None:
    assert expected in (link_problem(url, image=image) or "")


def test_well_formed_links_have_no_problem() -> None:
    assert link_problem("https://example.org/a?b=c", image=False) is None
    assert link_problem("mailto:editor@example.org", image=False) is None


def test_relative_links_and_images_without_alt_are_reported_with_their_lines() -> None:
    body = BODY + "\nSee [this](/local) and ![](https://example.org/i.png).\n"
    problems = [str(p) for p in parse_edition(HEADER + body, file="en.md").link_problems()]
    assert any("en.md:17:12: link '/local' is not absolute" in p for p in problems), problems
    assert any(
        "en.md:17:28: image https://example.org/i.png has no alt text" in p for p in problems
    )


def test_language_files_must_describe_the_same_issue() -> None:
    ru = HEADER.replace("language: en", "language: ru").replace("issue: 7", "issue: 8")
    with pytest.raises(IssueFormatError) as caught:
        parse_sources({"en": HEADER + BODY, "ru": ru + BODY})
    assert "ru.md:1:1: issue number or dates differ from en.md" in str(caught.value)


def test_unknown_language_in_sources_is_refused() -> None:
    with pytest.raises(IssueFormatError, match="'de' is not one of"):
        parse_sources({"de": HEADER + BODY})


def test_problems_of_several_files_are_reported_together() -> None:
    with pytest.raises(IssueFormatError) as caught:
        parse_sources({"en": "broken", "be": "also broken"})
    files = {p.file for p in caught.value.problems}
    assert files == {"en.md", "be.md"}


def test_a_folder_without_language_files_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IssueFormatError, match="no language file found"):
        IssueFolder.read(tmp_path)
    with pytest.raises(IssueFormatError, match="is not a folder"):
        IssueFolder.read(tmp_path / "missing")
