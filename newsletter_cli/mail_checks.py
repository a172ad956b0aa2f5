"""What every delivered mail must satisfy, checked by the demo and the end-to-end test."""

from __future__ import annotations

import re

from newsletter_cli.mailbox_reader import StoredMail

REQUIRED_HEADERS = ("Message-ID", "Date", "From", "To", "Subject")
_HTML_LANG = re.compile(r"<html[^>]*\blang=[\"']?([a-zA-Z-]+)", re.IGNORECASE)


TRANSACTIONAL_KINDS = ("confirmation", "welcome", "goodbye")


def kind_of(mail: StoredMail) -> str:
    """``confirmation``, ``welcome``, ``goodbye`` or ``issue``, from the mail's Feedback-ID.

    The dispatcher puts the campaign first in ``Feedback-ID`` (``<campaign>:<language>:...``):
    a transactional kind for transactional mail, the send's id for an issue.
    """
    campaign = str(mail.message["Feedback-ID"] or "").split(":", 1)[0]
    return campaign if campaign in TRANSACTIONAL_KINDS else "issue"


def problems_of(mail: StoredMail, language: str) -> list[str]:
    """Every way ``mail`` falls short of a well-formed mail in ``language`` (empty: none)."""
    message = mail.message
    problems = [f"defect {type(defect).__name__}" for defect in message.defects]
    for part in message.walk():
        problems += [f"part defect {type(defect).__name__}" for defect in part.defects]
    problems += [f"missing {name}" for name in REQUIRED_HEADERS if message[name] is None]
    content_types = {part.get_content_type() for part in message.walk()}
    problems += [
        f"no {kind} part" for kind in ("text/plain", "text/html") if kind not in content_types
    ]
    if mail.language.split("-")[0].lower() != language:
        problems.append(f"Content-Language {mail.language!r}, expected {language!r}")
    html_lang = _HTML_LANG.search(mail.html() if "text/html" in content_types else "")
    if html_lang is None or html_lang.group(1).split("-")[0].lower() != language:
        problems.append(f"<html lang> is {html_lang.group(1) if html_lang else None!r}")
    raw_subject = _raw_header(mail, "Subject")
    if language != "en" and "=?" not in raw_subject:
        problems.append("non-ASCII subject is not RFC 2047-encoded")
    return problems


def _raw_header(mail: StoredMail, name: str) -> str:
    raw = mail.path.read_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].decode("ascii", "replace")
    match = re.search(rf"^{name}:(.*(?:\r?\n[ \t].*)*)", head, re.IGNORECASE | re.MULTILINE)
    return match.group(1) if match else ""
