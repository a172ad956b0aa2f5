"""Is an issue ready to go? One verdict for ``issue check``, the editor page, the admin API
and ``issue send``: :func:`verdict` parses the files, collects every problem (with file, line,
column and what to do), plans each segment's edition and says which ``--fallback`` would make a
segment without its edition ready. The readiness matrix (articles x languages) is its table.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from services.renderer.errors import IssueFormatError, IssueNotReady, Problem
from services.renderer.issue import LANGUAGES, IssueEdition, parse_sources

OK = "ok"
MISSING = "missing"


@dataclass
class Matrix:
    """Rows are articles (by key) plus the edition-level checks; columns are languages."""

    languages: list[str]
    rows: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def as_text(self) -> str:
        label_width = max([len(label) for label, _ in self.rows] + [10])
        header = " " * label_width + "  " + "  ".join(f"{lang:<8}" for lang in self.languages)
        lines = [header]
        for label, cells in self.rows:
            lines.append(
                f"{label:<{label_width}}  "
                + "  ".join(f"{cells.get(lang, '-'):<8}" for lang in self.languages)
            )
        return "\n".join(line.rstrip() for line in lines)

    def as_dict(self) -> dict[str, object]:
        return {
            "languages": self.languages,
            "rows": [{"row": label, "cells": cells} for label, cells in self.rows],
        }


def article_keys(editions: Mapping[str, IssueEdition]) -> list[str]:
    keys: list[str] = []
    for language in LANGUAGES:
        if language in editions:
            keys += [a.key for a in editions[language].articles if a.key not in keys]
    return keys


def missing_articles(editions: Mapping[str, IssueEdition]) -> dict[str, list[str]]:
    """language -> keys of articles other editions have and it lacks (all, if no file)."""
    keys = article_keys(editions)
    found = {lang: {a.key for a in ed.articles} for lang, ed in editions.items()}
    return {
        lang: [k for k in keys if k not in found.get(lang, set())]
        for lang in LANGUAGES
        if [k for k in keys if k not in found.get(lang, set())]
    }


def _count(problems: Sequence[Problem], noun: str) -> str:
    return OK if not problems else f"{len(problems)} {noun}" + ("s" if len(problems) > 1 else "")


def readiness(editions: Mapping[str, IssueEdition]) -> Matrix:
    """The matrix ``issue check`` prints and the editor page shows."""
    matrix = Matrix(languages=list(LANGUAGES))
    for key in article_keys(editions):
        cells: dict[str, str] = {}
        for lang in LANGUAGES:
            edition = editions.get(lang)
            article = next((a for a in edition.articles if a.key == key), None) if edition else None
            if edition is None or article is None:
                cells[lang] = MISSING
                continue
            bad = [
                p for p in edition.problems if p.is_error and edition.article_at(p.line) is article
            ]
            cells[lang] = _count(bad, "problem")
        matrix.rows.append((f"article {key}", cells))
    for label, attribute in (("subject", "subject"), ("preheader", "preheader")):
        matrix.rows.append(
            (
                label,
                {
                    lang: (OK if getattr(editions[lang], attribute).strip() else MISSING)
                    if lang in editions
                    else MISSING
                    for lang in LANGUAGES
                },
            )
        )
    for label, checks, noun in (
        ("links", {"links"}, "bad"),
        ("images with alt", {"images"}, "no alt"),
        ("markdown", {"markdown"}, "problem"),
    ):
        cells = {}
        for lang in LANGUAGES:
            if lang not in editions:
                cells[lang] = MISSING
                continue
            found = [p for p in editions[lang].problems if p.check in checks and p.is_error]
            cells[lang] = OK if not found else f"{len(found)} {noun}"
        matrix.rows.append((label, cells))
    return matrix


@dataclass(frozen=True)
class SendPlan:
    """segment -> the language of the edition it receives."""

    editions: dict[str, str]

    @property
    def fallbacks(self) -> dict[str, str]:
        return {seg: lang for seg, lang in self.editions.items() if seg != lang}


def _fallback_hint(segment: str, complete: Sequence[str]) -> str:
    if not complete:
        return f"no edition is complete, so no --fallback {segment}=… can help yet"
    options = " or ".join(f"--fallback {segment}={lang}" for lang in complete)
    return f"{options} would make it ready; or leave {segment} out of --segments"


def _key_typos(editions: Mapping[str, IssueEdition]) -> tuple[list[Problem], set[tuple[str, str]]]:
    """Article keys that only some editions have and that look like a key the others use.

    The odd key is the one fewer editions use (on a tie, the one the later language uses, in
    the order en, be, ru). Returns the problems (at its heading, suggesting the nearest key) and the
    (language, key) pairs they explain, so that the segment refusal does not say it again.
    """
    problems: list[Problem] = []
    explained: set[tuple[str, str]] = set()
    keys = article_keys(editions)
    found = {lang: [a.key for a in ed.articles] for lang, ed in editions.items()}
    for lang, edition in editions.items():
        others = [other for other in editions if other != lang]
        lacking_here = [k for k in keys if k not in found[lang]]
        for article in edition.articles:
            if all(article.key in found[o] for o in others):
                continue
            match = difflib.get_close_matches(article.key, lacking_here, n=1, cutoff=0.6)
            if not match:
                continue
            users = [o for o in others if match[0] in found[o]]
            holders = [o for o in editions if article.key in found[o]]
            if (len(holders), _first(users)) > (len(users), _first(holders)):
                continue  # the other key is the odd one: it is reported at its own heading
            problems.append(
                Problem(
                    edition.file,
                    article.line,
                    f"unknown article key {article.key!r}: "
                    + ", ".join(f"{o}.md" for o in users)
                    + f" {'uses' if len(users) == 1 else 'use'} {match[0]!r}",
                    column=article.key_column,
                    hint=f"did you mean {{#{match[0]}}}?",
                    check="articles",
                )
            )
            explained.add((lang, match[0]))
            explained.update((o, article.key) for o in LANGUAGES if o not in holders)
    return problems, explained


def _first(languages: Sequence[str]) -> int:
    return min(LANGUAGES.index(lang) for lang in languages)


def segment_problems(
    editions: Mapping[str, IssueEdition],
    *,
    segments: Sequence[str],
    fallbacks: Mapping[str, str],
    explained: set[tuple[str, str]] = frozenset(),  # type: ignore[assignment]
) -> tuple[dict[str, str], list[Problem]]:
    """Each segment's edition, and a problem for each segment that has none.

    A segment whose edition is missing, or lacks articles the others have, needs a declared
    fallback to a complete edition (``--fallback be=ru``); the problem names the fallbacks
    that would do. Articles lacking only because of a key typo (``explained``) are reported at
    the typo instead.
    """
    missing = missing_articles(editions)
    # A key typo is reported where it is: what it leaves lacking does not count here.
    odd = {key for lang, key in explained if lang not in editions}
    missing = {
        lang: [k for k in keys if (lang, k) not in explained and k not in odd]
        for lang, keys in missing.items()
    }
    missing = {lang: keys for lang, keys in missing.items() if keys}
    complete = [lang for lang in LANGUAGES if lang in editions and lang not in missing]
    chosen: dict[str, str] = {}
    problems: list[Problem] = []
    for segment in segments:
        if segment not in LANGUAGES:
            problems.append(
                Problem(
                    "--segments",
                    1,
                    f"{segment!r} is not a language of the suite",
                    hint=f"choose among {', '.join(LANGUAGES)}",
                    check="editions",
                )
            )
            continue
        if segment in editions and segment not in missing:
            chosen[segment] = segment
            continue
        target = fallbacks.get(segment)
        file = f"{segment}.md"
        lacking = missing.get(segment, [])
        what = f"no {file}" if segment not in editions else f"{file} lacks {', '.join(lacking)}"
        if target is not None and target in complete:
            chosen[segment] = target
            continue
        if target is not None:
            problems.append(
                Problem(
                    file,
                    1,
                    f"segment {segment}: {what}, and its fallback {target} is not complete either",
                    hint=_fallback_hint(segment, complete),
                    check="editions",
                )
            )
            continue
        problems.append(
            Problem(
                file,
                1,
                f"segment {segment}: {what} (missing articles: {', '.join(lacking) or 'all'})",
                hint=_fallback_hint(segment, complete),
                check="editions",
            )
        )
    return chosen, problems


def plan_send(
    editions: Mapping[str, IssueEdition],
    *,
    segments: Sequence[str],
    fallbacks: Mapping[str, str],
) -> SendPlan:
    """Choose each segment's edition; raise :class:`IssueNotReady` naming what is missing where."""
    typos, explained = _key_typos(editions)
    chosen, problems = segment_problems(
        editions, segments=segments, fallbacks=fallbacks, explained=explained
    )
    problems = typos + problems
    if problems:
        raise IssueNotReady.of(problems)
    return SendPlan(editions=chosen)


