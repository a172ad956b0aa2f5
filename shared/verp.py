"""Signed VERP return paths and mailto unsubscribe addresses.

``bounces+<delivery id>-<signature>@<domain>`` identifies the delivery a bounce is about;
``unsubscribe+<subscriber id>-<signature>@<domain>`` is the mailto ``List-Unsubscribe``
address; ``<delivery id>-<signature>`` (:func:`delivery_reference`) names a delivery in a
provider's metadata. Signatures are a truncated HMAC in lower-case hex: some MTAs lower-case
local parts, and the whole local part stays well under 64 characters.
"""

from __future__ import annotations

import hashlib
import hmac
import re

_SIGNATURE_HEX = 16
_LOCAL = re.compile(r"^(?P<kind>bounces|unsubscribe)\+(?P<id>\d{1,18})-(?P<sig>[0-9a-f]+)$")


def _signature(secret_key: str, kind: str, ident: int) -> str:
    digest = hmac.new(secret_key.encode(), f"{kind}:{ident}".encode(), hashlib.sha256)
    return digest.hexdigest()[:_SIGNATURE_HEX]


def _address(secret_key: str, kind: str, ident: int, domain: str) -> str:
    return f"{kind}+{ident}-{_signature(secret_key, kind, ident)}@{domain}"


def _parse(secret_key: str, kind: str, address: str) -> int | None:
    local = address.strip().strip("<>").rpartition("@")[0].lower()
    match = _LOCAL.match(local)
    if match is None or match["kind"] != kind:
        return None
    ident = int(match["id"])
    if not hmac.compare_digest(match["sig"], _signature(secret_key, kind, ident)):
        return None
    return ident


def return_path(*, secret_key: str, delivery_id: int, domain: str) -> str:
    """The envelope sender (``MAIL FROM``) of one delivery."""
    return _address(secret_key, "bounces", delivery_id, domain)


def delivery_from_return_path(*, secret_key: str, address: str) -> int | None:
    """The delivery id of a VERP address, or None if it is not one of ours or is forged."""
    return _parse(secret_key, "bounces", address)


def unsubscribe_mailto(*, secret_key: str, subscriber_id: int, domain: str) -> str:
    return _address(secret_key, "unsubscribe", subscriber_id, domain)


def subscriber_from_unsubscribe_mailto(*, secret_key: str, address: str) -> int | None:
    return _parse(secret_key, "unsubscribe", address)


_REFERENCE = re.compile(r"^(?P<id>\d{1,18})-(?P<sig>[0-9a-f]{16})$")


def delivery_reference(*, secret_key: str, delivery_id: int) -> str:
    """``<id>-<signature>``: a delivery id to hand a provider as metadata (custom arg)."""
    return f"{delivery_id}-{_signature(secret_key, 'reference', delivery_id)}"


def delivery_from_reference(*, secret_key: str, value: str) -> int | None:
    """The delivery id of a signed reference, or None if unsigned or forged."""
    match = _REFERENCE.match(value.strip().lower())
    if match is None:
        return None
    ident = int(match["id"])
    if not hmac.compare_digest(match["sig"], _signature(secret_key, "reference", ident)):
        return None
    return ident
