"""Our own headers, found in the part of a report that returns (a copy of) our mail.

A complaint often names no recipient (providers redact it), and a report sent to a role
address proves nothing by what it claims. What can prove it is ours is what we put in the mail:
its signed ``Message-ID`` (``shared.message_ids``), its VERP ``Return-Path``
(``shared.verp``), and, as context for operators, its ``List-Id`` and ``Feedback-ID``.

:func:`find_references` reads them from ``message/rfc822`` (and ``message/global``) parts,
``text/rfc822-headers`` and ``message/rfc822-headers`` parts, the ``Original-Mail-From`` of an
ARF report, and header-looking lines of text parts (MTAs that paste the original headers into
the body). The envelope-ish headers of the report itself (``To``, ``Delivered-To``, ...) are
read too, for a VERP token. The walk is iterative, depth- and part-limited, and never raises:
pure code, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32

MAX_DEPTH = 8
MAX_PARTS = 200
MAX_TEXT = 200_000  # characters of one text part scanned for header lines
MAX_VALUES = 20  # of each kind

_ANGLE = re.compile(r"<([^<>\s]{1,300})>")
_ADDRESS = re.compile(r"[A-Za-z0-9._%+=-]{1,64}@[A-Za-z0-9.-]{1,253}")
_HEADER_LINE = re.compile(
    r"^[ \t>]*(message-id|list-id|feedback-id|return-path|original-mail-from|x-original-to|"
    r"delivered-to)[ \t]*:[ \t]*(.{1,500})$",
    re.IGNORECASE | re.MULTILINE,
)
_ORIGINAL_MAIL_FROM = re.compile(
    r"^original-mail-from[ \t]*:[ \t]*(.{1,500})$", re.IGNORECASE | re.MULTILINE
)
_ENVELOPE_HEADERS = ("To", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To")
_RETURNED_TYPES = {"message/rfc822", "message/global"}
_HEADER_TYPES = {"text/rfc822-headers", "message/rfc822-headers", "message/global-headers"}
_FEEDBACK_TYPES = {"message/feedback-report", "message/delivery-status"}


@dataclass(frozen=True)
class References:
    """What the report quotes of our mail; every tuple in order of appearance, no repeats."""

    message_ids: tuple[str, ...] = ()  # "<...>" of the returned message(s)
    addresses: tuple[str, ...] = ()  # Return-Path, Original-Mail-From, envelope-ish To
    list_ids: tuple[str, ...] = ()
    feedback_ids: tuple[str, ...] = ()


class _Collector:
    def __init__(self) -> None:
        self.values: dict[str, dict[str, None]] = {
            "message_ids": {},
            "addresses": {},
            "list_ids": {},
            "feedback_ids": {},
        }

    def add(self, kind: str, value: str) -> None:
        found = self.values[kind]
        if value and len(found) < MAX_VALUES:
            found.setdefault(value, None)

    def header(self, name: str, value: str) -> None:
        name = name.lower()
        if name == "message-id":
            for token in _ANGLE.findall(value)[:2]:
                self.add("message_ids", f"<{token}>")
        elif name == "list-id":
            tokens = _ANGLE.findall(value)
            self.add("list_ids", tokens[0] if tokens else value.strip()[:300])
        elif name == "feedback-id":
            self.add("feedback_ids", value.strip()[:300])
        else:  # return-path, original-mail-from, envelope-ish recipients
            for address in _ADDRESS.findall(value)[:5]:
                self.add("addresses", address)

    def headers_of(self, message: Message) -> None:
        for name, value in message.items():
            lowered = name.lower()
            if lowered in {"message-id", "list-id", "feedback-id", "return-path"}:
                self.header(lowered, _text(value))

    def text_lines(self, text: str) -> None:
        for match in _HEADER_LINE.finditer(text[:MAX_TEXT]):
            self.header(match.group(1), match.group(2))

    def result(self) -> References:
        return References(**{k: tuple(v) for k, v in self.values.items()})


def _text(value: object) -> str:
    return " ".join(str(value or "").split())


def _payload_text(part: Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # a broken transfer encoding: read nothing from it
        return ""
    if isinstance(payload, bytes):
        return payload[: MAX_TEXT * 2].decode("utf-8", errors="replace")
    raw = part.get_payload()
    return raw[:MAX_TEXT] if isinstance(raw, str) else ""


def find_references(report: bytes | Message) -> References:
    """Our headers quoted anywhere in ``report`` (see the module docstring); never raises."""
    collected = _Collector()
    try:
        message = (
            report if isinstance(report, Message) else message_from_bytes(report, policy=compat32)
        )
        for name in _ENVELOPE_HEADERS:
            for value in message.get_all(name) or []:
                collected.header("to", _text(value))
        _walk(message, collected)
    except Exception:  # noqa: S110 - best effort: what was found so far still counts
        pass
    return collected.result()


def _walk(message: Message, collected: _Collector) -> None:
    # (part, depth, returned): ``returned`` parts are copies of our mail, their headers count.
    stack: list[tuple[Message, int, bool]] = [(message, 0, False)]
    seen = 0
    while stack and seen < MAX_PARTS:
        part, depth, returned = stack.pop()
        seen += 1
        if returned:
            collected.headers_of(part)
        kind = part.get_content_type()
        payload = part.get_payload()
        # The parser reads message/* bodies as messages: a list of them, not text.
        inner = [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []
        if kind in _HEADER_TYPES:
            _header_part(part, inner, collected)
        elif kind in _FEEDBACK_TYPES:
            _report_part(part, inner, collected)
        elif inner:
            if depth < MAX_DEPTH:
                returned_inside = kind in _RETURNED_TYPES
                stack.extend((child, depth + 1, returned_inside) for child in reversed(inner))
        elif part.get_content_maintype() == "text":
            collected.text_lines(_payload_text(part))


def _header_part(part: Message, blocks: list[Message], collected: _Collector) -> None:
    """``text/rfc822-headers`` (text) or ``message/rfc822-headers`` (parsed as a message)."""
    for block in blocks:
        collected.headers_of(block)
    if not blocks:
        text = _payload_text(part)
        parsed = HeaderParser(policy=compat32).parsestr(text[:MAX_TEXT], headersonly=True)
        collected.headers_of(parsed)
        collected.text_lines(text)  # headers after a blank line or indented ones


def _report_part(part: Message, blocks: list[Message], collected: _Collector) -> None:
    """An ARF ``Original-Mail-From`` (our return path) in a feedback or status report."""
    for block in blocks:
        for value in block.get_all("Original-Mail-From") or []:
            collected.header("original-mail-from", _text(value))
    if not blocks:
        for match in _ORIGINAL_MAIL_FROM.finditer(_payload_text(part)):
            collected.header("original-mail-from", match.group(1))
