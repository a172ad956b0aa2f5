"""Per-recipient filling: a split once per edition, a join per recipient, escaped for HTML."""

from __future__ import annotations

import pytest

from services.renderer.fill import FillError, FillPlan, recipient_values, unresolved_markers
from shared.messaging import placeholders

VALUES = recipient_values(
    unsubscribe_url="https://news.example.org/unsubscribe?token=abc",
    preferences_url="https://news.example.org/preferences?token=abc",
    recipient="o'neil&co@example.org",
)


def test_fill_replaces_every_marker_and_escapes_values_in_html() -> None:
    template = (
        f'<a href="{placeholders.UNSUBSCRIBE_URL}">x</a> {placeholders.RECIPIENT} '
        f"{placeholders.PREFERENCES_URL} {placeholders.RECIPIENT}"
    )
    filled = FillPlan(template, escape_html=True).fill(VALUES)
    assert filled == (
        '<a href="https://news.example.org/unsubscribe?token=abc">x</a> '
        "o&#x27;neil&amp;co@example.org https://news.example.org/preferences?token=abc "
        "o&#x27;neil&amp;co@example.org"
    )


def test_fill_leaves_text_values_as_they_are() -> None:
    plan = FillPlan(f"To: {placeholders.RECIPIENT}\n", escape_html=False)
    assert plan.fill(VALUES) == "To: o'neil&co@example.org\n"
    assert plan.markers == {placeholders.RECIPIENT}


def test_an_unknown_or_unfilled_marker_is_refused_at_split_time() -> None:
    with pytest.raises(FillError, match="@@NL_SOMETHING@@"):
        FillPlan("a @@NL_SOMETHING@@ b", escape_html=False)
    with pytest.raises(FillError, match="VIEW_ONLINE"):
        FillPlan(placeholders.VIEW_ONLINE_URL, escape_html=False)


def test_a_missing_value_or_a_line_break_in_a_value_is_refused() -> None:
    plan = FillPlan(placeholders.RECIPIENT, escape_html=False)
    with pytest.raises(FillError, match="no value"):
        plan.fill({})
    with pytest.raises(FillError, match="line break"):
        plan.fill({placeholders.RECIPIENT: "a@example.org\r\nBcc: x@example.org"})


def test_unresolved_markers_lists_only_markers_that_are_not_per_recipient() -> None:
    text = f"{placeholders.RECIPIENT} {placeholders.VIEW_ONLINE_URL} @@NL_TYPO@@"
    assert unresolved_markers(text) == {placeholders.VIEW_ONLINE_URL, "@@NL_TYPO@@"}
