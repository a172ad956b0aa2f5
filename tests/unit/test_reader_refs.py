"""Per-reader mode's pure parts (issue 18): the signed per-delivery reference, the marker the
renderer puts after tracked links, the dispatcher's value for it, and the counter's second
buffer (only a click counted as a reader's makes a per-reader entry)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.dispatcher import mime
from services.dispatcher.composer import Composer, Recipient
from services.dispatcher.dkim_signing import CanonicalBodyTemplate, canonical_body
from services.dispatcher.settings import load_dispatcher_settings
from services.renderer.click_counter import ClickCounter
from services.renderer.fill import FillPlan, recipient_values
from services.renderer.tracking import EditionTracker, LinkRef, LinkTokens, untracked_html
from shared.db.tables import ClickVerdict
from shared.messaging import placeholders
from shared.reader_refs import ReaderRefs
from shared.tokens import TokenSigner
from tests.unit.test_analytics_tracking import DAY, PAGES, SIGNER, FakeClock, _rendered

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


def test_an_empty_reference_between_a_token_and_a_quote_keeps_dkim_s_quick_path() -> None:
    settings = load_dispatcher_settings(mode="test", secret_key="k" * 40)
    link = f"https://example.org/en/r/TOKEN{placeholders.READER_REF}"
    template = mime.build_template(
        envelope=Composer(settings=settings).envelope(subject="W", language="en", campaign="c"),
        text=f"Read  [1]\n\n[1] {link}\n  {placeholders.RECIPIENT} \n",
        html_body=f'<p>  a <a href="{link}">one</a>  </p>\n<p>{placeholders.RECIPIENT}</p>\n',
    )
    canonical = CanonicalBodyTemplate(template)
    for ref in ("", "/AQAAAAAAAQAAAAAAAAAA"):
        values = {placeholders.READER_REF: ref, placeholders.RECIPIENT: "r@example.org"}
        body = template.render(values).partition(b"\r\n\r\n")[2]
        quick = canonical.canonical(values)
        assert quick is not None, f"the quick path for {ref!r}"
        assert quick == canonical_body(body)
    # An empty value after white space still falls back to the whole body.
    assert canonical.canonical({placeholders.READER_REF: "", placeholders.RECIPIENT: ""}) is None


@given(
    st.lists(
        st.tuples(
            st.text(alphabet=" \tab\r\n", max_size=6).map(lambda t: t.replace("\r", "\r\n")),
            st.sampled_from(["", "x", "/ref"]),
        ),
        max_size=8,
    )
)
def test_the_quick_canonical_body_is_the_whole_body_s_whenever_it_is_given(
    chunks: list[tuple[str, str]],
) -> None:
    pieces: list[mime.Piece] = [b"X-Test: 1\r\n\r\n"]
    values: dict[str, str] = {}
    for n, (literal, value) in enumerate(chunks):
        name = f"@@NL_M{chr(65 + n)}@@"
        pieces += [literal.encode(), mime.Marker(name, "text")]
        values[name] = value
    template = mime.MessageTemplate(pieces=tuple(pieces), size_hint=0)
    quick = CanonicalBodyTemplate(template).canonical(values)
    body = template.render(values).partition(b"\r\n\r\n")[2]
    assert quick is None or quick == canonical_body(body), (pieces, values)
