"""The per-delivery reference of per-reader mode (``NEWSLETTER_PER_READER_ANALYTICS=true``).

Only the mail of a reader who consented carries it: the dispatcher fills the
``@@NL_READER_REF@@`` marker the renderer put after each tracked link with ``/{ref}``, and
with nothing for everyone else, so the links of a reader who did not consent are the aggregate
links, byte for byte. The reference is a compact token of :class:`shared.tokens.TokenSigner`
(purpose ``reader``): a version byte and the delivery id (48 bits), with the first 8 bytes of
their HMAC-SHA256, base64url, 20 characters, one spelling per token. It names the delivery,
never the address; the renderer turns it into a subscriber only when it writes the click, and
only while that subscriber's consent stands.
"""

from __future__ import annotations

import struct

from shared.tokens import Purpose, TokenError, TokenSigner

_PAYLOAD = struct.Struct(">BHI")  # version, delivery id high 16 bits, low 32 bits
VERSION = 1
MAX_DELIVERY_ID = 2**48 - 1


class ReaderRefs:
    """Mints (dispatcher) and checks (renderer) per-delivery references."""

    def __init__(self, signer: TokenSigner) -> None:
        self._signer = signer

    def mint(self, delivery_id: int) -> str:
        if not 0 < delivery_id <= MAX_DELIVERY_ID:
            raise ValueError("delivery id out of range")
        data = _PAYLOAD.pack(VERSION, delivery_id >> 32, delivery_id & 0xFFFFFFFF)
        return self._signer.sign_compact(Purpose.READER, data)

    def check(self, ref: str) -> int | None:
        """The delivery id of an authentic reference, else None."""
        try:
            data = self._signer.verify_compact(Purpose.READER, ref)
        except TokenError:
            return None
        if len(data) != _PAYLOAD.size:
            return None
        version, high, low = _PAYLOAD.unpack(data)
        if version != VERSION:
            return None
        return (high << 32) | low or None
