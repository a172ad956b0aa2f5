"""Tracked links: compact tokens, the rewrite of an edition's article links, the counter's
machine filters and burst rule (issue 18)."""

from __future__ import annotations

from datetime import date

import pytest

from services.renderer.catalogs import Templates
from services.renderer.click_counter import ClickCounter, classify
from services.renderer.editions import render_plan
from services.renderer.issue import parse_sources
from services.renderer.tracking import EditionTracker, LinkRef, LinkTokens
from shared.db.tables import ClickVerdict
from shared.messaging import placeholders
from shared.tokens import Purpose, TokenInvalid, TokenSigner
from tests.integration.renderer_harness import sample_sources

PAGES = "https://news.example.org"
SIGNER = TokenSigner("unit-secret-" + "k" * 40)
EXTRA_LINKS = (
    "\n\nSee also [the first](https://example.net/one), [the second](https://example.net/two) "
    "and [a mail](mailto:editor@example.net).\n"
)


def test_issue_numbers_past_sixteen_bits_make_tokens_too() -> None:
    ref = LinkRef(issue=999_999_999, edition="ru", article=0, link=0, links=1)
    assert LinkTokens(SIGNER).check(LinkTokens(SIGNER).mint(ref)) == (ref, True)


def test_a_compact_token_is_short_and_verifies_only_unchanged_and_for_its_purpose() -> None:
    ref = LinkRef(issue=50, edition="be", article=2, link=3, links=7)
    token = LinkTokens(SIGNER).mint(ref)
    assert len(token) == 23, token
    assert LinkTokens(SIGNER).check(token) == (ref, True)
    flipped = token[:3] + ("A" if token[3] != "A" else "B") + token[4:]
    _checked, good = LinkTokens(SIGNER).check(flipped)
    assert not good, "a changed payload must not verify"
    assert not LinkTokens(TokenSigner("another-secret-" + "k" * 40)).check(token)[1]
    with pytest.raises(TokenInvalid):
        SIGNER.verify_compact(Purpose.VERP, token)
    assert LinkTokens(SIGNER).check("!!not base64!!") == (None, False)
    assert LinkTokens(SIGNER).check("") == (None, False)


def test_a_token_has_one_spelling_so_a_changed_last_character_never_verifies() -> None:
    """23 characters carry 17 bytes: the last one's low four bits are unused. Every spelling
    that differs only there decodes to the same bytes, and each must be refused."""
    ref = LinkRef(issue=50, edition="en", article=0, link=0, links=3)
    token = LinkTokens(SIGNER).mint(ref)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for other in alphabet.replace(token[-1], ""):
        assert LinkTokens(SIGNER).check(token[:-1] + other)[1] is False, other


def _rendered(*, tracker: EditionTracker | None) -> dict[str, str]:
    sources = {
        lang: text.rstrip("\n") + EXTRA_LINKS for lang, text in sample_sources("en", "be").items()
    }
    _plan, rendered = render_plan(
        Templates(),
        parse_sources(sources),
        segments=["en", "be", "ru"],
        fallbacks={"ru": "en"},
        pages_url=PAGES,
        send_id="send-1",
        rewrite=tracker,
    )
    return {seg: t.mail.html + "\n" + t.mail.text for seg, t in rendered.items()}


def test_article_links_go_through_tokens_in_both_parts_and_layout_links_do_not() -> None:
    tracker = EditionTracker(tokens=LinkTokens(SIGNER), pages_url=PAGES)
    mails = _rendered(tracker=tracker)
    for segment in ("en", "be", "ru"):
        mail = mails[segment]
        assert f"{PAGES}/{segment}/r/" in mail, f"no tracked link in the {segment} edition"
        assert "https://example.net/one" not in mail, "an article link went out untracked"
        assert "https://www.osce.org/forum-for-security-cooperation" not in mail
        assert "mailto:editor@example.net" in mail, "mailto links are not tracked"
        assert "border-map.png" in mail, "images are not links"
        assert f"{PAGES}/{segment}/" in mail, "the archive link stays as it is"
        assert placeholders.UNSUBSCRIBE_URL in mail, "the unsubscribe link stays a marker"
        assert placeholders.PREFERENCES_URL in mail
    rows = {(r.edition, r.article, r.link): r.url for r in tracker.links}
    assert rows[("ru", 0, 0)] == "https://www.osce.org/forum-for-security-cooperation"
    assert rows[("be", 0, 1)] == "https://example.net/one"
    assert rows[("en", 0, 2)] == "https://example.net/two"
    assert {r.issue_number for r in tracker.links} == {50}
    assert {r.article_key for r in tracker.links} == {"minsk-escalation"}
    # The ru segment reads the English edition (fallback): its links are the ru segment's.
    assert len([r for r in tracker.links if r.edition == "ru"]) == 3


