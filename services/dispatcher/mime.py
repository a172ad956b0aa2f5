"""Message bytes built once per edition, with per-recipient values substituted in the bytes.

An edition becomes a :class:`MessageTemplate`: the whole RFC 5322 message (headers and a
``multipart/alternative`` body with a text and an HTML part) rendered once, split at the
markers of :mod:`shared.messaging.placeholders` and at a few header markers of our own. A
recipient's message is then a join of byte pieces (tens of microseconds), not a MIME build
(milliseconds).

Transfer encoding: ``8bit`` UTF-8 with lines wrapped at spaces so that every line stays under
998 bytes even after substitution. Quoted-printable would double the size of Cyrillic text and
could split a marker across a soft line break. A part that cannot be wrapped (a single word
longer than a line) falls back to base64, encoded per recipient after substitution.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import html
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.header import Header
from typing import Literal

from shared.messaging import placeholders

Context = Literal["header", "text", "html"]

# Header markers: the dispatcher's own, never seen by the renderer.
TO = "@@NL_TO@@"
DATE = "@@NL_DATE@@"
MESSAGE_ID = "@@NL_MESSAGE_ID@@"
ONE_CLICK_URL = "@@NL_ONE_CLICK_URL@@"
UNSUBSCRIBE_MAILTO = "@@NL_UNSUBSCRIBE_MAILTO@@"
DELIVERY_REFERENCE = "@@NL_DELIVERY_REF@@"

# The signed delivery reference (shared.verp.delivery_reference) in the two forms email
# providers hand back in their webhooks: Postmark turns ``X-PM-Metadata-<key>`` headers into
# the event's ``Metadata`` (postmarkapp.com, "Custom metadata FAQ": keys up to 20 characters,
# values up to 80), SendGrid turns the ``X-SMTPAPI`` header's ``unique_args`` into fields of
# each Event Webhook event ("Unique Arguments", SendGrid docs). Both providers strip these
# headers before delivery, so they are outside the DKIM-signed list; an MTA of our own passes
# them on, which shows the reader nothing the VERP return path does not already.
PROVIDER_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-PM-Metadata-delivery_id", DELIVERY_REFERENCE),
    ("X-SMTPAPI", '{"unique_args": {"delivery_id": "' + DELIVERY_REFERENCE + '"}}'),
)

MAX_LINE = 998
# Room left on a line for each marker it holds: a signed URL is about 150 bytes; 400 is generous.
MARKER_ALLOWANCE = 400
# A per-delivery reference after a tracked link ("/" and 20 characters, shared/reader_refs.py).
_ALLOWANCES = {placeholders.READER_REF: 32}
_MARKER_RE = re.compile(r"(@@NL_[A-Z_]+@@)")
_MARKER_BYTES_RE = re.compile(rb"(@@NL_[A-Z_]+@@)")
_CRLF = "\r\n"
_FOLDABLE = frozenset({"From", "Subject", "List-Id"})

# The seed publication's name (the default of NEWSLETTER_PUBLICATION_NAME) as its editions
# say it; the renderer's catalogs translate it the same way. A publication's own name is used
# as it is set, in every language.
SAMPLE_NAME = "Weekly Digest"
SAMPLE_NAMES: dict[str, str] = {
    "en": SAMPLE_NAME,
    "be": "Штотыднёвы дайджэст",
    "ru": "Еженедельный дайджест",
}


def sender_name(*, publication_name: str, from_name: str, language: str) -> str:
    """The ``From`` display name of a mail in ``language``.

    ``NEWSLETTER_PUBLICATION_NAME`` when it is set to the publication's own name; else a
    display name of its own in ``NEWSLETTER_FROM`` (how it was configured before the setting
    existed); else the seed's name in the mail's language.
    """
    for name in (publication_name.strip(), from_name.strip()):
        if name and name != SAMPLE_NAME:
            return name
    return SAMPLE_NAMES.get(language, SAMPLE_NAME)


class TemplateError(ValueError):
    """The edition cannot be turned into a message (bad header value, ...)."""


@dataclass(frozen=True)
class Marker:
    name: str
    context: Context


@dataclass(frozen=True)
class Base64Part:
    """A part body kept as text; substituted, then base64-encoded per recipient."""

    text: str
    context: Context


Piece = bytes | Marker | Base64Part


@dataclass(frozen=True)
class MessageTemplate:
    """The pieces of one edition's message; :meth:`render` fills one recipient's values."""

    pieces: tuple[Piece, ...]
    size_hint: int
    dot_safe: bool = True  # no line starts with "." (SMTP dot-stuffing can be skipped)

    @functools.cached_property
    def _slots(self) -> tuple[list[bytes], tuple[tuple[int, Marker | Base64Part], ...]]:
        """The literal pieces in place, and where each marker or base64 part goes: a render
        copies the list and fills only those (no type test per literal piece)."""
        literals = [p if isinstance(p, bytes) else b"" for p in self.pieces]
        slots = tuple((i, p) for i, p in enumerate(self.pieces) if not isinstance(p, bytes))
        return literals, slots

    def render(self, values: Mapping[str, str]) -> bytes:
        literals, slots = self._slots
        out = literals.copy()
        escaped: dict[str, bytes] = {}
        for index, piece in slots:
            if isinstance(piece, Marker):
                out[index] = marker_value(piece, values, escaped)
            else:
                out[index] = _base64_body(piece, values)
        return b"".join(out)

    def body_pieces(self) -> tuple[Piece, ...]:
        """The pieces after the header block's blank line (header markers all precede it)."""
        for index, piece in enumerate(self.pieces):
            if isinstance(piece, bytes) and b"\r\n\r\n" in piece:
                rest = piece.partition(b"\r\n\r\n")[2]
                return ((rest,) if rest else ()) + self.pieces[index + 1 :]
        return ()


