"""Signed tokens with a purpose and an age limit (itsdangerous).

A token signed for one purpose never verifies for another (the purpose is the salt), so a
confirmation token cannot unsubscribe and a VERP token cannot confirm.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer


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
    def __init__(self, secret_key: str) -> None:
        self._secret = secret_key

    def _serializer(self, purpose: Purpose) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self._secret, salt=f"newsletter.{purpose}")

    def sign(self, purpose: Purpose, payload: Any) -> str:
        return str(self._serializer(purpose).dumps(payload))

    def verify(self, purpose: Purpose, token: str, *, max_age_s: int | None = None) -> Any:
        serializer = self._serializer(purpose)
        try:
            return serializer.loads(token, max_age=max_age_s)
        except SignatureExpired as err:
            payload = serializer.loads_unsafe(token)[1]
            raise TokenExpired(payload) from err
        except BadSignature as err:
            raise TokenInvalid("bad token") from err