def test_without_tracking_links_go_straight_to_their_targets() -> None:
    mails = _rendered(tracker=None)
    assert all("/r/" not in mail.replace("/ru/", "") for mail in mails.values())
    assert all("https://example.net/one" in mail for mail in mails.values())


@pytest.mark.parametrize(
    ("method", "headers", "verdict"),
    [
        ("HEAD", {}, ClickVerdict.HEAD),
        ("GET", {"sec-purpose": "prefetch;prerender"}, ClickVerdict.PREFETCH),
        ("GET", {"purpose": "prefetch"}, ClickVerdict.PREFETCH),
        ("GET", {"x-moz": "prefetch"}, ClickVerdict.PREFETCH),
        ("GET", {"user-agent": "Microsoft Office/16.0 (Windows NT 10.0; ms-office)"}, "scanner"),
        ("GET", {"user-agent": "Mozilla/5.0 (compatible; Barracuda Sentinel)"}, "scanner"),
        ("GET", {"user-agent": "Proofpoint URL Defense"}, "scanner"),
        ("GET", {"user-agent": "Mimecast URL Protect"}, "scanner"),
        ("GET", {"user-agent": "python-requests/2.31"}, "scanner"),
        ("GET", {}, "scanner"),
        ("GET", {"user-agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"}, None),
    ],
)
def test_machines_are_told_from_readers(
    method: str, headers: dict[str, str], verdict: ClickVerdict | str | None
) -> None:
    assert classify(method, headers) == verdict


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


DAY = date(2026, 12, 2)


def _counter(clock: FakeClock) -> ClickCounter:
    return ClickCounter(burst_window_s=10.0, clock=clock, today=lambda: DAY)


def _by_verdict(counter: ClickCounter) -> dict[str, int]:
    found: dict[str, int] = {}
    for (*_ids, verdict), n in counter.drain().items():
        found[verdict] = found.get(verdict, 0) + n
    return found


def test_a_client_following_every_link_within_the_window_is_a_burst() -> None:
    clock = FakeClock()
    counter = _counter(clock)
    for link in range(3):
        counter.click(LinkRef(50, "en", 0, link, links=3), client=1)
        clock.now += 0.5
    counter.click(LinkRef(50, "en", 0, 0, links=3), client=1)  # still in the window
    clock.now += 60
    counter.release_due()
    assert _by_verdict(counter) == {"burst": 4}


def test_a_reader_clicking_some_links_is_counted_once_the_window_ends() -> None:
    clock = FakeClock()
    counter = _counter(clock)
    counter.click(LinkRef(50, "ru", 0, 0, links=3), client=1)
    counter.click(LinkRef(50, "ru", 0, 1, links=3), client=1)
    counter.click(LinkRef(50, "ru", 0, 0, links=3), client=2)
    counter.release_due()
    assert _by_verdict(counter) == {}, "held until the window ends"
    clock.now += 11
    counter.click(LinkRef(50, "ru", 0, 2, links=3), client=1)  # a later click: a new window
    counter.release_due()
    assert _by_verdict(counter) == {"counted": 3}
    counter.release_due(everything=True)
    assert _by_verdict(counter) == {"counted": 1}


