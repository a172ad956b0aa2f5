"""Amazon SNS message signatures, checked with ``cryptography``.

The certificate is fetched from ``SigningCertURL`` only over https from a host that matches the
allowed pattern (``sns.<region>.amazonaws.com``), cached per URL, and must be valid now. The
fetcher is injected so tests use a self-signed certificate they generate.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from services.bounces.errors import SignatureInvalid

CertificateFetcher = Callable[[str], Awaitable[bytes]]

_NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SUBSCRIPTION_KEYS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)


async def fetch_certificate(url: str) -> bytes:
    async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:
        response = await client.get(url)
        response.raise_for_status()
        return response.content


def string_to_sign(message: Mapping[str, object]) -> bytes:
    """The canonical form SNS signs: ``Key\\nValue\\n`` for the type's keys, in order."""
    kind = message.get("Type")
    keys = _NOTIFICATION_KEYS if kind == "Notification" else _SUBSCRIPTION_KEYS
    out = []
    for key in keys:
        if key in message and message[key] is not None:
            out.append(f"{key}\n{message[key]}\n")
    return "".join(out).encode()


class SnsVerifier:
    def __init__(
        self, *, cert_host_pattern: str, fetcher: CertificateFetcher = fetch_certificate
    ) -> None:
        self._host = re.compile(cert_host_pattern)
        self._fetcher = fetcher
        self._cache: dict[str, x509.Certificate] = {}

    def check_host(self, url: str) -> None:
        """Only https URLs on an allowed SNS host are ever fetched."""
        parts = urlsplit(url)
        if parts.scheme != "https" or not self._host.match(parts.hostname or ""):
            raise SignatureInvalid(f"host not allowed: {parts.hostname!r}")

    def check_url(self, url: str) -> None:
        self.check_host(url)
        if not urlsplit(url).path.endswith(".pem"):
            raise SignatureInvalid("certificate URL is not a .pem file")

    async def _certificate(self, url: str) -> x509.Certificate:
        self.check_url(url)
        if url not in self._cache:
            try:
                self._cache[url] = x509.load_pem_x509_certificate(await self._fetcher(url))
            except (ValueError, httpx.HTTPError) as err:
                raise SignatureInvalid(f"cannot load signing certificate: {err}") from err
        return self._cache[url]

    async def verify(self, message: Mapping[str, object]) -> None:
        """Raise :class:`SignatureInvalid` unless ``message`` is signed by SNS."""
        version = str(message.get("SignatureVersion", ""))
        algorithm: hashes.HashAlgorithm
        if version == "1":
            algorithm = hashes.SHA1()  # noqa: S303 - SNS signature version 1 is SHA1withRSA
        elif version == "2":
            algorithm = hashes.SHA256()
        else:
            raise SignatureInvalid(f"unsupported SignatureVersion {version!r}")
        certificate = await self._certificate(str(message.get("SigningCertURL", "")))
        now = datetime.now(UTC)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise SignatureInvalid("signing certificate is not valid now")
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SignatureInvalid("signing certificate has no RSA key")
        try:
            signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
            key.verify(signature, string_to_sign(message), padding.PKCS1v15(), algorithm)
        except (InvalidSignature, ValueError) as err:
            raise SignatureInvalid("signature does not match") from err
