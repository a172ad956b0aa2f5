"""Limits that keep hostile input from crashing an intake or looping a sender.

JSON bodies: a size cap and a nesting cap (deeper than any provider's notice; Python's decoder
would otherwise raise RecursionError far down). Mail: a cheap scan of the raw bytes before any
parsing, so a report built to exhaust the MIME parser (thousands of nested parts) is stored as
unreadable instead of being parsed; and integers from outside are bounded to 63 bits.
"""

from __future__ import annotations

import json
import re
from typing import Any

from services.bounces.errors import BodyTooLarge, WebhookRejected

MAX_JSON_DEPTH = 32
MAX_ID = 2**63 - 1
# Real reports have a handful of parts; these are far above any we have seen and far below
# what makes the stdlib parser slow or recurse too deep.
MAX_MIME_PARTS = 500
MAX_MIME_CONTAINERS = 40  # multipart/* and message/* parts: their nesting is the danger

_CONTENT_TYPE = re.compile(
    rb"^content-type:[ \t]*(?:\r?\n[ \t]+)?([a-z0-9!#$&.+^_-]+)/", re.I | re.M
)


def load_json(body: bytes, *, max_bytes: int) -> Any:
    """Decode a webhook body, refusing oversized, non-JSON or too deeply nested ones."""
    if len(body) > max_bytes:
        raise BodyTooLarge(f"body over {max_bytes} bytes")
    try:
        value = json.loads(body)
    except RecursionError as err:
        raise WebhookRejected("JSON nested too deeply") from err
    except ValueError as err:  # also integers over Python's digit limit
        raise WebhookRejected("body is not JSON") from err
    check_depth(value)
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def check_depth(value: Any, *, limit: int = MAX_JSON_DEPTH) -> None:
    """Raise :class:`WebhookRejected` if containers nest deeper than ``limit`` (no recursion),
    or if a string holds a lone surrogate (``"\\ud800"`` is valid JSON but no UTF-8 text: it
    could be neither hashed, logged nor stored)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise WebhookRejected("JSON string is not Unicode text (lone surrogate)")
            continue
        if isinstance(item, dict):
            stack.extend((key, depth) for key in item)
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            raise WebhookRejected(f"JSON nested deeper than {limit}")
        stack.extend((child, depth + 1) for child in children)


def bounded_id(value: object) -> int | None:
    """A caller-supplied numeric id: None when absent or not a number, 4xx when out of range."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip()
        if not text.isascii() or not text.isdigit():
            return None
        if len(text) > 19:
            raise WebhookRejected("id out of range")
        number = int(text)
    if not 0 < number <= MAX_ID:
        raise WebhookRejected("id out of range")
    return number


def mime_problem(data: bytes) -> str | None:
    """Why a mail is too complex to parse safely, or None. Only counts ``Content-Type`` lines."""
    containers = 0
    for parts, match in enumerate(_CONTENT_TYPE.finditer(data), start=1):
        if match.group(1).lower() in {b"multipart", b"message"}:
            containers += 1
        if containers > MAX_MIME_CONTAINERS:
            return f"more than {MAX_MIME_CONTAINERS} nested MIME containers"
        if parts > MAX_MIME_PARTS:
            return f"more than {MAX_MIME_PARTS} MIME parts"
    return None
