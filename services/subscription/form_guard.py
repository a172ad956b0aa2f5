"""CSRF protection and the time trap of our HTML forms.

CSRF: a random token lives in a ``SameSite=Lax``, ``HttpOnly`` cookie; each form carries an
HMAC of it under our secret key. A cross-site page can neither read the cookie nor compute the
HMAC, and a cookie planted by a sibling domain is useless without the secret. The RFC 8058
one-click POST is exempt by design: mail clients send it with no cookie.

Time trap: the signup form carries a signed stamp of the moment it was rendered; a post that
comes back sooner than a person can type is treated as a bot (normal answer, nothing stored).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, want_bytes

CSRF_COOKIE = "nl_csrf"
CSRF_FIELD = "csrf_token"
STAMP_FIELD = "form_stamp"
HONEYPOT_FIELD = "website"


@dataclass(frozen=True)
class CsrfPair:
    cookie: str  # value for the cookie (new or the one the browser sent)
    field: str  # value for the hidden form field
    is_new: bool  # the response must set the cookie


class CsrfGuard:
    def __init__(self, secret_key: str) -> None:
        self._key = hashlib.sha256(b"newsletter.csrf:" + secret_key.encode()).digest()

    def _mac(self, cookie: str) -> str:
        # hmac.digest is the one-shot C path: the same MAC as hmac.new(...).hexdigest().
        return hmac.digest(self._key, cookie.encode(), "sha256").hex()

    def pair_for(self, cookie: str | None) -> CsrfPair:
        if cookie and 16 <= len(cookie) <= 128 and cookie.isascii():
            return CsrfPair(cookie=cookie, field=self._mac(cookie), is_new=False)
        fresh = secrets.token_urlsafe(32)
        return CsrfPair(cookie=fresh, field=self._mac(fresh), is_new=True)

    def check(self, *, cookie: str | None, field: str | None) -> bool:
        if not cookie or not field or len(field) > 128 or len(cookie) > 128:
            return False
        return hmac.compare_digest(self._mac(cookie), field)


class _StampSigner(TimestampSigner):
    """itsdangerous derives the signing key from the secret on every sign and unsign; the
    key is the same each time, so it is derived once (the stamps are unchanged)."""

    _derived: dict[bytes, bytes]

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        secret = self.secret_keys[-1] if secret_key is None else want_bytes(secret_key)
        cache = self.__dict__.setdefault("_derived", {})
        key: bytes | None = cache.get(secret)
        if key is None:
            key = cache[secret] = super().derive_key(secret)
        return key


class TimeTrap:
    """Signs the render time of a form and measures how long the person took."""

    def __init__(self, secret_key: str) -> None:
        self._signer = _StampSigner(secret_key, salt="newsletter.form-stamp")

    def stamp(self) -> str:
        return self._signer.sign("signup").decode()

    def age_s(self, stamp: str | None, *, max_age_s: int, now: float | None = None) -> float | None:
        """Seconds since the form was rendered; None if missing, tampered or too old."""
        if not stamp or len(stamp) > 200:
            return None
        try:
            _, signed_at = self._signer.unsign(stamp, max_age=max_age_s, return_timestamp=True)
        except SignatureExpired:
            return float("inf")
        except BadSignature:
            return None
        return (now if now is not None else time.time()) - signed_at.timestamp()