def marker_value(marker: Marker, values: Mapping[str, str], escaped: dict[str, bytes]) -> bytes:
    """A marker's value as it goes into the message (HTML-escaped in HTML parts)."""
    raw = values.get(marker.name)
    if raw is None:
        return marker.name.encode()
    if marker.context == "html":
        if marker.name not in escaped:
            escaped[marker.name] = html.escape(raw, quote=True).encode()
        return escaped[marker.name]
    if marker.context == "header" and ("\n" in raw or "\r" in raw or "\0" in raw):
        raise TemplateError(f"header value for {marker.name} holds a line break")
    return raw.encode()


def _base64_body(part: Base64Part, values: Mapping[str, str]) -> bytes:
    def fill(match: re.Match[str]) -> str:
        raw = values.get(match.group(1))
        if raw is None:
            return match.group(1)
        return html.escape(raw, quote=True) if part.context == "html" else raw

    data = _MARKER_RE.sub(fill, part.text).encode()
    encoded = base64.b64encode(data)
    lines = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
    return b"\r\n".join(lines) + b"\r\n"


def _split(raw: bytes, context: Context) -> list[Piece]:
    pieces: list[Piece] = []
    for index, chunk in enumerate(_MARKER_BYTES_RE.split(raw)):
        if not chunk:
            continue
        if index % 2:
            pieces.append(Marker(chunk.decode(), context))
        else:
            pieces.append(chunk)
    return pieces


def wrap_lines(text: str, *, limit: int = MAX_LINE - 2) -> str | None:
    """Lines joined by CRLF, each under ``limit`` bytes after substitution; None if impossible.

    Breaks long lines at spaces (in HTML a line break is whitespace like a space), counting
    each marker at its largest substituted size.
    """
    out: list[str] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        rest = line
        while _cost(rest) > limit:
            cut = _break_at(rest, limit)
            if cut is None:
                return None
            out.append(rest[:cut].rstrip(" "))
            rest = rest[cut:].lstrip(" ")
        out.append(rest)
    return _CRLF.join(out)


def _cost(line: str) -> int:
    markers = _MARKER_RE.findall(line)
    return len(line.encode()) + sum(_ALLOWANCES.get(m, MARKER_ALLOWANCE) - len(m) for m in markers)


def _break_at(line: str, limit: int) -> int | None:
    """The index of the last space such that the head fits in ``limit``."""
    best = None
    position = line.find(" ")
    while position != -1:
        if position > 0 and _cost(line[:position]) <= limit:
            best = position
        else:
            break
        position = line.find(" ", position + 1)
    return best


