"""SNS signature verification with a self-signed certificate generated here."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from services.bounces.errors import SignatureInvalid
from services.bounces.settings import DEFAULT_SNS_CERT_HOSTS
from services.bounces.sns import SnsVerifier, string_to_sign

CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem"


def make_signer() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


def signed(key: rsa.RSAPrivateKey, message: dict[str, str], version: str = "2") -> dict[str, str]:
    algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()
    body = {**message, "SignatureVersion": version, "SigningCertURL": CERT_URL}
    signature = key.sign(string_to_sign(body), padding.PKCS1v15(), algorithm)
    return {**body, "Signature": base64.b64encode(signature).decode()}


NOTIFICATION = {
    "Type": "Notification",
    "MessageId": "m-1",
    "TopicArn": "arn:aws:sns:eu-west-1:123:ses-bounces",
    "Message": '{"notificationType":"Bounce"}',
    "Timestamp": "2026-11-27T07:00:00.000Z",
}


@pytest.mark.parametrize("version", ["1", "2"])
async def test_a_correctly_signed_notification_verifies(version: str) -> None:
    key, pem = make_signer()
    fetched: list[str] = []

    async def fetch(url: str) -> bytes:
        fetched.append(url)
        return pem

    verifier = SnsVerifier(cert_host_pattern=DEFAULT_SNS_CERT_HOSTS, fetcher=fetch)
    await verifier.verify(signed(key, NOTIFICATION, version))
    await verifier.verify(signed(key, NOTIFICATION, version))
    assert fetched == [CERT_URL]  # cached per URL


async def test_a_tampered_message_is_refused() -> None:
    key, pem = make_signer()

    async def fetch(_: str) -> bytes:
        return pem

    verifier = SnsVerifier(cert_host_pattern=DEFAULT_SNS_CERT_HOSTS, fetcher=fetch)
    message = signed(key, NOTIFICATION)
    message["Message"] = '{"notificationType":"Complaint"}'
    with pytest.raises(SignatureInvalid):
        await verifier.verify(message)


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
        "https://evil.example/sns.eu-west-1.amazonaws.com/cert.pem",
    ],
)
async def test_certificates_come_only_from_allowed_https_hosts(url: str) -> None:
    async def fetch(_: str) -> bytes:
        raise AssertionError("must not fetch from a disallowed host")

    verifier = SnsVerifier(cert_host_pattern=DEFAULT_SNS_CERT_HOSTS, fetcher=fetch)
    key, _ = make_signer()
    message = {**signed(key, NOTIFICATION), "SigningCertURL": url}
    with pytest.raises(SignatureInvalid):
        await verifier.verify(message)
