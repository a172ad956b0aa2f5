"""Signed tokens with a purpose and an age limit (itsdangerous).

A token signed for one purpose never verifies for another (the purpose is the salt), so a
confirmation token cannot unsubscribe and a VERP token cannot confirm.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode

# The JSON of itsdangerous' compact serializer (its ``_CompactJSON``), built once.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class Purpose(StrEnum):
    CONFIRM = "confirm"
    UNSUBSCRIBE = "unsubscribe"
    PREFERENCES = "preferences"
    VERP = "verp"


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