@dataclass
class Verdict:
    """Everything that decides whether an issue may go out to these segments."""

    problems: list[Problem]
    editions: dict[str, IssueEdition] = field(default_factory=dict)
    matrix: Matrix | None = None
    plan: SendPlan | None = None

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.is_error]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if not p.is_error]

    @property
    def ready(self) -> bool:
        return self.plan is not None and not self.errors

    def refuse(self) -> None:
        """Raise :class:`IssueNotReady` with every error, unless the issue is ready."""
        if not self.ready:
            raise IssueNotReady.of(self.errors)

    def as_dict(self) -> dict[str, object]:
        return {
            "ready": self.ready,
            "problems": [str(p) for p in self.errors],
            "warnings": [str(p) for p in self.warnings],
            "plan": self.plan.editions if self.plan else None,
            **(self.matrix.as_dict() if self.matrix else {}),
        }


def verdict(
    sources: Mapping[str, str],
    *,
    segments: Sequence[str] = LANGUAGES,
    fallbacks: Mapping[str, str] | None = None,
) -> Verdict:
    """The readiness verdict of an issue's sources for a send to ``segments``.

    Never raises for a broken issue: every problem, structural or not, is in the verdict.
    """
    try:
        editions = parse_sources(dict(sources))
    except IssueFormatError as err:
        return Verdict(problems=sorted(err.problems, key=_position))
    problems = [p for edition in editions.values() for p in edition.problems]
    typos, explained = _key_typos(editions)
    chosen, refusals = segment_problems(
        editions, segments=segments, fallbacks=fallbacks or {}, explained=explained
    )
    problems = sorted(problems + typos, key=_position) + refusals
    plan = SendPlan(editions=chosen) if not typos and not refusals else None
    return Verdict(problems=problems, editions=editions, matrix=readiness(editions), plan=plan)


def _position(problem: Problem) -> tuple[int, str, int, int]:
    order = LANGUAGES.index(problem.file[:-3]) if problem.file[:-3] in LANGUAGES else 9
    return (order, problem.file, problem.line, problem.column)