def test_a_one_link_mail_counts_at_once_and_failed_flushes_are_restored() -> None:
    counter = _counter(FakeClock())
    ref = LinkRef(50, "be", 0, 0, links=1)
    counter.click(ref, client=1)
    counter.filtered(ref, ClickVerdict.HEAD)
    counts = counter.drain()
    assert counts == {(50, "be", 0, 0, DAY, "counted"): 1, (50, "be", 0, 0, DAY, "head"): 1}
    counter.restore(counts)
    counter.click(ref, client=1)
    assert counter.drain()[(50, "be", 0, 0, DAY, "counted")] == 2


def test_prometheus_counts_readers_clicks_per_edition_and_issue_and_filtered_apart() -> None:
    from prometheus_client import CollectorRegistry

    from services.renderer.clicks import ClickMetrics

    registry = CollectorRegistry()
    metrics = ClickMetrics(registry)
    counter = ClickCounter(burst_window_s=10.0, clock=FakeClock(), on_count=metrics.observe)
    counter.click(LinkRef(50, "be", 0, 0, links=1), client=1)
    counter.filtered(LinkRef(50, "be", 0, 0, links=1), ClickVerdict.SCANNER)
    labels = {"edition": "be", "issue": "50"}
    assert registry.get_sample_value("newsletter_clicks_total", labels) == 1
    assert (
        registry.get_sample_value(
            "newsletter_clicks_filtered_total", {**labels, "reason": "scanner"}
        )
        == 1
    )


def test_issue_send_has_a_no_tracking_switch_that_reaches_the_command() -> None:
    from typer.testing import CliRunner

    from newsletter_cli.main import app
    from services.renderer.issue import IssueFolder
    from services.renderer.sending import prepare_send
    from services.renderer.settings import load_renderer_settings
    from tests.integration.renderer_harness import SAMPLE

    shown = CliRunner().invoke(app, ["issue", "send", "--help"], terminal_width=200)
    assert "--no-tracking" in shown.output
    settings = load_renderer_settings(mode="test", secret_key="k" * 40)
    for tracking in (True, False):
        prepared = prepare_send(
            IssueFolder.read(SAMPLE),
            settings=settings,
            templates=Templates(),
            segments=["en"],
            fallbacks={},
            spam=False,
            tracking=tracking,
        )
        assert prepared.command.tracking is tracking


def test_deliveries_are_attributed_to_the_issue_per_edition() -> None:
    from datetime import UTC, datetime, timedelta

    from services.renderer.analytics_report import _tally
    from shared.db.tables import Delivery

    sent = datetime(2021, 12, 20, 8, tzinfo=UTC)
    next_issue = sent + timedelta(days=7)

    def delivery(n: int, language: str, status: str) -> Delivery:
        return Delivery(
            id=n,
            dedupe_key=str(n),
            subscriber_id=n,
            email=f"r{n}@example.org",
            email_domain="example.org",
            language=language,
            status=status,
            sent_at=sent if status in {"sent", "complained"} else None,
        )

    deliveries = [
        delivery(1, "en", "sent"),
        delivery(2, "en", "sent"),  # bounced later (a DSN about this delivery)
        delivery(3, "en", "bounced"),
        delivery(4, "ru", "complained"),
        delivery(5, "ru", "sent"),  # unsubscribed two days after: this issue's
        delivery(6, "ru", "sent"),  # unsubscribed after the next issue went out: not this one's
        delivery(7, "be", "sent"),  # mailto List-Unsubscribe naming this delivery
    ]
    figures = _tally(
        deliveries,
        {2: {"hard"}, 4: {"complaint"}, 7: {"unsubscribe"}},
        {5: sent + timedelta(days=2), 6: next_issue + timedelta(hours=1)},
        next_issue,
    )
    en, ru, be = figures["en"], figures["ru"], figures["be"]
    assert (en.delivered, en.bounced, en.complaints, en.unsubscribes) == (2, 2, 0, 0)
    assert (ru.delivered, ru.bounced, ru.complaints, ru.unsubscribes) == (3, 0, 1, 1)
    assert (be.delivered, be.unsubscribes) == (1, 1)
