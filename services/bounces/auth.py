"""Who may post a webhook: Postmark's basic-auth credentials or token, SendGrid's signature.

- Postmark puts basic-auth credentials in the webhook URL (``https://user:password@host/...``)
  and sends them as ``Authorization: Basic``; a ``?token=`` (or ``X-Webhook-Token`` header)
  is accepted as well. Both compared in constant time.
- SendGrid's Signed Event Webhook signs ``timestamp + raw body`` with ECDSA P-256 / SHA-256:
  ``X-Twilio-Email-Event-Webhook-Signature`` (base64 DER signature) and
  ``X-Twilio-Email-Event-Webhook-Timestamp`` (Unix seconds). The verification key from
  SendGrid's mail settings is base64 DER (SubjectPublicKeyInfo); PEM works too. A timestamp
  older than ``max_age_s`` (or more than a minute ahead) is a replay and refused.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections.abc import Callable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.bounces.errors import Unauthenticated

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
_FUTURE_SKEW_S = 60


def _same(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


class PostmarkAuth:
    """Basic auth (``user:password``) and/or a token; at least one must be configured to pass."""

    def __init__(self, *, basic_auth: str = "", token: str = "") -> None:
        self._basic = basic_auth if ":" in basic_auth else ""
        self._token = token

    def check(self, *, headers: Mapping[str, str], query: Mapping[str, str]) -> None:
        authorization = headers.get("authorization", "")
        scheme, _, value = authorization.partition(" ")
        if self._basic and scheme.lower() == "basic":
            try:
                given = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                given = ""
            if _same(given, self._basic):
                return
        token = query.get("token") or headers.get("x-webhook-token", "")
        if self._token and _same(token, self._token):
            return
        raise Unauthenticated("Postmark webhook without valid credentials")


def load_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """SendGrid's verification key: base64 DER, or PEM. Must be an ECDSA P-256 key."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error) as err:
        raise ValueError(f"not a public key: {err}") from err
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the SendGrid verification key must be an ECDSA P-256 public key")
    return key


class SendGridVerifier:
    def __init__(
        self,
        *,
        public_key: ec.EllipticCurvePublicKey | None,
        max_age_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = public_key
        self._max_age = max_age_s
        self._clock = clock

    def verify(self, *, headers: Mapping[str, str], body: bytes) -> None:
        """Raise :class:`Unauthenticated` unless ``body`` is signed by SendGrid, recently."""
        signature = headers.get(SIGNATURE_HEADER.lower(), "")
        stamp = headers.get(TIMESTAMP_HEADER.lower(), "").strip()
        if self._key is None or not signature or not stamp:
            raise Unauthenticated("SendGrid events without a signature")
        if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
            raise Unauthenticated("SendGrid timestamp is not a number")
        age = self._clock() - int(stamp)
        if age > self._max_age or age < -_FUTURE_SKEW_S:
            raise Unauthenticated("SendGrid signature timestamp is stale")
        try:
            raw = base64.b64decode(signature.strip(), validate=True)
            self._key.verify(raw, stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, binascii.Error, ValueError) as err:
            raise Unauthenticated("SendGrid signature does not match") from err
