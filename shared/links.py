"""Signed links into the subscription service, built the same way by every service.

The subscription service verifies what the renderer and the dispatcher put in mails, so the
paths and token payloads are defined once, here. Tokens carry the subscriber id and a short
prefix of the address hash, so a token stays bound to the address it was made for.
"""

from __future__ import annotations

from typing import Any, TypedDict
from urllib.parse import quote

from shared.tokens import Purpose, TokenSigner

CONFIRM_PATH = "/confirm"
UNSUBSCRIBE_PATH = "/unsubscribe"
ONE_CLICK_PATH = "/unsubscribe/one-click"
PREFERENCES_PATH = "/preferences"

CONFIRM_MAX_AGE_S = 7 * 24 * 3600


class LinkPayload(TypedDict):
    sid: int
    h: str


def payload(subscriber_id: int, email_hash: str) -> LinkPayload:
    return {"sid": subscriber_id, "h": email_hash[:16]}


def parse_payload(raw: Any) -> LinkPayload | None:
    """The payload of a verified token, or None if it is not of our shape."""
    if (
        isinstance(raw, dict)
        and isinstance(raw.get("sid"), int)
        and isinstance(raw.get("h"), str)
        and set(raw) == {"sid", "h"}
    ):
        return {"sid": raw["sid"], "h": raw["h"]}
    return None


class Links:
    """Builds the absolute, signed URLs of one subscriber."""

    def __init__(self, *, public_url: str, signer: TokenSigner) -> None:
        self._base = public_url.rstrip("/")
        self._signer = signer

    def _url(self, path: str, purpose: Purpose, subscriber_id: int, email_hash: str) -> str:
        token = self._signer.sign(purpose, payload(subscriber_id, email_hash))
        return f"{self._base}{path}?token={quote(token)}"

    def confirm(self, subscriber_id: int, email_hash: str) -> str:
        return self._url(CONFIRM_PATH, Purpose.CONFIRM, subscriber_id, email_hash)

    def unsubscribe(self, subscriber_id: int, email_hash: str) -> str:
        return self._url(UNSUBSCRIBE_PATH, Purpose.UNSUBSCRIBE, subscriber_id, email_hash)

    def one_click(self, subscriber_id: int, email_hash: str) -> str:
        """The RFC 8058 ``List-Unsubscribe`` URL; it accepts a POST with no cookie."""
        return self._url(ONE_CLICK_PATH, Purpose.UNSUBSCRIBE, subscriber_id, email_hash)

    def preferences(self, subscriber_id: int, email_hash: str) -> str:
        return self._url(PREFERENCES_PATH, Purpose.PREFERENCES, subscriber_id, email_hash)
