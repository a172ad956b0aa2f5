"""Settings fail fast with a message that says what to set."""

from __future__ import annotations

import pytest

from shared.settings import SettingsError, load_settings


def test_production_refuses_to_start_without_a_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEWSLETTER_SECRET_KEY", raising=False)
    monkeypatch.delenv("NEWSLETTER_MODE", raising=False)
    with pytest.raises(SettingsError, match="NEWSLETTER_SECRET_KEY"):
        load_settings()


def test_production_refuses_a_placeholder_secret_key() -> None:
    with pytest.raises(SettingsError, match="at least 32"):
        load_settings(mode="production", secret_key="changethis", admin_token="x")


def test_production_requires_an_admin_token() -> None:
    with pytest.raises(SettingsError, match="NEWSLETTER_ADMIN_TOKEN"):
        load_settings(mode="production", secret_key="k" * 40, admin_token="")


def test_demo_mode_generates_a_throwaway_key() -> None:
    settings = load_settings(mode="demo")
    assert len(settings.secret_key.get_secret_value()) >= 32


def test_from_is_read_from_newsletter_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_FROM", "Дайджэст <digest@news.example.org>")
    settings = load_settings(mode="test")
    assert settings.sender.domain == "news.example.org"
    assert settings.sender.display_name == "Дайджэст"


def test_a_sender_with_a_line_break_is_refused() -> None:
    with pytest.raises(SettingsError, match="NEWSLETTER_FROM"):
        load_settings(mode="test", NEWSLETTER_FROM="A <a@example.org>\r\nBcc: x@example.org")


def test_smtp_url_is_parsed() -> None:
    target = load_settings(mode="test", smtp_url="smtps://u:p@mail.example.org").smtp
    assert (target.host, target.port, target.use_tls, target.username) == (
        "mail.example.org",
        465,
        True,
        "u",
    )


def test_public_url_must_be_http() -> None:
    with pytest.raises(SettingsError, match="NEWSLETTER_PUBLIC_URL"):
        load_settings(mode="test", public_url="javascript:alert(1)")
