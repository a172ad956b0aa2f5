"""Signed tokens with a purpose and an age limit (itsdangerous).

A token signed for one purpose never verifies for another (the purpose is the salt), so a
confirmation token cannot unsubscribe and a VERP token cannot confirm.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from enum import StrEnum
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode

# The JSON of itsdangerous' compact serializer (its ``_CompactJSON``), built once.
COMPACT_MAC = 8  # bytes of HMAC-SHA256 kept in a compact token
COMPACT_MAX_CHARS = 256
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class Purpose(StrEnum):
    CONFIRM = "confirm"
    UNSUBSCRIBE = "unsubscribe"
    PREFERENCES = "preferences"
    VERP = "verp"
    CLICK = "click"
    OPEN = "open"
    READER = "reader"


class TokenError(ValueError):
    """Base: the token is not usable."""


class TokenExpired(TokenError):
    """The signature is good but the token is too old; ``payload`` is still readable."""

    def __init__(self, payload: Any) -> None:
        super().__init__("token expired")
        self.payload = payload


class TokenInvalid(TokenError):
    """Tampered, malformed or signed for another purpose."""


class TokenSigner:
    """Signs and verifies tokens; one serializer and signer per purpose, built once.

    ``sign`` writes the payload uncompressed: itsdangerous would try zlib on every token and
    keep the result only if it were shorter, which never happens for our few-field payloads.
    ``verify`` (itsdangerous' ``loads``) reads both forms. The dispatcher signs two tokens
    per message, so this is on its hot path.
    """

    def __init__(self, secret_key: str) -> None:
        self._secret = secret_key
        self._serializers: dict[Purpose, URLSafeTimedSerializer] = {}
        self._signers: dict[Purpose, TimestampSigner] = {}
        self._compact_keys: dict[Purpose, bytes] = {}

    def _serializer(self, purpose: Purpose) -> URLSafeTimedSerializer:
        found = self._serializers.get(purpose)
        if found is None:
            found = URLSafeTimedSerializer(self._secret, salt=f"newsletter.{purpose}")
            self._serializers[purpose] = found
        return found

    def _signer(self, purpose: Purpose) -> TimestampSigner:
        found = self._signers.get(purpose)
        if found is None:
            signer = self._serializer(purpose).make_signer()
            if not isinstance(signer, TimestampSigner):  # a timed serializer makes timed signers
                raise TypeError(f"unexpected signer {type(signer).__name__}")
            found = self._signers[purpose] = signer
        return found

    def sign(self, purpose: Purpose, payload: Any) -> str:
        data = base64_encode(_COMPACT_JSON(payload).encode())
        return self._signer(purpose).sign(data).decode("ascii")

    def verify(self, purpose: Purpose, token: str, *, max_age_s: int | None = None) -> Any:
        serializer = self._serializer(purpose)
        try:
            return serializer.loads(token, max_age=max_age_s)
        except SignatureExpired as err:
            payload = serializer.loads_unsafe(token)[1]
            raise TokenExpired(payload) from err
        except BadSignature as err:
            raise TokenInvalid("bad token") from err

    # --- compact tokens: a few bytes of payload and a truncated HMAC -------------------------

    def _compact_key(self, purpose: Purpose) -> bytes:
        found = self._compact_keys.get(purpose)
        if found is None:
            # Derived per purpose, like itsdangerous derives its keys from the salt.
            found = hmac.new(
                self._secret.encode(), f"newsletter.compact.{purpose}".encode(), hashlib.sha256
            ).digest()
            self._compact_keys[purpose] = found
        return found

    def sign_compact(self, purpose: Purpose, data: bytes, *, mac_bytes: int = COMPACT_MAC) -> str:
        """``data`` and the first ``mac_bytes`` of its HMAC-SHA256, base64url without padding.

        For tokens that must be short (a tracked link in every article) and need no age limit.
        ``mac_bytes`` 8 is 64 bits: a forger must guess, online, one of 2**64 values.
        """
        mac = hmac.new(self._compact_key(purpose), data, hashlib.sha256).digest()[:mac_bytes]
        return base64.urlsafe_b64encode(data + mac).rstrip(b"=").decode("ascii")

    def open_compact(self, purpose: Purpose, token: str) -> tuple[bytes, bool]:
        """The payload of a compact token and whether its MAC is good.

        The payload of a bad token is returned too, for display of what is safe to show: it
        must never be acted upon. Raise :class:`TokenInvalid` when it is not even decodable.
        """
        mac_bytes = COMPACT_MAC
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError) as err:
            raise TokenInvalid("undecodable token") from err
        if len(raw) <= mac_bytes or len(token) > COMPACT_MAX_CHARS:
            raise TokenInvalid("token too short or too long")
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
            # The last character's unused bits must be zero: one spelling per token, so a
            # changed character is never the same token (RFC 4648 section 3.5).
            raise TokenInvalid("non-canonical token")
        data, mac = raw[:-mac_bytes], raw[-mac_bytes:]
        expected = hmac.new(self._compact_key(purpose), data, hashlib.sha256).digest()
        return data, hmac.compare_digest(mac, expected[:mac_bytes])

    def verify_compact(self, purpose: Purpose, token: str) -> bytes:
        """The payload of a good compact token; raise :class:`TokenInvalid` otherwise."""
        data, good = self.open_compact(purpose, token)
        if not good:
            raise TokenInvalid("bad token")
        return data
