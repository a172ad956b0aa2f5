"""Golden files of the rendered sample editions: any change to what readers get shows in review.

Regenerate after an intended change with ``NEWSLETTER_REGENERATE_GOLDEN=1 pytest
tests/unit/test_renderer_golden.py`` and read the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.renderer.catalogs import Templates
from services.renderer.issue import IssueFolder, parse_sources
from services.renderer.render import EditionContext, render_edition, render_transactional

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "renderer"
REGENERATE = os.environ.get("NEWSLETTER_REGENERATE_GOLDEN") == "1"
PAGES = "https://pages.example.org"


def compare(name: str, actual: str) -> None:
    path = GOLDEN / name
    if REGENERATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run with NEWSLETTER_REGENERATE_GOLDEN=1"
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"{name} differs from its golden file (regenerate if intended)"


@pytest.mark.parametrize("language", ["en", "be", "ru"])
def test_sample_editions_match_their_golden_files(language: str) -> None:
    editions = parse_sources(IssueFolder.read(ROOT / "deploy" / "sample-issue").sources)
    mail = render_edition(
        Templates(),
        editions[language],
        context=EditionContext(
            segment=language,
            view_url=f"{PAGES}/archive/{language}/golden",
            archive_url=f"{PAGES}/archive/{language}",
        ),
    )
    compare(f"issue-50.{language}.html", mail.html)
    compare(f"issue-50.{language}.txt", f"Subject: {mail.subject}\n\n{mail.text}")


@pytest.mark.parametrize("language", ["en", "be", "ru"])
def test_confirmation_mails_match_their_golden_files(language: str) -> None:
    links = {"confirm_url": "https://news.example.org/confirm?token=golden"}
    mail = render_transactional(Templates(), kind="confirmation", language=language, links=links)
    compare(f"confirmation.{language}.txt", f"Subject: {mail.subject}\n\n{mail.text}")
    compare(f"confirmation.{language}.html", mail.html)
