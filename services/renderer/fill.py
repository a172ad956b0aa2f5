"""Per-recipient filling of an edition rendered once: a split and a join, no template render.

The rules, for anyone who fills editions (the dispatcher mirrors them on its own MIME bytes):

1. An edition's HTML and text hold the markers of :mod:`shared.messaging.placeholders`
   (``@@NL_UNSUBSCRIBE_URL@@``, ``@@NL_PREFERENCES_URL@@``, ``@@NL_RECIPIENT@@``, and in
   per-reader mode ``@@NL_READER_REF@@`` after each tracked link;
   ``@@NL_VIEW_ONLINE_URL@@`` is already filled by the renderer). Markers are ASCII and match
   ``@@NL_[A-Z_]+@@``; quoted-printable and 8bit leave them intact.
2. Split the edition once on that pattern (:class:`FillPlan`); per recipient, join the literal
   parts with the values. Unknown markers are an error at split time, never sent.
3. Values put into HTML are HTML-escaped (an address may contain ``&`` or ``'``); values put into
   the text part are inserted as they are. URLs from ``shared.links`` need no escaping
   (``?token=`` is their only parameter), but escaping them is harmless.
4. A value must not contain CR or LF (it would break lines of the message).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping

from services.renderer.errors import RendererError
from shared.messaging import placeholders

MARKER = re.compile(r"(@@NL_[A-Z_]+@@)")
PER_RECIPIENT: frozenset[str] = frozenset(
    {
        placeholders.UNSUBSCRIBE_URL,
        placeholders.PREFERENCES_URL,
        placeholders.RECIPIENT,
        placeholders.READER_REF,
    }
)


class FillError(RendererError, ValueError):
    """An edition holds an unknown marker, or a value is missing or unsafe."""


class FillPlan:
    """An edition split once at its markers; :meth:`fill` costs one join per recipient."""

    __slots__ = ("_escape", "_parts")

    def __init__(self, template: str, *, escape_html: bool) -> None:
        parts = MARKER.split(template)
        unknown = {p for p in parts[1::2] if p not in PER_RECIPIENT}
        if unknown:
            raise FillError(f"unknown or unfilled markers: {sorted(unknown)}")
        self._parts = parts
        self._escape = escape_html

    @property
    def markers(self) -> set[str]:
        return set(self._parts[1::2])

    def fill(self, values: Mapping[str, str]) -> str:
        parts = self._parts[:]
        for index in range(1, len(parts), 2):
            try:
                value = values[parts[index]]
            except KeyError as err:
                raise FillError(f"no value for {parts[index]}") from err
            if "\r" in value or "\n" in value:
                raise FillError(f"the value for {parts[index]} contains a line break")
            parts[index] = html.escape(value) if self._escape else value
        return "".join(parts)


def recipient_values(
    *, unsubscribe_url: str, preferences_url: str, recipient: str, reader_ref: str = ""
) -> dict[str, str]:
    """The marker -> value mapping of one recipient (``reader_ref``: ``"/{ref}"`` for a reader
    who consented to per-reader analytics, else nothing)."""
    return {
        placeholders.UNSUBSCRIBE_URL: unsubscribe_url,
        placeholders.PREFERENCES_URL: preferences_url,
        placeholders.RECIPIENT: recipient,
        placeholders.READER_REF: reader_ref,
    }


def unresolved_markers(text: str) -> set[str]:
    """Markers left in ``text`` that are not per-recipient (a rendering bug if any)."""
    return {m for m in MARKER.findall(text) if m not in PER_RECIPIENT}
