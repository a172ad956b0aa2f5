"""Line lengths of rendered HTML: inlined Cyrillic paragraphs easily pass SMTP's 998-byte limit.

:func:`wrap_html` turns some existing whitespace into line breaks, which never changes how the
HTML renders: only spaces in text (outside ``<pre>``) and spaces between attributes (outside
quoted values) are used, so URLs, attribute values and preformatted text stay intact. The result
can go out as 8bit (or quoted-printable) without a line over the limit.
"""

from __future__ import annotations

import re

SMTP_LINE_LIMIT = 998
DEFAULT_WIDTH = 120

_PARTS = re.compile(rb"<[^>]*>|[^<]+|<")
_TAG_SPACES = re.compile(rb"\"[^\"]*\"|'[^']*'|( )")
_PRE_OPEN = re.compile(rb"<(pre|textarea)\b", re.IGNORECASE)
_PRE_CLOSE = re.compile(rb"</(pre|textarea)\b", re.IGNORECASE)


def _candidates(data: bytes) -> tuple[list[int], list[int]]:
    """Positions of breakable spaces and of existing newlines."""
    spaces: list[int] = []
    in_pre = False
    for match in _PARTS.finditer(data):
        part, start = match.group(), match.start()
        if part.startswith(b"<") and len(part) > 1:
            if _PRE_OPEN.match(part):
                in_pre = True
            elif _PRE_CLOSE.match(part):
                in_pre = False
            spaces.extend(start + m.start(1) for m in _TAG_SPACES.finditer(part) if m.group(1))
        elif not in_pre:
            offset = part.find(b" ")
            while offset != -1:
                spaces.append(start + offset)
                offset = part.find(b" ", offset + 1)
    newlines = [m.start() for m in re.finditer(rb"\n", data)]
    return spaces, newlines


def wrap_html(html: str, *, width: int = DEFAULT_WIDTH) -> str:
    """Break lines longer than ``width`` bytes at whitespace that HTML treats as a space."""
    data = bytearray(html.encode("utf-8"))
    spaces, newlines = _candidates(bytes(data))
    events = sorted([(p, 1) for p in spaces] + [(p, 0) for p in newlines])
    line_start, previous = 0, -1
    breaks: list[int] = []
    for position, is_space in events:
        if not is_space:
            line_start, previous = position + 1, -1
            continue
        if position - line_start > width and previous >= 0:
            breaks.append(previous)
            line_start = previous + 1
        previous = position
    if len(data) - line_start > width and previous >= line_start:
        breaks.append(previous)
    for position in breaks:
        data[position] = 0x0A
    return data.decode("utf-8")


def longest_line(text: str) -> int:
    """Bytes in the longest line (without its line ending)."""
    return max((len(line.encode("utf-8")) for line in text.splitlines()), default=0)
