"""The open pixel (issue 18, ``NEWSLETTER_OPEN_TRACKING=true`` only): its token names an
edition and no reader, there is no pixel unless the setting is on, and proxies that load images
without a reader are told apart where they can be."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from services.renderer.catalogs import Templates
from services.renderer.clicks import ClickMetrics, ClickService
from services.renderer.editions import render_plan
from services.renderer.issue import parse_sources
from services.renderer.opens import (
    PIXEL_GIF,
    OpenCounter,
    OpenPixels,
    OpenRef,
    OpenTokens,
    classify_open,
    without_pixel,
)
from services.renderer.tracking import LinkRef, LinkTokens
from shared.db.tables import OpenVerdict
from shared.settings import load_settings
from shared.tokens import TokenSigner
from tests.integration.renderer_harness import sample_sources

PAGES = "https://news.example.org"
SIGNER = TokenSigner("unit-" + "p" * 40)
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
GMAIL = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"


def _html(pixel: OpenPixels | None) -> dict[str, str]:
    _plan, rendered = render_plan(
        Templates(),
        parse_sources(sample_sources("en", "be", "ru")),
        segments=["en", "be", "ru"],
        fallbacks={},
        pages_url=PAGES,
        send_id="send-1",
        pixel=pixel,
    )
    return {seg: t.mail.html for seg, t in rendered.items()} | {
        f"{seg}.txt": t.mail.text for seg, t in rendered.items()
    }


def test_an_open_token_names_only_the_edition_and_verifies_for_its_purpose_alone() -> None:
    tokens = OpenTokens(SIGNER)
    token = tokens.mint(OpenRef(50, "be"))
    assert len(token) == 19, token
    assert tokens.check(token) == OpenRef(50, "be")
    flipped = token[:2] + ("A" if token[2] != "A" else "B") + token[3:]
    assert tokens.check(flipped) is None, "a changed token counts nothing"
    click = LinkTokens(SIGNER).mint(LinkRef(50, "be", 0, 0, 1))
    assert tokens.check(click) is None, "a click token is not an open token"
    assert LinkTokens(SIGNER).check(token)[1] is False, "nor the other way round"
    assert tokens.check("$$$") is None


def test_with_the_setting_off_a_mail_carries_no_pixel_at_all() -> None:
    settings = load_settings(mode="test")
    assert settings.open_tracking is False, "the open pixel is off by default"
    for name, part in _html(None).items():
        assert "/o/" not in part, f"{name}: no pixel without NEWSLETTER_OPEN_TRACKING"
        assert 'width="1"' not in part, name


def test_with_the_setting_on_each_edition_ends_with_its_own_pixel_in_the_html_only() -> None:
    parts = _html(OpenPixels(tokens=OpenTokens(SIGNER), pages_url=PAGES))
    for seg in ("en", "be", "ru"):
        html = parts[seg]
        prefix = f'<img src="{PAGES}/{seg}/o/'
        assert html.count(prefix) == 1, f"{seg}: one pixel, got {html.count(prefix)}"
        token = html.split(prefix, 1)[1].split(".gif", 1)[0]
        assert OpenTokens(SIGNER).check(token) == OpenRef(50, seg)
        assert 'alt=""' in html.split(prefix, 1)[1].split(">", 1)[0], "decorative: empty alt"
        assert "/o/" not in parts[f"{seg}.txt"], "the plain part has no pixel"
        assert prefix not in without_pixel(html), "the archive's copy drops the pixel"
        assert "Unsubscribe" in without_pixel(parts["en"])


def test_setting_on_starts_and_per_reader_mode_is_off_unless_set() -> None:
    assert load_settings(mode="test", open_tracking=True).open_tracking
    assert not load_settings(mode="test").per_reader_analytics
    assert load_settings(mode="test", per_reader_analytics=True).per_reader_analytics


@pytest.mark.parametrize(
    ("method", "headers", "verdict"),
    [
        ("GET", {"user-agent": FIREFOX}, OpenVerdict.LOADED),
        ("GET", {"user-agent": GMAIL}, OpenVerdict.GMAIL_PROXY),
        ("HEAD", {"user-agent": GMAIL}, OpenVerdict.HEAD),
        ("GET", {"user-agent": "Mozilla/5.0"}, OpenVerdict.APPLE_PROXY),
        ("HEAD", {"user-agent": FIREFOX}, OpenVerdict.HEAD),
        ("GET", {"user-agent": FIREFOX, "sec-purpose": "prefetch"}, OpenVerdict.PREFETCH),
        ("GET", {"user-agent": "Barracuda Sentinel"}, OpenVerdict.SCANNER),
        ("GET", {}, OpenVerdict.SCANNER),
    ],
)
def test_proxies_and_machines_are_told_apart_where_they_can_be(
    method: str, headers: dict[str, str], verdict: OpenVerdict
) -> None:
    assert classify_open(method, headers) is verdict


def test_loads_are_counted_per_edition_day_and_verdict_and_a_failed_flush_keeps_them() -> None:
    counter = OpenCounter(clock=lambda: 1_790_000_000.0)
    counter.load(OpenRef(50, "ru"), OpenVerdict.LOADED)
    counter.load(OpenRef(50, "ru"), OpenVerdict.LOADED)
    counter.load(OpenRef(50, "ru"), OpenVerdict.APPLE_PROXY)
    counts = counter.drain()
    assert sorted(counts.values()) == [1, 2]
    assert {key[:2] for key in counts} == {(50, "ru")}
    assert counter.drain() == {}
    counter.restore(counts)
    assert counter.drain() == counts


def test_prometheus_counts_loads_by_verdict() -> None:
    registry = CollectorRegistry()
    service = ClickService(
        sessions=None,  # type: ignore[arg-type]  # never reached: nothing is flushed here
        signer=SIGNER,
        metrics=ClickMetrics(registry),
    )
    service.opens.load(OpenRef(7, "be"), OpenVerdict.GMAIL_PROXY)
    value = registry.get_sample_value(
        "newsletter_opens_total", {"edition": "be", "issue": "7", "verdict": "gmail_proxy"}
    )
    assert value == 1.0
    assert PIXEL_GIF.startswith(b"GIF89a")
    assert len(PIXEL_GIF) == 42
