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

Every problem is reported with the file, line and column, what is wrong and what to do
(:class:`Problem`). Structural problems (header, headings, keys) raise :class:`IssueFormatError`;
Markdown problems (:mod:`services.renderer.markdown_checks`: broken links and images, raw HTML)
and warnings are kept on the edition (``IssueEdition.problems``) so that ``issue check`` can show
them in its readiness matrix; the readiness verdict refuses a send on any error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token

from services.renderer.errors import N_, IssueFormatError, Problem
from services.renderer.issue_header import LANGUAGES, header_values, parse_header
from services.renderer.link_checks import link_problem
from services.renderer.markdown_checks import FoundLink, body_problems

_KEY_SUFFIX = re.compile(r"\s*\{#(?P<key>[a-z0-9][a-z0-9-]{0,62})\}\s*$")


__all__ = [
    "LANGUAGES",
    "Article",
    "FoundLink",
    "IssueEdition",
    "IssueFolder",
    "Section",
    "link_problem",
    "markdown",
    "parse_edition",
    "parse_sources",
]


def markdown() -> MarkdownIt:
    """The Markdown dialect of issues: CommonMark, raw HTML off (it shows as text)."""
    return MarkdownIt("commonmark", {"html": False, "typographer": False})


@dataclass
class Article:
    key: str
    title: str
    line: int
    key_column: int = 1  # where ``{#key}`` starts on the heading's line
    lead: Token | None = None  # the ``inline`` token of the first paragraph
    body: list[Token] = field(default_factory=list)
    links: list[FoundLink] = field(default_factory=list)

    @property
    def images(self) -> list[FoundLink]:
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
    problems: list[Problem] = field(default_factory=list)  # Markdown problems and warnings

    @property
    def articles(self) -> list[Article]:
        return [a for s in self.sections for a in s.articles]

    @property
    def issue_key(self) -> str:
        return f"issue-{self.number}"

    def link_problems(self) -> list[Problem]:
        """The errors about links and images (a subset of :attr:`problems`)."""
        return [p for p in self.problems if p.check in {"links", "images"} and p.is_error]

    def article_at(self, line: int) -> Article | None:
        """The article whose heading is the last one at or before ``line``."""
        found = None
        for article in self.articles:
            if article.line <= line:
                found = article
        return found


def parse_edition(text: str, *, file: str) -> IssueEdition:
    """Parse one language file; raise :class:`IssueFormatError` naming every structural error.

    Markdown problems and warnings do not raise: they are kept in ``IssueEdition.problems``.
    """
    problems: list[Problem] = []
    lines = text.splitlines()
    header, body_start = parse_header(lines, file=file, problems=problems)
    if body_start is None:
        raise IssueFormatError(problems)
    values = header_values(header, file=file, problems=problems)
    body = "\n".join(lines[body_start:])
    tokens = markdown().parse(body)
    sections = _parse_body(tokens, lines=lines, file=file, offset=body_start, problems=problems)
    if any(p.is_error for p in problems):
        raise IssueFormatError(problems)
    links, content = body_problems(body, tokens, lines=lines, offset=body_start, file=file)
    edition = IssueEdition(
        file=file,
        sections=sections,
        problems=sorted(problems + content, key=lambda p: (p.line, p.column)),
        **values,  # type: ignore[arg-type]
    )
    for link in links:
        article = edition.article_at(link.line)
        if article is not None:
            article.links.append(link)
    return edition


def _key_column(lines: list[str], line: int, needle: str) -> int:
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    return text.find(needle) + 1 if needle in text else 1


def _parse_body(  # noqa: PLR0912 - one walk over the tokens, one branch per kind
    tokens: list[Token], *, lines: list[str], file: str, offset: int, problems: list[Problem]
) -> list[Section]:
    sections: list[Section] = []
    article: Article | None = None
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
                    column = _key_column(lines, line, "{#")
                    problems.append(
                        Problem.coded(
                            file,
                            line,
                            N_(
                                "an article heading needs a key that matches its translations "
                                "(lower-case letters, digits and '-')"
                            )
                            if column > 1
                            else N_("an article heading needs a key that matches its translations"),
                            column=column,
                            hint=N_(
                                "end the heading with a key, e.g. '## Title {#minsk-escalation}'"
                            ),
                            check="articles",
                        )
                    )
                    key = f"line-{line}"
                else:
                    key, title = match["key"], title[: match.start()].strip()
                if not sections:
                    problems.append(
                        Problem.coded(
                            file,
                            line,
                            N_("an article comes before any '# Section' heading"),
                            hint=N_("put a '# Section' line above it"),
                        )
                    )
                    sections.append(Section(title="", line=line))
                earlier = [a for s in sections for a in s.articles if a.key == key]
                if earlier:
                    problems.append(
                        Problem.coded(
                            file,
                            line,
                            N_("article key %(key)r is used twice (first on line %(first)s)"),
                            column=_key_column(lines, line, "{#"),
                            hint=N_("give each article its own key"),
                            check="articles",
                            key=key,
                            first=earlier[0].line,
                        )
                    )
                article = Article(
                    key=key, title=title, line=line, key_column=_key_column(lines, line, "{#")
                )
                sections[-1].articles.append(article)
            index += 3
            continue
        if article is None:
            if (token.level == 0 and token.type.endswith("_open")) or token.type == "hr":
                problems.append(
                    Problem.coded(
                        file,
                        line,
                        N_("text outside an article: start one with '## Title' after a section")
                        if sections
                        else N_(
                            "text outside an article: start one with '## Title' after a "
                            "'# Section' heading"
                        ),
                        hint=N_("or remove the text"),
                    )
                )
            index += 1
            continue
        if token.type == "heading_open" and token.tag in {"h4", "h5", "h6"}:
            problems.append(
                Problem.coded(
                    file,
                    line,
                    N_("subheadings deeper than '###' are not allowed"),
                    hint=N_("use '###' for subheadings"),
                )
            )
        if article.lead is None and not article.body and token.type == "paragraph_open":
            article.lead = tokens[index + 1]
            index += 3
            continue
        article.body.append(token)
        index += 1
    for section in sections:
        if not section.articles:
            problems.append(
                Problem.coded(
                    file,
                    section.line,
                    N_("section %(title)r has no articles"),
                    hint=N_("add an article ('## Title {#key}') or remove the section"),
                    title=section.title,
                )
            )
        for art in section.articles:
            if art.lead is None:
                problems.append(
                    Problem.coded(
                        file,
                        art.line,
                        N_("article %(key)r has no lead paragraph"),
                        hint=N_("start the article with a paragraph of text"),
                        key=art.key,
                    )
                )
    if not sections:
        problems.append(
            Problem.coded(
                file,
                offset + 1,
                N_("the issue has no sections"),
                hint=N_("start the body with a '# Section' line"),
            )
        )
    return sections


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
            problems.append(
                Problem.coded(
                    file,
                    0,
                    N_("%(language)r is not one of %(languages)s"),
                    language=language,
                    languages=LANGUAGES,
                )
            )
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
                    Problem.coded(
                        edition.file,
                        1,
                        N_(
                            "issue number or dates differ from %(first)s: every language file "
                            "describes the same issue"
                        ),
                        first=first.file,
                    )
                )
    if problems:
        raise IssueFormatError(problems)
    return editions
