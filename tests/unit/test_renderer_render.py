"""Rendering: one layout for every mail, strings from the catalogs, markers kept, CSS inlined."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.renderer.catalogs import Publication, Templates
from services.renderer.errors import RenderFailed
from services.renderer.issue import IssueFolder, parse_edition, parse_sources
from services.renderer.lines import longest_line
from services.renderer.render import EditionContext, render_edition, render_transactional
from shared.messaging import placeholders

ROOT = Path(__file__).resolve().parents[2]
LINKS = {
    "confirm_url": "https://news.example.org/confirm?token=c1",
    "unsubscribe_url": "https://news.example.org/unsubscribe?token=u1",
    "preferences_url": "https://news.example.org/preferences?token=p1",
    "one_click_url": "https://news.example.org/unsubscribe/one-click?token=u1",
}


@pytest.fixture(scope="module")
def templates() -> Templates:
    return Templates()


@pytest.fixture(scope="module")
def editions() -> dict[str, object]:
    return dict(parse_sources(IssueFolder.read(ROOT / "deploy" / "sample-issue").sources))


@pytest.mark.parametrize(
    ("language", "date_range", "unsubscribe"),
    [
        ("en", "December 13–19, 2021", "Unsubscribe"),
        ("be", "13–19 снежня 2021", "Адпісацца"),
        ("ru", "13–19 декабря 2021", "Отписаться"),
    ],
)
def test_each_edition_is_in_its_language_with_markers_left_for_the_send(
    templates: Templates,
    editions: dict[str, object],
    language: str,
    date_range: str,
    unsubscribe: str,
) -> None:
    mail = render_edition(
        templates,
        editions[language],  # type: ignore[arg-type]
        context=EditionContext(segment=language, view_url="https://pages.example.org/v"),
    )
    html = " ".join(mail.html.split())  # lines are wrapped at spaces
    assert f'<html lang="{language}"' in html
    assert date_range in html
    assert date_range in mail.text
    assert unsubscribe in html
    assert unsubscribe in mail.text
    for marker in (
        placeholders.UNSUBSCRIBE_URL,
        placeholders.PREFERENCES_URL,
        placeholders.RECIPIENT,
    ):
        assert marker in mail.html
    # The plain part has one link that both unsubscribes and changes languages (MIXED_ES).
    assert placeholders.PREFERENCES_URL in mail.text
    assert placeholders.RECIPIENT in mail.text
    assert placeholders.UNSUBSCRIBE_URL not in mail.text
    assert placeholders.VIEW_ONLINE_URL not in mail.html
    assert "https://pages.example.org/v" in mail.html
    assert "https://pages.example.org/v" in mail.text
    assert 'class="preheader" style="display:none' in html
    assert mail.preheader in html
    assert longest_line(mail.html) < 998
    assert longest_line(mail.text) < 998


def test_css_is_inlined_and_media_queries_for_phones_and_dark_mode_are_kept(
    templates: Templates, editions: dict[str, object]
) -> None:
    mail = render_edition(templates, editions["ru"], context=EditionContext(segment="ru"))  # type: ignore[arg-type]
    html = " ".join(mail.html.split())
    assert 'class="container"' in html
    assert "width:600px" in html.replace(": ", ":")
    assert "@media only screen and (max-width: 620px)" in html
    assert "@media (prefers-color-scheme: dark)" in html
    assert "!important" in html, "media rules must beat inline styles"
    assert '<meta name="color-scheme" content="light dark">' in html
    assert 'role="presentation"' in html


def test_a_fallback_edition_carries_a_note_in_the_segment_language(
    templates: Templates, editions: dict[str, object]
) -> None:
    mail = render_edition(templates, editions["ru"], context=EditionContext(segment="be"))  # type: ignore[arg-type]
    assert (mail.language, mail.content_language) == ("be", "ru")
    assert "Гэты выпуск яшчэ не перакладзены на вашу мову" in " ".join(mail.html.split())
    assert "Гэты выпуск яшчэ не перакладзены на вашу мову" in " ".join(mail.text.split())


def test_the_subject_is_the_issue_subject_as_written(
    templates: Templates, editions: dict[str, object]
) -> None:
    mail = render_edition(
        templates,
        editions["en"],
        context=EditionContext(segment="en"),  # type: ignore[arg-type]
    )
    assert mail.subject == "Minsk tries to get off the Russian escalation train"


def test_issue_text_is_escaped_in_html(templates: Templates) -> None:
    source = """---
