"""RFC 3463 enhanced status codes and RFC 5321 basic reply codes found in replies and bounces.

RFC 3463: ``class.subject.detail``; class 2 success, 4 persistent transient, 5 permanent;
subjects 0-7 (other, addressing, mailbox, mail system, network/routing, protocol, content,
security/policy). RFC 2034 puts the enhanced code right after the basic code of a reply.
"""

from __future__ import annotations

import re

# Subjects are 0-7 (RFC 3463); not followed by ".<digit>" so IP addresses do not match.
ENHANCED = re.compile(r"(?<![\d.])([245])\.([0-7])\.(\d{1,3})(?!\d|\.\d)")
# A basic reply code at the start of a reply ("550 ", "550-", "#550") or after "said:".
BASIC = re.compile(r"(?:^|[\s#(:\[])([245][0-5]\d)(?=[\s\-:)\]]|$)")
# A Qmail/Yahoo style code in parentheses: "(#5.1.1)".
HASHED = re.compile(r"#\s*([245]\.[0-7]\.\d{1,3})")
FAILURE = re.compile(r"(?<![\d.])([45])\.([0-7])\.(\d{1,3})(?!\d|\.\d)")


def normalize(status: str) -> str:
    """``"5.1.1 (Bad destination mailbox)"`` -> ``"5.1.1"``; empty if there is no code."""
    match = ENHANCED.search(status or "")
    return ".".join(match.groups()) if match else ""


def find_enhanced(text: str) -> str:
    """The first enhanced status code in ``text`` (``""`` if none)."""
    match = HASHED.search(text) or ENHANCED.search(text)
    if match is None:
        return ""
    return normalize(match.group(0).lstrip("#").strip())


def find_failure(text: str) -> str:
    """The first 4.x.x or 5.x.x code in free text (a 2.x.x there is usually a version number)."""
    match = HASHED.search(text)
    if match and match.group(1)[0] in "45":
        return normalize(match.group(1))
    match = FAILURE.search(text)
    return ".".join(match.groups()) if match else ""


def find_basic(text: str) -> int | None:
    """The first SMTP reply code in ``text``, as an int, or None."""
    for match in BASIC.finditer(text):
        code = int(match.group(1))
        if code in {250, 251, 252} or code >= 400:
            return code
    return None


def find_basic_failure(text: str) -> int | None:
    """The first 4yz or 5yz reply code in ``text``. In a session transcript quoted by a
    failure report, 2yz replies are the commands that succeeded before the one that failed
    (RFC 5321 4.2.1: 2yz is Positive Completion), so they are not the report's status."""
    for match in BASIC.finditer(text):
        code = int(match.group(1))
        if code >= 400:
            return code
    return None


def more_specific(status: str, candidate: str) -> str:
    """Prefer ``candidate`` when ``status`` is empty or a generic ``X.0.0`` of the same class."""
    if not status:
        return candidate
    if candidate and status.endswith(".0.0") and candidate[0] == status[0] and candidate != status:
        return candidate
    return status


def from_basic(code: int | None) -> str:
    """A coarse enhanced status for a basic reply code (``552`` is a storage problem)."""
    if code is None:
        return ""
    if code == 552:
        return "5.2.2"
    if code == 452:
        return "4.2.2"
    if code >= 500:
        return "5.0.0"
    if code >= 400:
        return "4.0.0"
    return "2.0.0"


def status_of_reply(code: int, reply: str) -> str:
    """The enhanced status of one SMTP reply: its own code when its class agrees with the
    basic code (RFC 2034 section 3), else the coarse code of the basic one."""
    enhanced = find_enhanced(reply)
    if enhanced and enhanced[0] == str(code)[0]:
        return enhanced
    return from_basic(code)
