"""Reading the signed tokens of our links (made by ``shared.links.Links``).

Besides the checks of ``shared.tokens`` (signature, purpose, age), this returns when the token
was issued, so that a confirmation link mailed before an unsubscribe cannot re-activate the
address after it (a replayed token changes nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from itsdangerous import BadSignature, SignatureExpired

from services.subscription.errors import ExpiredLinkToken, InvalidLinkToken
from shared.links import LinkPayload, parse_payload
from shared.tokens import Purpose, TokenSigner

MAX_TOKEN_LENGTH = 512


@dataclass(frozen=True)
class VerifiedLink:
    subscriber_id: int
    email_hash_prefix: str
    issued_at: datetime


class LinkTokenReader(TokenSigner):
    """A :class:`TokenSigner` that also reports the issue time of what it verifies."""

    def read(self, purpose: Purpose, token: str | None, *, max_age_s: int | None) -> VerifiedLink:
        if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise InvalidLinkToken("missing or malformed token")
        serializer = self._serializer(purpose)
        try:
            raw, signed_at = serializer.loads(token, max_age=max_age_s, return_timestamp=True)
        except SignatureExpired as err:
            expired = _payload(serializer.loads_unsafe(token)[1])
            raise ExpiredLinkToken(expired["sid"], expired["h"]) from err
        except (BadSignature, ValueError, TypeError) as err:
            raise InvalidLinkToken("bad token") from err
        payload = _payload(raw)
        return VerifiedLink(
            subscriber_id=payload["sid"],
            email_hash_prefix=payload["h"],
            issued_at=signed_at.astimezone(UTC),
        )


def _payload(raw: Any) -> LinkPayload:
    payload = parse_payload(raw)
    if payload is None:
        raise InvalidLinkToken("token payload of the wrong shape")
    return payload