issue: 1
language: en
dates: 2021-12-13 .. 2021-12-19
subject: <b>bold</b> & co
preheader: pre
---

# <script>alert(1)</script>

## Title <i>x</i> {#a}

Lead with <img src=x onerror=alert(1)>.
"""
    mail = render_edition(
        templates, parse_edition(source, file="en.md"), context=EditionContext(segment="en")
    )
    html = " ".join(mail.html.split())
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "<img src=x" not in html
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in html


@pytest.mark.parametrize(
    ("kind", "language", "subject"),
    [
        ("confirmation", "en", "Confirm your subscription to the Weekly Digest"),
        ("confirmation", "be", "Пацвердзіце падпіску на Штотыднёвы дайджэст"),
        ("confirmation", "ru", "Подтвердите подписку на Еженедельный дайджест"),
        ("welcome", "be", "Вітаем у Штотыднёвым дайджэсце"),
        ("goodbye", "ru", "Вы отписались от Еженедельного дайджеста"),
    ],
)
def test_transactional_mails_share_the_layout_and_are_translated(
    templates: Templates, kind: str, language: str, subject: str
) -> None:
    mail = render_transactional(templates, kind=kind, language=language, links=LINKS)
    assert mail.subject == subject
    assert f'<html lang="{language}"' in mail.html
    assert 'class="container"' in mail.html


OTHER = Publication(name="Belarus Weekly", logo_url="https://cdn.example.org/logo.png")


@pytest.mark.parametrize(
    ("kind", "language", "subject", "sentence"),
    [
        (
            "confirmation",
            "en",
            "Confirm your subscription to Belarus Weekly",
            "Thank you for signing up for Belarus Weekly.",
        ),
        (
            "welcome",
            "be",
            "Вас вітае «Belarus Weekly»",
            "Вас вітае «Belarus Weekly»",
        ),
        (
            "goodbye",
            "ru",
            "Вы отписались от рассылки «Belarus Weekly»",
            "Мы больше не будем присылать вам рассылку «Belarus Weekly».",
        ),
    ],
)
def test_transactional_mails_take_the_publication_name_and_logo_from_the_settings(
    kind: str, language: str, subject: str, sentence: str
) -> None:
    mail = render_transactional(
        Templates(publication=OTHER), kind=kind, language=language, links=LINKS
    )
    assert mail.subject == subject
    text = " ".join(mail.text.split())
    assert mail.text.splitlines()[0] == "Belarus Weekly", "the plain part opens with the name"
    assert sentence in text or sentence in " ".join(mail.html.split())
    assert ">Belarus Weekly</span>" in mail.html, "the masthead names the publication"
    assert 'src="https://cdn.example.org/logo.png"' in mail.html
    for sample in ("Weekly Digest", "Штотыднёв", "Еженедельн", "дайджэст", "дайджест"):
        assert sample not in mail.html + mail.text + mail.subject, f"{sample!r} left in {kind}"


def test_an_issue_mail_names_the_publication_of_the_settings(
    editions: dict[str, object],
) -> None:
    mail = render_edition(
        Templates(publication=OTHER),
        editions["ru"],  # type: ignore[arg-type]
        context=EditionContext(segment="ru"),
    )
    text = " ".join(mail.text.split())
    assert "подписан на рассылку «Belarus Weekly»" in text
    assert ">Belarus Weekly</span>" in mail.html
    assert "Еженедельн" not in mail.html + mail.text


def test_the_confirmation_text_shows_the_link_on_its_own_line(templates: Templates) -> None:
    mail = render_transactional(templates, kind="confirmation", language="ru", links=LINKS)
    assert LINKS["confirm_url"] in mail.text.splitlines()
    assert f'href="{LINKS["confirm_url"]}"' in mail.html


def test_an_unknown_kind_or_a_template_error_is_a_render_failure(tmp_path: Path) -> None:
    with pytest.raises(RenderFailed, match="unknown transactional kind"):
        render_transactional(Templates(), kind="newsletter", language="en", links=LINKS)
    (tmp_path / "confirmation.html").write_text("{{ not_defined }}")
    (tmp_path / "confirmation.txt").write_text("x")
    with pytest.raises(RenderFailed, match="not_defined"):
        render_transactional(Templates(tmp_path), kind="confirmation", language="en", links=LINKS)
