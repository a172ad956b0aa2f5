"""The renderer's own settings: where its public pages live."""

from __future__ import annotations

import pytest

from services.renderer.settings import from_settings, load_renderer_settings
from shared.settings import SettingsError, load_settings


def test_pages_default_to_the_public_origin_and_follow_the_archive_url() -> None:
    settings = load_renderer_settings(
        mode="test", renderer_probe_port=9200, public_url="https://news.example.org/"
    )
    assert settings.pages_url == "https://news.example.org", "never the internal port"
    widened = from_settings(load_settings(mode="test"), archive_url="https://news.example.org/")
    assert widened.pages_url == "https://news.example.org"


def test_an_archive_url_that_is_not_http_is_refused_with_the_variable_named() -> None:
    with pytest.raises(SettingsError, match=r"^NEWSLETTER_ARCHIVE_URL must be an http"):
        load_renderer_settings(mode="test", archive_url="ftp://x")
