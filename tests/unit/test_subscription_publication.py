"""The publication's name, pitch and logo come from the settings and reach every page."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from services.subscription.form_guard import CsrfGuard
from services.subscription.pages import Pages
from services.subscription.publication import Publication
from shared.settings import DEFAULT_PITCH, SettingsError, load_settings


def _signup_page(pages: Pages, lang: str) -> tuple[str, dict[str, str]]:
    request = Request(
        {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": []}
    )
    response = pages.render(
        request, "signup.html", lang=lang, error=None, email="", chosen=[lang], form_stamp="s"
    )
    return bytes(response.body).decode(), dict(response.headers)


def _pages(publication: Publication) -> Pages:
    return Pages(csrf=CsrfGuard("p" * 40), secure_cookies=False, publication=publication)


def test_the_seed_wording_is_the_sample_in_each_language() -> None:
    settings = load_settings(mode="test")
    publication = Publication.from_settings(settings)
    for lang, translated_name in [
        ("en", "Weekly Digest"),
        ("be", "Штотыднёвы дайджэст"),
        ("ru", "Еженедельный дайджест"),
    ]:
        html, headers = _signup_page(_pages(publication), lang)
        assert DEFAULT_PITCH[lang] in html
        assert translated_name in html
        assert "<svg" in html  # the built-in logo mark
        assert "img-src 'self';" in headers["content-security-policy"]


def test_a_publication_set_in_the_environment_is_shown_as_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEWSLETTER_PUBLICATION_NAME", "Belarus <Review>")
    monkeypatch.setenv("NEWSLETTER_PUBLICATION_PITCH_BE", "Наш асабісты тэкст.")
    monkeypatch.setenv("NEWSLETTER_LOGO_URL", "https://cdn.example.org/logo.svg")
    publication = Publication.from_settings(load_settings(mode="test"))
    html, headers = _signup_page(_pages(publication), "be")
    assert "Belarus &lt;Review&gt;" in html  # not translated, escaped
    assert "Наш асабісты тэкст." in html
    assert '<img src="https://cdn.example.org/logo.svg"' in html
    assert "img-src 'self' https://cdn.example.org;" in headers["content-security-policy"]
    english, _ = _signup_page(_pages(publication), "en")
    assert DEFAULT_PITCH["en"] in english


def test_a_logo_url_must_be_a_web_address() -> None:
    with pytest.raises(SettingsError, match="NEWSLETTER_LOGO_URL"):
        load_settings(mode="test", logo_url="javascript:alert(1)")


def test_sentences_that_name_the_publication_use_its_own_name_once_it_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.subscription import page_texts as texts

    sample = _pages(Publication.from_settings(load_settings(mode="test")))
    assert "Штотыднёвы дайджэст" in sample.naming_text(
        "be", texts.UNSUBSCRIBE_TEXT, texts.UNSUBSCRIBE_TEXT_NAMED
    )
    monkeypatch.setenv("NEWSLETTER_PUBLICATION_NAME", "Belarus Review")
    own = _pages(Publication.from_settings(load_settings(mode="test")))
    for lang, expected in [
        ("en", "Press the button to stop receiving Belarus Review."),
        ("be", "Націсніце кнопку, каб больш не атрымліваць «Belarus Review»."),
        ("ru", "Нажмите кнопку, чтобы больше не получать «Belarus Review»."),
    ]:
        assert (
            own.naming_text(lang, texts.UNSUBSCRIBE_TEXT, texts.UNSUBSCRIBE_TEXT_NAMED) == expected
        )
    for message, named in texts.NAMED.items():
        for lang in ("en", "be", "ru"):
            text = own.naming_text(lang, message, named)
            assert "Belarus Review" in text
            assert "Weekly Digest" not in text
            assert "дайджэст" not in text
            assert "дайджест" not in text
