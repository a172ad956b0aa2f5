"""The weekly issue format: a folder with one Markdown file per language.

Each file (``en.md``, ``be.md``, ``ru.md``) starts with a metadata header between two ``---``
lines, then the body in Markdown::

    ---
    issue: 51
    language: ru
    dates: 2021-12-13 .. 2021-12-19
    subject: Минск пытается сойти с российского поезда эскалации
    preheader: Еженедельный обзор: безопасность, политика, экономика
    ---

    # Безопасность                                   <- a section (level-1 heading)

    ## Минск пытается сойти с поезда эскалации {#minsk-escalation}   <- an article
                                                     (level-2 heading; the key in braces
                                                      matches translations across files)
    Ситуация улучшилась.                             <- the lead: the article's first paragraph

    Body: paragraphs, lists, [links](https://...), > quotes, ![alt text](https://...), ### subheads.

Every problem is reported with the file, the line and what is wrong (:class:`Problem`). Structural
problems raise :class:`IssueFormatError`; link and image problems are kept on the article so that
``issue check`` can show them in its readiness matrix (a send refuses to start on either).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token

from services.renderer.errors import IssueFormatError, Problem
from services.renderer.issue_header import LANGUAGES, header_values, parse_header
from services.renderer.link_checks import link_problem

_KEY_SUFFIX = re.compile(r"\s*\{#(?P<key>[a-z0-9][a-z0-9-]{0,62})\}\s*$")


__all__ = [
    "LANGUAGES",
    "Article",
    "IssueEdition",
    "IssueFolder",
    "LinkRef",
    "Section",
    "link_problem",
    "markdown",
    "parse_edition",
    "parse_sources",
]


def markdown() -> MarkdownIt:
    """The Markdown dialect of issues: CommonMark, raw HTML off (it shows as text)."""
    return MarkdownIt("commonmark", {"html": False, "typographer": False})


@dataclass(frozen=True)
class LinkRef:
    url: str
    line: int
    image: bool = False
    alt: str = ""


@dataclass
class Article:
    key: str
    title: str
    line: int
    lead: Token | None = None  # the ``inline`` token of the first paragraph
    body: list[Token] = field(default_factory=list)
    links: list[LinkRef] = field(default_factory=list)

    @property
    def images(self) -> list[LinkRef]:
        return [link for link in self.links if link.image]


@dataclass
class Section:
    title: str
    line: int
    articles: list[Article] = field(default_factory=list)


@dataclass
class IssueEdition:
    """One language file of an issue, parsed."""

    file: str
    language: str
    number: int
    date_from: date
    date_to: date
    subject: str
    preheader: str
    sections: list[Section]

    @property
    def articles(self) -> list[Article]:
        return [a for s in self.sections for a in s.articles]

    @property
    def issue_key(self) -> str:
        return f"issue-{self.number}"

    def link_problems(self) -> list[Problem]:
        """Links that are not absolute http(s)/mailto URLs and images without alt text."""
        problems: list[Problem] = []
        for article in self.articles:
            for link in article.links:
                reason = link_problem(link.url, image=link.image)
                if reason:
                    problems.append(Problem(self.file, link.line, reason))
                if link.image and not link.alt.strip():
                    problems.append(
                        Problem(self.file, link.line, f"image {link.url} has no alt text")
                    )
        return problems


def parse_edition(text: str, *, file: str) -> IssueEdition:
    """Parse one language file; raise :class:`IssueFormatError` naming every problem."""
    problems: list[Problem] = []
    lines = text.splitlines()
    header, body_start = parse_header(lines, file=file, problems=problems)
    if body_start is None:
        raise IssueFormatError(problems)
    values = header_values(header, file=file, problems=problems)
    sections = _parse_body(
        "\n".join(lines[body_start:]), file=file, offset=body_start, problems=problems
    )
    if problems:
        raise IssueFormatError(problems)
    return IssueEdition(file=file, sections=sections, **values)  # type: ignore[arg-type]


def _parse_body(  # noqa: PLR0912, PLR0915 - one walk over the tokens, one branch per kind
    body: str, *, file: str, offset: int, problems: list[Problem]
) -> list[Section]:
    sections: list[Section] = []
    article: Article | None = None
    tokens = markdown().parse(body)
    index = 0
    while index < len(tokens):
        token = tokens[index]
        line = offset + (token.map[0] if token.map else 0) + 1
        if token.type == "heading_open" and token.tag in {"h1", "h2"}:
            title = tokens[index + 1].content.strip()
            if token.tag == "h1":
                sections.append(Section(title=title, line=line))
                article = None
            else:
                match = _KEY_SUFFIX.search(title)
                if match is None:
                    problems.append(
                        Problem(
                            file,
                            line,
                            "an article heading needs a key that matches its translations, "
                            "e.g. '## Title {#minsk-escalation}'",
                        )
                    )
                    key = f"line-{line}"
                else:
                    key, title = match["key"], title[: match.start()].strip()
                if not sections:
                    problems.append(
                        Problem(file, line, "an article comes before any '# Section' heading")
                    )
                    sections.append(Section(title="", line=line))
                seen = {a.key for s in sections for a in s.articles}
                if key in seen:
                    problems.append(Problem(file, line, f"article key {key!r} is used twice"))
                article = Article(key=key, title=title, line=line)
                sections[-1].articles.append(article)
            index += 3
            continue
        if article is None:
            if (token.level == 0 and token.type.endswith("_open")) or token.type == "hr":
                where = "section" if sections else "'# Section' heading"
                problems.append(
                    Problem(
                        file,
                        line,
                        f"text outside an article: start one with '## Title' after a {where}",
                    )
                )
            index += 1
            continue
        if token.type == "heading_open" and token.tag in {"h4", "h5", "h6"}:
            problems.append(
                Problem(file, line, "use '###' for subheadings; deeper levels are not allowed")
            )
        if article.lead is None and not article.body and token.type == "paragraph_open":
            article.lead = tokens[index + 1]
            _collect_links(article, tokens[index + 1], line=line)
            index += 3
            continue
        if token.type == "inline":
            _collect_links(article, token, line=line)
        article.body.append(token)
        index += 1
    for section in sections:
        if not section.articles:
            problems.append(
                Problem(file, section.line, f"section {section.title!r} has no articles")
            )
        for art in section.articles:
            if art.lead is None:
                problems.append(
                    Problem(file, art.line, f"article {art.key!r} has no lead paragraph")
                )
    if not sections:
        problems.append(Problem(file, offset + 1, "the issue has no sections ('# Section')"))
    return sections


def _collect_links(article: Article, inline: Token, *, line: int) -> None:
    block_line = line
    for child in inline.children or []:
        if child.type == "link_open":
            article.links.append(LinkRef(url=str(child.attrs.get("href", "")), line=block_line))
        elif child.type == "image":
            alt = "".join(c.content for c in child.children or [])
            article.links.append(
                LinkRef(url=str(child.attrs.get("src", "")), line=block_line, image=True, alt=alt)
            )
        elif child.type in {"softbreak", "hardbreak"}:
            block_line += 1


@dataclass
class IssueFolder:
    """The files of one issue folder: language -> source text, plus the editions parsed."""

    path: Path
    sources: dict[str, str]

    @classmethod
    def read(cls, path: Path) -> IssueFolder:
        if not path.is_dir():
            raise IssueFormatError([Problem(str(path), 0, "is not a folder")])
        sources = {
            lang: (path / f"{lang}.md").read_text(encoding="utf-8")
            for lang in LANGUAGES
            if (path / f"{lang}.md").is_file()
        }
        if not sources:
            raise IssueFormatError(
                [
                    Problem(
                        str(path),
                        0,
                        f"no language file found (expected {_expected_files()})",
                    )
                ]
            )
        return cls(path=path, sources=sources)


def _expected_files() -> str:
    return ", ".join(f"{lang}.md" for lang in LANGUAGES)


def parse_sources(sources: dict[str, str]) -> dict[str, IssueEdition]:
    """Parse every language file; raise one :class:`IssueFormatError` with all problems."""
    editions: dict[str, IssueEdition] = {}
    problems: list[Problem] = []
    for language, text in sources.items():
        file = f"{language}.md"
        if language not in LANGUAGES:
            problems.append(Problem(file, 0, f"{language!r} is not one of {LANGUAGES}"))
            continue
        try:
            editions[language] = parse_edition(text, file=file)
        except IssueFormatError as err:
            problems.extend(err.problems)
    if editions and not problems:
        first = next(iter(editions.values()))
        for edition in editions.values():
            if (edition.number, edition.date_from, edition.date_to) != (
                first.number,
                first.date_from,
                first.date_to,
            ):
                problems.append(
                    Problem(
                        edition.file,
                        1,
                        f"issue number or dates differ from {first.file}: every language file "
                        "describes the same issue",
                    )
                )
    if problems:
        raise IssueFormatError(problems)
    return editions
