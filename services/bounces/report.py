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
from email.parser import BytesHeaderParser, HeaderParser
from html.parser import HTMLParser

from services.bounces import patterns

_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*):[ \t]*(.*)$")
_DSN_IN_TEXT = re.compile(r"^(?:final|original)-recipient:", re.IGNORECASE | re.MULTILINE)
_MAX_TEXT = 20_000
_FEEDBACK_FIELDS = re.compile(r"^feedback-type:", re.IGNORECASE | re.MULTILINE)
_ARF_COMPANION = re.compile(
    r"^(?:user-agent|version|original-rcpt-to|arrival-date|source-ip|reported-domain):",
    re.IGNORECASE | re.MULTILINE,
)


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


# The header of a message pasted inline, whatever marker line precedes it (localized ones
# such as "Kopie zprávy", or none): header fields at the start of a line (RFC 5322 2.2), at
# least three different ones within a dozen lines, one of them a trace or identification
# field (RFC 5322 3.6.4, 3.6.7; RFC 6376's DKIM-Signature; RFC 2045's MIME-Version) that a
# bounce's own summary ("To: ... Subject: ...") never shows. A DSN's fields (RFC 3464
# Reporting-MTA, Final-Recipient, Status, Diagnostic-Code...) are not message header fields.
_MESSAGE_FIELD = re.compile(
    r"^(return-path|received|dkim-signature|arc-[a-z-]+|authentication-results|message-id|"
    r"mime-version|from|to|cc|subject|date|reply-to|sender|list-[a-z-]+):",
    re.IGNORECASE,
)
_TRACE_FIELDS = {
    "return-path", "received", "dkim-signature", "message-id", "mime-version",
    "authentication-results",
}  # fmt: skip
_HEADER_WINDOW = 12


def _header_block_at(lines: list[str], index: int) -> bool:
    names = {
        found.group(1).lower()
        for line in lines[index : index + _HEADER_WINDOW]
        if (found := _MESSAGE_FIELD.match(line))
    }
    trace = any(n in _TRACE_FIELDS or n.startswith("arc-") for n in names)
    return len(names) >= 3 and trace


def _original_start(lines: list[str]) -> tuple[int, bool] | None:
    """Where an inline original message starts: (line, after a marker line) or None."""
    for index, line in enumerate(lines):
        if index == 0:
            continue
        if patterns.ORIGINAL_MESSAGE_MARKER.match(line):
            return index, True
        if _MESSAGE_FIELD.match(line) and _header_block_at(lines, index):
            return index, False
    return None


def _cut_at_original(text: str) -> str:
    """The report's own words: an original message pasted inline (its header says nothing of
    the failure, and our own DKIM-Signature in it is no "DKIM" refusal) is cut off."""
    lines = text.replace("\r\n", "\n").split("\n")
    start = _original_start(lines)
    return "\n".join(lines[: start[0]] if start else lines)


_MAX_PARTS = 500  # a real report has a handful; past this, stop and use what was found
_MAX_DEPTH = 20
# More multipart boundaries than any real report declares: do not even build the tree.
_BOUNDARY = re.compile(rb"boundary\s*=", re.IGNORECASE)
_MAX_BOUNDARIES = 100


def _walk(message: Message, parsed: ParsedBounce, texts: list[str], htmls: list[str]) -> None:
    """Visit the MIME tree in document order with an explicit stack (no recursion)."""
    stack: list[tuple[Message, int, bool]] = [(message, 0, False)]
    visited = 0
    while stack and visited < _MAX_PARTS:
        part, depth, inside_original = stack.pop()
        visited += 1
        for child in reversed(_visit(part, parsed, texts, htmls, inside_original)):
            if depth < _MAX_DEPTH:
                stack.append((child[0], depth + 1, child[1]))


