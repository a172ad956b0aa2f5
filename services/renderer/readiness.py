"""Is an issue ready to go? One verdict for ``issue check``, the editor page, the admin API
and ``issue send``: :func:`verdict` parses the files, collects every problem (with file, line,
column and what to do), plans each segment's edition and says which ``--fallback`` would make a
segment without its edition ready. The readiness matrix (articles x languages) is its table.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from services.renderer.errors import N_, IssueFormatError, IssueNotReady, Problem, Wording
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


def _fallback_hint(segment: str, complete: Sequence[str]) -> Wording:
    if not complete:
        return Wording.of(
            N_("no edition is complete, so no --fallback %(segment)s=… can help yet"),
            segment=segment,
        )
    flags = [f"--fallback {segment}={lang}" for lang in complete]
    options: object = flags[-1]
    for flag in reversed(flags[:-1]):
        options = Wording.of(N_("%(first)s or %(second)s"), first=flag, second=options)
    return Wording.of(
        N_("%(options)s would make it ready; or leave %(segment)s out of --segments"),
        options=options,
        segment=segment,
    )


@dataclass
class KeyTypos:
    """Article keys that look like a typo of a key the other editions use."""

    problems: list[Problem] = field(default_factory=list)
    meant: dict[tuple[str, str], str] = field(default_factory=dict)  # (lang, typo) -> key

    def lacking(self, editions: Mapping[str, IssueEdition]) -> dict[str, list[str]]:
        """language -> the articles it lacks, not counting what a typo explains (a typo is
        reported where it is, once; what it leaves lacking elsewhere is not said again)."""
        typos = {typo for _lang, typo in self.meant}
        covered = {(lang, key) for (lang, _typo), key in self.meant.items()}
        lacking = {
            lang: [k for k in keys if k not in typos and (lang, k) not in covered]
            for lang, keys in missing_articles(editions).items()
        }
        return {lang: keys for lang, keys in lacking.items() if keys}


def key_typos(editions: Mapping[str, IssueEdition]) -> KeyTypos:
    """Keys only some editions have that closely resemble (difflib) a key the others have.

    The odd key is the one fewer editions use (on a tie, the one of the later language in the
    order en, be, ru); the problem is at its heading and suggests the nearest key.
    """
    found = KeyTypos()
    keys = article_keys(editions)
    have = {lang: {a.key for a in ed.articles} for lang, ed in editions.items()}
    for lang, edition in editions.items():
        lacking_here = [k for k in keys if k not in have[lang]]
        for article in edition.articles:
            holders = [o for o in editions if article.key in have[o]]
            if len(holders) == len(editions):
                continue
            match = difflib.get_close_matches(article.key, lacking_here, n=1, cutoff=0.6)
            if not match:
                continue
            users = [o for o in editions if match[0] in have[o]]
            if (len(holders), _first(users)) > (len(users), _first(holders)):
                continue  # the other key is the odd one: it is reported at its own heading
            found.problems.append(
                Problem.coded(
                    edition.file,
                    article.line,
                    N_("unknown article key %(key)r: %(files)s uses %(meant)r")
                    if len(users) == 1
                    else N_("unknown article key %(key)r: %(files)s use %(meant)r"),
                    column=article.key_column,
                    hint=N_("did you mean {#%(meant)s}?"),
                    check="articles",
                    key=article.key,
                    files=", ".join(f"{o}.md" for o in users),
                    meant=match[0],
                )
            )
            found.meant[(lang, article.key)] = match[0]
    return found


def _first(languages: Sequence[str]) -> int:
    return min(LANGUAGES.index(lang) for lang in languages)


def segment_problems(
    editions: Mapping[str, IssueEdition],
    *,
    segments: Sequence[str],
    fallbacks: Mapping[str, str],
    typos: KeyTypos | None = None,
) -> tuple[dict[str, str], list[Problem]]:
    """Each segment's edition, and a problem for each segment that has none.

    A segment whose edition is missing, or lacks articles the others have, needs a declared
    fallback to a complete edition (``--fallback be=ru``); the problem names the fallbacks
    that would do.
    """
    missing = (typos or KeyTypos()).lacking(editions)
    complete = [lang for lang in LANGUAGES if lang in editions and lang not in missing]
    chosen: dict[str, str] = {}
    problems: list[Problem] = []
    for segment in segments:
        if segment not in LANGUAGES:
            problems.append(
                Problem.coded(
                    "--segments",
                    1,
                    N_("%(segment)r is not a language of the suite"),
                    hint=N_("choose among %(languages)s"),
                    check="editions",
                    segment=segment,
                    languages=", ".join(LANGUAGES),
                )
            )
            continue
        if segment in editions and segment not in missing:
            chosen[segment] = segment
            continue
        target = fallbacks.get(segment)
        if target is not None and target in complete:
            chosen[segment] = target
            continue
        file = f"{segment}.md"
        lacking = missing.get(segment, [])
        if segment not in editions:
            what = Wording.of(N_("no %(file)s"), file=file)
        else:
            what = Wording.of(
                N_("%(file)s lacks %(lacking)s"), file=file, lacking=", ".join(lacking)
            )
        problems.append(
            Problem.coded(
                file,
                1,
                N_(
                    "segment %(segment)s: %(what)s, and its fallback %(target)s is not "
                    "complete either"
                )
                if target is not None
                else N_("segment %(segment)s: %(what)s (missing articles: %(articles)s)"),
                hint=_fallback_hint(segment, complete),
                check="editions",
                segment=segment,
                what=what,
                target=target,
                articles=", ".join(lacking) if lacking else Wording(N_("all")),
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
    typos = key_typos(editions)
    chosen, refusals = segment_problems(
        editions, segments=segments, fallbacks=fallbacks, typos=typos
    )
    problems = typos.problems + refusals
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
    typos = key_typos(editions)
    chosen, refusals = segment_problems(
        editions, segments=segments, fallbacks=fallbacks or {}, typos=typos
    )
    problems = sorted(problems + typos.problems, key=_position) + refusals
    plan = SendPlan(editions=chosen) if not typos.problems and not refusals else None
    return Verdict(problems=problems, editions=editions, matrix=readiness(editions), plan=plan)


def _position(problem: Problem) -> tuple[int, str, int, int]:
    order = LANGUAGES.index(problem.file[:-3]) if problem.file[:-3] in LANGUAGES else 9
    return (order, problem.file, problem.line, problem.column)
