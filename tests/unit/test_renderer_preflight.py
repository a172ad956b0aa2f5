"""Preflight of each edition: every check can fail, and the sample issue passes them all."""

from __future__ import annotations

from email.headerregistry import Address
from pathlib import Path

import pytest

from services.renderer.catalogs import Templates
from services.renderer.issue import IssueFolder, parse_sources
from services.renderer.preflight import (
    CLIP_LIMIT,
    PreflightReport,
    SampleRecipient,
    check_message,
    check_spam,
    check_static,
    preflight,
    sample_message,
)
from services.renderer.render import EditionContext, RenderedMail, render_edition
from shared.messaging import placeholders

ROOT = Path(__file__).resolve().parents[2]
SENDER = Address("Weekly Digest", "digest", "example.org")
SAMPLE = SampleRecipient.for_settings(
    public_url="http://127.0.0.1:8000", secret_key="k" * 40, domain="example.org"
)


def mail(html: str = "<p>hi</p>", text: str = "hi\n", subject: str = "Subject") -> RenderedMail:
    body = (
        f'<html lang="en"><body>{html}<a href="{placeholders.UNSUBSCRIBE_URL}">u</a></body></html>'
    )
    return RenderedMail("en", "en", subject, "pre", body, text)


def messages(report: PreflightReport) -> list[str]:
    return [str(f) for f in report.findings]


@pytest.fixture(scope="module")
def sample_mails() -> dict[str, RenderedMail]:
    editions = parse_sources(IssueFolder.read(ROOT / "deploy" / "sample-issue").sources)
    templates = Templates()
    return {
        lang: render_edition(
            templates, ed, context=EditionContext(segment=lang, view_url="http://127.0.0.1:9101/v")
        )
        for lang, ed in editions.items()
    }


def test_a_clean_mail_has_no_findings() -> None:
    assert messages(check_static(mail())) == []


def test_html_over_the_clip_limit_is_an_error_and_near_it_a_warning() -> None:
    big = check_static(mail("x" * (CLIP_LIMIT + 1)))
    near = check_static(mail("x" * (CLIP_LIMIT - 8 * 1024)))
    assert any("Gmail clips" in m and m.startswith("error: size") for m in messages(big))
    assert any(m.startswith("warning: size") for m in messages(near))
    assert near.ok


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ('<a href="/relative">x</a>', "error: links: link '/relative' is not absolute"),
        ('<a href="javascript:alert(1)">x</a>', "uses the scheme 'javascript'"),
        (
            '<img src="https://example.org/i.png">',
            "error: images: image https://example.org/i.png has no alt",
        ),
        ('<img src="cid:logo" alt="logo">', "uses the scheme 'cid'"),
        ("@@NL_VIEW_ONLINE_URL@@", "error: placeholders: html holds unresolved markers"),
    ],
)
def test_link_image_and_placeholder_problems_are_errors(html: str, expected: str) -> None:
    report = check_static(mail(html))
    assert any(expected in m for m in messages(report)), messages(report)
    assert not report.ok


def test_template_leftovers_and_an_empty_subject_are_errors() -> None:
    report = check_static(mail(text="Hello {{ name }}\n", subject=" "))
    found = messages(report)
    assert any("text holds template syntax" in m for m in found)
    assert any("the subject is empty" in m for m in found)


def test_a_line_over_the_smtp_limit_is_flagged() -> None:
    report = check_static(mail(text="x" * 1200 + "\n"))
    assert any("line over 998 bytes" in m for m in messages(report))


def test_a_message_with_mime_defects_is_an_error() -> None:
    report = PreflightReport(language="en")
    broken = (
        b"From: a@example.org\r\nTo: b@example.org\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n--b1\r\n'
        b"Content-Type: text/plain\r\n\r\nno closing boundary\r\n"
    )
    check_message(report, broken)
    assert any(m.startswith("error: mime") for m in messages(report)), messages(report)


def test_the_sample_editions_pass_every_check_including_spamassassin(
    sample_mails: dict[str, RenderedMail],
) -> None:
    for language, rendered in sample_mails.items():
        report = preflight(rendered, sender=SENDER, sample=SAMPLE, spam=True, spam_required=True)
        assert report.ok, f"{language}: {messages(report)}"
        assert report.spam_score is not None
        assert report.spam_score < 1.0


def test_a_spammy_mail_scores_over_the_limit() -> None:
    spammy = mail(
        "<p>FREE MONEY!!! CLICK HERE NOW!!! 100% GUARANTEED VIAGRA CASINO WINNER</p>" * 5,
        text="FREE MONEY!!! Buy VIAGRA now. 100% GUARANTEED. Act now! Click here! " * 10,
        subject="FREE MONEY!!! CLICK NOW!!!",
    )
    report = PreflightReport(language="en")
    check_spam(report, sample_message(spammy, sender=SENDER, sample=SAMPLE), required=True)
    assert report.spam_score is not None, messages(report)
    assert report.spam_score >= 1.0, messages(report)
    assert any(m.startswith("error: spam") for m in messages(report))


def test_the_sample_message_has_no_mime_defects(sample_mails: dict[str, RenderedMail]) -> None:
    report = PreflightReport(language="ru")
    data = sample_message(sample_mails["ru"], sender=SENDER, sample=SAMPLE)
    check_message(report, data)
    assert report.ok
    assert b"Content-Language: ru" in data
    assert b"List-Unsubscribe-Post" in data
    assert b"@@NL_" not in data


def test_without_spamassassin_the_check_warns_or_fails_as_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    data = sample_message(mail(), sender=SENDER, sample=SAMPLE)
    optional, required = PreflightReport(language="en"), PreflightReport(language="en")
    check_spam(optional, data, required=False)
    check_spam(required, data, required=True)
    assert optional.ok
    assert any("apt-get install -y spamassassin" in m for m in messages(optional))
    assert not required.ok