def _visit(  # noqa: PLR0911, PLR0912 - one branch per MIME type of a report
    part: Message, parsed: ParsedBounce, texts: list[str], htmls: list[str], inside: bool
) -> list[tuple[Message, bool]]:
    """Read one part; return its children to visit (with "inside a returned message")."""
    ctype = part.get_content_type()
    if ctype in {"message/delivery-status", "message/global-delivery-status"}:
        if not inside:
            parsed.dsn.extend(_recipients_from_blocks(_blocks_of_part(part)))
        return []
    if ctype == "message/feedback-report" or _is_feedback_text(part, ctype):
        # RFC 5965: a feedback report wherever it sits (some forwarders nest it).
        if parsed.feedback is None:
            merged: dict[str, str] = {}
            for block in _blocks_of_part(part):
                merged.update(block)
            parsed.feedback = merged
        return []
    if ctype in {"message/rfc822", "message/global"}:
        inner = part.get_payload()
        if not (isinstance(inner, list) and inner and isinstance(inner[0], Message)):
            return []
        first = inner[0]
        if first.get_content_type() == "multipart/report" and not parsed.dsn and not inside:
            return [(first, False)]  # a report forwarded as an attachment
        if parsed.original is None:
            parsed.original = first
        # An ARF forwarded inside a message: look for its feedback part, nothing else.
        return [(first, True)] if first.is_multipart() else []
    if ctype in {"text/rfc822-headers", "text/global-headers"}:
        if parsed.original is None:
            parsed.original = HeaderParser().parsestr(_payload_text(part))
        return []
    if part.is_multipart():
        payload = part.get_payload()
        if isinstance(payload, list):
            return [(sub, inside) for sub in payload if isinstance(sub, Message)]
        return []
    if inside:
        return []
    if ctype == "text/html":
        htmls.append(_payload_text(part))
    elif part.get_content_maintype() == "text" or ctype == "application/octet-stream":
        texts.append(_payload_text(part))
    return []


def _is_feedback_text(part: Message, ctype: str) -> bool:
    """A feedback report sent as ``text/plain`` (seen from some feedback loops)."""
    if ctype != "text/plain":
        return False
    head = _payload_text(part)[:2000]
    return bool(_FEEDBACK_FIELDS.search(head)) and bool(_ARF_COMPANION.search(head))


def _message_of(data: bytes) -> tuple[Message, bool]:
    """The parsed message and whether its MIME tree was parsed; headers and the raw body
    when the tree nests too deep for the ``email`` parser (it recurses once per level)."""
    if len(_BOUNDARY.findall(data[:2_000_000])) > _MAX_BOUNDARIES:
        return BytesHeaderParser(policy=policy.compat32).parsebytes(data, headersonly=True), False
    try:
        return message_from_bytes(data, policy=policy.compat32), True
    except RecursionError:
        return BytesHeaderParser(policy=policy.compat32).parsebytes(data, headersonly=True), False


_MIME_FRAMING = re.compile(r"^(?:--\S*|content-[\w-]+:.*|\s+boundary=.*)$", re.IGNORECASE)


def _without_mime_framing(body: str) -> str:
    """The words of a body the parser could not split: boundary and part-header lines gone."""
    lines = (line for line in body.replace("\r\n", "\n").split("\n"))
    return "\n".join(line for line in lines if not _MIME_FRAMING.match(line))[:_MAX_TEXT]


def parse(data: bytes) -> ParsedBounce:
    """Parse raw message bytes; never raises on malformed input."""
    message, complete = _message_of(data)
    parsed = ParsedBounce(message=message)
    parsed.subject = parsed.header("Subject")
    parsed.sender = parsed.header("From")
    texts: list[str] = []
    htmls: list[str] = []
    if complete:
        _walk(message, parsed, texts, htmls)
    else:
        raw = message.get_payload()
        texts.append(_without_mime_framing(raw if isinstance(raw, str) else ""))
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
    start = _original_start(lines)
    if start is None:
        return None
    index, after_marker = start
    rest = "\n".join(lines[index + 1 if after_marker else index :]).lstrip("\n")
    headers = HeaderParser().parsestr(rest, headersonly=True)
    return headers if len(headers.keys()) >= 2 else None