def _part(content_type: str, body: str, context: Context) -> list[Piece]:
    wrapped = wrap_lines(body)
    if wrapped is not None:
        head = (
            f'Content-Type: {content_type}; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: 8bit\r\n\r\n"
        ).encode()
        return [head, *_split(wrapped.encode() + b"\r\n", context)]
    head = (
        f'Content-Type: {content_type}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    return [head, Base64Part(body, context)]


def encode_subject(subject: str) -> str:
    """The ``Subject`` value: plain ASCII as is, anything else RFC 2047 (UTF-8)."""
    clean = " ".join(subject.split())
    if clean.isascii():
        return clean
    return Header(clean, "utf-8", header_name="Subject").encode(linesep=_CRLF)


def display_from(*, name: str, address: str) -> str:
    """The ``From`` value: an ASCII display name quoted where RFC 5322 needs it (a comma, a
    quote), any other name as RFC 2047 encoded words of at most 75 characters, folded.

    ``formataddr`` alone makes one encoded word of any length, over RFC 2047's limit for a
    Cyrillic name of some 40 letters.
    """
    if any(c in name + address for c in "\r\n\0"):
        raise TemplateError("From holds a line break")
    if not address.isascii():
        raise TemplateError("From address is not ASCII")
    if not name or name.isascii():
        return email.utils.formataddr((name, address))
    words = Header(name, "utf-8", maxlinelen=76, header_name="From").encode(linesep=_CRLF)
    return f"{words}{_CRLF} <{address}>" if _CRLF in words else f"{words} <{address}>"


@dataclass(frozen=True)
class Envelope:
    """Per-edition header values (the same for every recipient of the edition)."""

    from_header: str
    subject: str
    content_language: str
    list_id: str
    list_name: str
    feedback_id: str
    list_unsubscribe: bool = True
    extra_headers: Sequence[tuple[str, str]] = ()


def build_template(*, envelope: Envelope, text: str, html_body: str) -> MessageTemplate:
    """Render the message once with markers where per-recipient values go."""
    boundary = f"=_nl_{uuid.uuid4().hex}"
    headers: list[tuple[str, str]] = [
        ("From", envelope.from_header),
        ("To", TO),
        ("Subject", encode_subject(envelope.subject)),
        ("Date", DATE),
        ("Message-ID", MESSAGE_ID),
        ("List-Id", f"{_list_name(envelope.list_name)} <{envelope.list_id}>"),
    ]
    if envelope.list_unsubscribe:
        headers += [
            ("List-Unsubscribe", f"<{ONE_CLICK_URL}>, <mailto:{UNSUBSCRIBE_MAILTO}>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ]
    headers += [
        ("Content-Language", envelope.content_language),
        ("Feedback-ID", envelope.feedback_id),
        *PROVIDER_HEADERS,
        *envelope.extra_headers,
        ("MIME-Version", "1.0"),
        ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
    ]
    for name, value in headers:
        # Encoded words may be folded (CRLF before white space), nothing else.
        unfolded = value.replace(_CRLF + " ", " ") if name in _FOLDABLE else value
        if any(c in unfolded for c in "\r\n\0"):
            raise TemplateError(f"{name} holds a line break")
    head = "".join(f"{name}: {value}{_CRLF}" for name, value in headers) + _CRLF
    pieces: list[Piece] = [*_split(head.encode(), "header")]
    pieces.append(f"--{boundary}\r\n".encode())
    pieces += _part("text/plain", text, "text")
    pieces.append(f"--{boundary}\r\n".encode())
    pieces += _part("text/html", html_body, "html")
    pieces.append(f"--{boundary}--\r\n".encode())
    merged = _merge(pieces)
    size = sum(len(p) for p in merged if isinstance(p, bytes))
    # Marker values never hold a line break nor start a line, and base64 lines never start
    # with a dot: only literal text can put a dot at the start of a line.
    dot_safe = not any(isinstance(p, bytes) and b"\r\n." in p for p in merged)
    return MessageTemplate(pieces=tuple(merged), size_hint=size, dot_safe=dot_safe)


def _list_name(name: str) -> str:
    if name.isascii():
        special = any(c in name for c in '()<>@,;:\\".[]')
        return f'"{email.utils.quote(name)}"' if special else name
    return Header(name, "utf-8", maxlinelen=76, header_name="List-Id").encode(linesep=_CRLF)


def _merge(pieces: list[Piece]) -> list[Piece]:
    merged: list[Piece] = []
    for piece in pieces:
        if isinstance(piece, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] = merged[-1] + piece
        else:
            merged.append(piece)
    return merged


BODY_MARKERS = placeholders.ALL
