"""Per-reader mode's pure parts (issue 18): the signed per-delivery reference, the marker the
renderer puts after tracked links, the dispatcher's value for it, and the counter's second
buffer (only a click counted as a reader's makes a per-reader entry)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.dispatcher import mime
from services.dispatcher.composer import Composer, Recipient
from services.dispatcher.settings import load_dispatcher_settings
from services.renderer.click_counter import ClickCounter
from services.renderer.fill import FillPlan, recipient_values
from services.renderer.tracking import EditionTracker, LinkRef, LinkTokens, untracked_html
from shared.db.tables import ClickVerdict
from shared.messaging import placeholders
from shared.reader_refs import ReaderRefs
from shared.tokens import TokenSigner
from tests.unit.test_analytics_tracking import DAY, PAGES, SIGNER, FakeClock, _rendered
from tests.unit.test_dispatcher_dkim import _ED_KEY, _RSA_KEY, _composer, _records, _verify

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def test_a_reference_is_compact_names_its_delivery_and_has_one_spelling() -> None:
    refs = ReaderRefs(SIGNER)
    for delivery in (1, 4_294_967_296, 2**48 - 1):
        ref = refs.mint(delivery)
        assert len(ref) == 20, ref
        assert refs.check(ref) == delivery
    ref = refs.mint(12345)
    for position in range(len(ref)):
        for other in ALPHABET.replace(ref[position], ""):
            changed = ref[:position] + other + ref[position + 1 :]
            assert refs.check(changed) is None, (position, other)
    assert ReaderRefs(TokenSigner("another-secret-" + "k" * 40)).check(ref) is None
    click = LinkTokens(SIGNER).mint(LinkRef(50, "en", 0, 0, links=1))
    assert refs.check(click) is None, "a click token is not a reference"
    assert refs.check("") is None
    assert refs.check("!!") is None
    with pytest.raises(ValueError, match="out of range"):
        refs.mint(0)


def test_per_reader_mode_puts_the_marker_after_each_tracked_link_only() -> None:
    tracker = EditionTracker(tokens=LinkTokens(SIGNER), pages_url=PAGES, per_reader=True)
    mails = _rendered(tracker=tracker)
    for segment, mail in mails.items():
        tracked = mail.count(f"{PAGES}/{segment}/r/")
        assert tracked >= 6, f"{segment}: tracked links in both parts"
        assert mail.count(placeholders.READER_REF) == tracked, segment
    plain = _rendered(tracker=EditionTracker(tokens=LinkTokens(SIGNER), pages_url=PAGES))
    assert all(placeholders.READER_REF not in mail for mail in plain.values())
    html = mails["en"].split("\n", 1)[0]
    assert placeholders.READER_REF not in untracked_html(
        html, tokens=LinkTokens(SIGNER), links=tracker.links
    ), "the archive's copy links the targets, marker and all gone"


def test_the_marker_is_filled_with_the_reference_only_for_a_consenting_reader() -> None:
    settings = load_dispatcher_settings(mode="test", secret_key="unit-secret-" + "k" * 40)
    composer = Composer(settings=settings)
    consenting = composer.values(Recipient(77, 5, "a@example.org", "k", reader_ref=True))
    other = composer.values(Recipient(78, 6, "b@example.org", "k"))
    ref = consenting[placeholders.READER_REF]
    assert ref.startswith("/")
    assert ReaderRefs(TokenSigner(settings.secret_key.get_secret_value())).check(ref[1:]) == 77
    assert other[placeholders.READER_REF] == ""
    # Previews and test sends fill it with nothing.
    values = recipient_values(unsubscribe_url="u", preferences_url="p", recipient="r")
    plan = FillPlan(f"<a href='x/r/T{placeholders.READER_REF}'>", escape_html=True)
    assert plan.fill(values) == "<a href='x/r/T'>"


def test_only_a_click_counted_as_a_reader_s_makes_a_per_reader_entry() -> None:
    clock = FakeClock()
    counter = ClickCounter(burst_window_s=10.0, clock=clock, today=lambda: DAY)
    three = [LinkRef(50, "en", 0, link, links=3) for link in range(3)]
    counter.click(three[0], client=1, delivery=9)
    counter.filtered(three[1], ClickVerdict.HEAD)
    counter.release_due()
    assert counter.drain_readers() == [], "held for the burst window like the count"
    clock.now += 11
    counter.release_due()
    [entry] = counter.drain_readers()
    assert (entry.delivery_id, entry.ref) == (9, three[0])
    for ref in three:  # a sandbox following every link with the reader's references
        counter.click(ref, client=2, delivery=9)
    clock.now += 11
    counter.release_due()
    assert counter.drain_readers() == [], "a burst makes no per-reader entry"
    counter.click(three[1], client=3)
    clock.now += 11
    counter.release_due()
    assert counter.drain_readers() == [], "no reference, no entry"
    counter.restore_readers([entry])
    assert counter.drain_readers() == [entry], "a failed flush puts them back"


async def test_mail_with_an_empty_or_a_filled_reference_verifies_with_dkimpy(
    tmp_path: Path,
) -> None:
    """The per-reader reference after a tracked link's token is empty for most readers and a
    signed ref for consenting ones; both bodies are signed as sent (c=relaxed/simple)."""
    composer = _composer(tmp_path, "fast", algorithms=("rsa", "ed25519"))
    records = _records(_RSA_KEY, _ED_KEY)
    link = f"https://example.org/en/r/TOKEN{placeholders.READER_REF}"
    template = mime.build_template(
        envelope=composer.envelope(subject="W", language="en", campaign="c"),
        text=f"Read  [1]\n\n[1] {link}\n  {placeholders.RECIPIENT} \n",
        html_body=f'<p>  a <a href="{link}">one</a>  </p>\n<p>{placeholders.RECIPIENT}</p>\n',
    )
    try:
        for reader_ref in (False, True):
            values = composer.values(
                Recipient(7, 11, "r@example.org", "d7.abcdef01", reader_ref=reader_ref)
            )
            data = await composer.compose(template, values)
            assert (b"/r/TOKEN/" in data) is reader_ref, "the reference only for consent"
            for idx in range(2):
                assert _verify(data, records, idx), f"signature {idx}, reference {reader_ref}"
    finally:
        composer.close()
