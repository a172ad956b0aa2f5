"""Reading a bounce, whatever its shape, into the parts the classifier reasons about.

RFC 3464 ``message/delivery-status`` blocks, RFC 5965 ``message/feedback-report`` fields, the
human-readable text (cut where the copy of the original message starts), and the headers of
the original message when the bounce returns them. Broken MIME is common in real bounces, so
every step falls back to reading text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.errors import MessageError
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from html.parser import HTMLParser

from services.bounces import patterns

_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*):[ \t]*(.*)$")
_DSN_IN_TEXT = re.compile(r"^(?:final|original)-recipient:", re.IGNORECASE | re.MULTILINE)
_MAX_TEXT = 20_000


@dataclass
class RecipientFields:
    """One per-recipient block of a delivery status notification."""

    recipient: str = ""
    original_recipient: str = ""
    action: str = ""
    status: str = ""
    diagnostic: str = ""


@dataclass
class ParsedBounce:
    message: Message
    subject: str = ""
    sender: str = ""
    dsn: list[RecipientFields] = field(default_factory=list)
    feedback: dict[str, str] | None = None
    human_text: str = ""
    original: Message | None = None

    def header(self, name: str) -> str:
        return decoded(self.message.get(name, ""))


def decoded(value: object) -> str:
    """A header value as text, RFC 2047 words decoded, folding removed."""
    raw = str(value or "")
    try:
        text = str(make_header(decode_header(raw)))
    except (ValueError, LookupError, UnicodeError, MessageError):
        text = raw
    return " ".join(text.split())


def _payload_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("latin-1", errors="replace")


class _TextOfHtml(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[str] = []

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"br", "p", "div", "tr", "li"}:
            self.chunks.append("\n")


def html_to_text(html: str) -> str:
    parser = _TextOfHtml()
    parser.feed(html)
    return "".join(parser.chunks)


def parse_fields(text: str) -> list[dict[str, str]]:
    """``Key: value`` blocks separated by blank lines (continuation lines folded in)."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
                current, last = {}, ""
            continue
        if line[:1] in {" ", "\t"} and last:
            current[last] += " " + line.strip()
            continue
        match = _FIELD.match(line)
        if match:
            last = match.group(1).lower()
            current[last] = match.group(2).strip()
    if current:
        blocks.append(current)
    return blocks


def _address_value(value: str) -> str:
    """``rfc822; <Alice@Example.org>`` -> ``Alice@Example.org``."""
    _, sep, rest = value.partition(";")
    return (rest if sep else value).strip().strip("<>").strip()


def _recipients_from_blocks(blocks: list[dict[str, str]]) -> list[RecipientFields]:
    found: list[RecipientFields] = []
    for block in blocks:
        final = block.get("final-recipient", "") or block.get("x-actual-recipient", "")
        original = block.get("original-recipient", "")
        if not final and not original:
            continue
        found.append(
            RecipientFields(
                recipient=_address_value(final or original),
                original_recipient=_address_value(original),
                action=block.get("action", "").split()[0].lower() if block.get("action") else "",
                status=block.get("status", ""),
                diagnostic=block.get("diagnostic-code", "") or block.get("x-diagnostic", ""),
            )
        )
    return found


def _blocks_of_part(part: Message) -> list[dict[str, str]]:
    payload = part.get_payload()
    if isinstance(payload, list):  # the email package parsed the blocks as messages
        return [
            {k.lower(): decoded(v) for k, v in block.items()}
            for block in payload
            if isinstance(block, Message)
        ]
    return parse_fields(_payload_text(part))


def _cut_at_original(text: str) -> str:
    lines = text.replace("\r\n", "\n").split("\n")
    for index, line in enumerate(lines):
        if index > 0 and patterns.ORIGINAL_MESSAGE_MARKER.match(line):
            return "\n".join(lines[:index])
    return "\n".join(lines)


def _walk(  # noqa: PLR0912 - one branch per MIME type of a report
    message: Message, parsed: ParsedBounce, texts: list[str], htmls: list[str]
) -> None:
    ctype = message.get_content_type()
    if ctype in {"message/delivery-status", "message/global-delivery-status"}:
        parsed.dsn.extend(_recipients_from_blocks(_blocks_of_part(message)))
        return
    if ctype == "message/feedback-report":
        merged: dict[str, str] = {}
        for block in _blocks_of_part(message):
            merged.update(block)
        parsed.feedback = merged
        return
    if ctype in {"message/rfc822", "message/global"}:
        inner = message.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            if inner[0].get_content_type() == "multipart/report" and not parsed.dsn:
                _walk(inner[0], parsed, texts, htmls)  # a bounce forwarded as an attachment
            else:
                parsed.original = parsed.original or inner[0]
        return
    if ctype in {"text/rfc822-headers", "text/global-headers"}:
        if parsed.original is None:
            parsed.original = HeaderParser().parsestr(_payload_text(message))
        return
    if message.is_multipart():
        payload = message.get_payload()
        if isinstance(payload, list):
            for sub in payload:
                if isinstance(sub, Message):
                    _walk(sub, parsed, texts, htmls)
        return
    if ctype == "text/html":
        htmls.append(_payload_text(message))
    elif message.get_content_maintype() == "text" or ctype == "application/octet-stream":
        texts.append(_payload_text(message))


def parse(data: bytes) -> ParsedBounce:
    """Parse raw message bytes; never raises on malformed input."""
    message = message_from_bytes(data, policy=policy.compat32)
    parsed = ParsedBounce(message=message)
    parsed.subject = parsed.header("Subject")
    parsed.sender = parsed.header("From")
    texts: list[str] = []
    htmls: list[str] = []
    _walk(message, parsed, texts, htmls)
    if not texts and htmls:
        texts = [html_to_text(h) for h in htmls]
    human = "\n".join(_cut_at_original(t) for t in texts)[:_MAX_TEXT]
    parsed.human_text = human
    if not parsed.dsn:
        whole = "\n".join(texts)
        if _DSN_IN_TEXT.search(whole):
            parsed.dsn = _recipients_from_blocks(parse_fields(whole))
    if parsed.original is None:
        parsed.original = _original_from_text("\n".join(texts))
    return parsed


def _original_from_text(text: str) -> Message | None:
    """Headers of an original message pasted inline after a marker line."""
    lines = text.replace("\r\n", "\n").split("\n")
    for index, line in enumerate(lines):
        if index > 0 and patterns.ORIGINAL_MESSAGE_MARKER.match(line):
            rest = "\n".join(lines[index + 1 :]).lstrip("\n")
            headers = HeaderParser().parsestr(rest, headersonly=True)
            if len(headers.keys()) >= 2:
                return headers
            return None
    return None
