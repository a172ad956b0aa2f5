"""Signed Message-IDs: a returned Message-ID proves the report is about a mail of ours.

The dispatcher's Message-IDs were guessable (``<d{delivery}.{send}@domain>``), so a report that
quoted one proved nothing. Each one now ends in a tag, a truncated HMAC of the key under the
suite's secret key: ``<{key}.{tag}@{domain}>``. Keys of deliveries start with
``d{delivery id}.`` (:func:`delivery_key`), so a verified Message-ID names its delivery without
a look-up by Message-ID. Tags are lower-case hex, as in :mod:`shared.verp`, because some
systems lower-case what they quote.
"""

from __future__ import annotations

import hashlib
import hmac
import re

_TAG_HEX = 16
_MAX_ID = 2**63 - 1
_SIGNED = re.compile(r"^<?(?P<key>[A-Za-z0-9._-]{1,200})\.(?P<tag>[0-9a-fA-F]{16})@[^\s<>@]+>?$")
_DELIVERY_KEY = re.compile(r"^d(?P<id>\d{1,19})\.")


def _tag(secret_key: str, key: str) -> str:
    digest = hmac.new(secret_key.encode(), f"message-id:{key}".encode(), hashlib.sha256)
    return digest.hexdigest()[:_TAG_HEX]


def delivery_key(delivery_id: int, suffix: str) -> str:
    """The key of one delivery's Message-ID, stable across its attempts."""
    return f"d{delivery_id}.{suffix}"


def signed_message_id(*, secret_key: str, key: str, domain: str) -> str:
    """``<{key}.{tag}@{domain}>``."""
    return f"<{key}.{_tag(secret_key, key)}@{domain}>"


def verified_key(*, secret_key: str, message_id: str) -> str | None:
    """The key of a Message-ID we signed, or None (not ours, unsigned or forged)."""
    match = _SIGNED.match(message_id.strip())
    if match is None:
        return None
    key, tag = match["key"], match["tag"].lower()
    for candidate in dict.fromkeys((key, key.lower())):
        if hmac.compare_digest(tag, _tag(secret_key, candidate)):
            return candidate
    return None


def delivery_from_message_id(*, secret_key: str, message_id: str) -> int | None:
    """The delivery a signed Message-ID names, or None."""
    key = verified_key(secret_key=secret_key, message_id=message_id)
    match = _DELIVERY_KEY.match(key or "")
    if match is None:
        return None
    delivery_id = int(match["id"])
    return delivery_id if 0 < delivery_id <= _MAX_ID else None
