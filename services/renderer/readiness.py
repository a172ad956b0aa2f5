"""Is an issue ready to go? The readiness matrix (articles x languages) and the send plan
(which edition each segment receives, refusing a segment with no edition and no fallback).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from services.renderer.errors import IssueNotReady
from services.renderer.issue import LANGUAGES, IssueEdition

OK = "ok"
MISSING = "missing"


@dataclass
class Matrix:
    """Rows are articles (by key) plus the edition-level checks; columns are languages."""

    languages: list[str]
    rows: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.problems

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
            "problems": self.problems,
            "ready": self.ready,
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


def readiness(editions: Mapping[str, IssueEdition]) -> Matrix:
    """The matrix ``issue check`` prints and the editor page shows."""
    matrix = Matrix(languages=list(LANGUAGES))
    for key in article_keys(editions):
        cells = {}
        for lang in LANGUAGES:
            edition = editions.get(lang)
            article = next((a for a in edition.articles if a.key == key), None) if edition else None
            if article is None:
                cells[lang] = MISSING
                continue
            bad = [
                p
                for p in edition.link_problems()  # type: ignore[union-attr]
                if any(link.line == p.line for link in article.links)
            ]
            cells[lang] = OK if not bad else f"{len(bad)} problem" + ("s" if len(bad) > 1 else "")
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
    link_cells: dict[str, str] = {}
    image_cells: dict[str, str] = {}
    for lang in LANGUAGES:
        if lang not in editions:
            link_cells[lang] = image_cells[lang] = MISSING
            continue
        problems = editions[lang].link_problems()
        link_bad = [p for p in problems if "alt text" not in p.message]
        alt_bad = [p for p in problems if "alt text" in p.message]
        link_cells[lang] = OK if not link_bad else f"{len(link_bad)} bad"
        image_cells[lang] = OK if not alt_bad else f"{len(alt_bad)} no alt"
        matrix.problems += [str(p) for p in problems]
    matrix.rows.append(("links absolute", link_cells))
    matrix.rows.append(("images with alt", image_cells))
    for lang, keys in missing_articles(editions).items():
        if lang in editions:
            matrix.problems.append(f"{lang}.md lacks the articles {', '.join(keys)}")
    return matrix


@dataclass(frozen=True)
class SendPlan:
    """segment -> the language of the edition it receives."""

    editions: dict[str, str]

    @property
    def fallbacks(self) -> dict[str, str]:
        return {seg: lang for seg, lang in self.editions.items() if seg != lang}


def plan_send(
    editions: Mapping[str, IssueEdition],
    *,
    segments: Sequence[str],
    fallbacks: Mapping[str, str],
) -> SendPlan:
    """Choose each segment's edition; raise :class:`IssueNotReady` naming what is missing where.

    A segment whose edition is missing, or lacks articles the others have, needs a declared
    fallback to a complete edition (``--fallback be=ru``).
    """
    missing = missing_articles(editions)
    chosen: dict[str, str] = {}
    refusals: list[str] = []
    for segment in segments:
        if segment not in LANGUAGES:
            refusals.append(f"{segment}: not a language of the suite ({', '.join(LANGUAGES)})")
            continue
        if segment in editions and segment not in missing:
            chosen[segment] = segment
            continue
        target = fallbacks.get(segment)
        what = (
            f"no {segment}.md"
            if segment not in editions
            else f"{segment}.md lacks {', '.join(missing[segment])}"
        )
        if target is None:
            lacking = ", ".join(missing.get(segment, [])) or "all articles"
            refusals.append(
                f"segment {segment}: {what} (missing articles: {lacking}); "
                f"declare a fallback such as --fallback {segment}=<language> or drop the segment"
            )
        elif target not in editions or target in missing:
            refusals.append(
                f"segment {segment}: {what}, and its fallback {target} is not complete either"
            )
        else:
            chosen[segment] = target
    if refusals:
        raise IssueNotReady("the send cannot start:\n" + "\n".join(refusals))
    return SendPlan(editions=chosen)
