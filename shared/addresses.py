"""Address helpers every service needs: a stable hash and a masked form for logs."""

from __future__ import annotations

import hashlib


def address_hash(address: str) -> str:
    """SHA-256 of the normalized address: joins tables and logs without the address itself."""
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()


def address_domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def mask_email(address: str) -> str:
    """``alice@example.org`` -> ``a***@example.org``: enough to debug, not enough to leak."""
    local, sep, domain = address.rpartition("@")
    if not sep:
        return "***"
    return f"{local[:1]}***@{domain}"
