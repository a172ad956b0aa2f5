"""SNS signature verification with a self-signed certificate generated here."""

from __future__ import annotations

import pytest

from services.bounces.errors import SignatureInvalid
from services.bounces.settings import DEFAULT_SNS_CERT_HOSTS
from services.bounces.sns import SnsVerifier
from tests.support.sns_signing import CERT_URL, signing_certificate, sns_signed

NOTIFICATION = {
    "Type": "Notification",
    "MessageId": "m-1",
    "TopicArn": "arn:aws:sns:eu-west-1:123:ses-bounces",
    "Message": '{"notificationType":"Bounce"}',
    "Timestamp": "2026-11-27T07:00:00.000Z",
}


@pytest.mark.parametrize("version", ["1", "2"])
async def test_a_correctly_signed_notification_verifies(version: str) -> None:
    key, pem = signing_certificate()
    fetched: list[str] = []

    async def fetch(url: str) -> bytes:
        fetched.append(url)
        return pem

    verifier = SnsVerifier(cert_host_pattern=DEFAULT_SNS_CERT_HOSTS, fetcher=fetch)
    await verifier.verify(sns_signed(key, NOTIFICATION, version=version))
    await verifier.verify(sns_signed(key, NOTIFICATION, version=version))
    assert fetched == [CERT_URL]  # cached per URL


async def test_a_tampered_message_is_refused() -> None:
    key, pem = signing_certificate()

    async def fetch(_: str) -> bytes:
        return pem

    verifier = SnsVerifier(cert_host_pattern=DEFAULT_SNS_CERT_HOSTS, fetcher=fetch)
    message = sns_signed(key, NOTIFICATION)
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
    key, _ = signing_certificate()
    message = {**sns_signed(key, NOTIFICATION), "SigningCertURL": url}
    with pytest.raises(SignatureInvalid):
        await verifier.verify(message)
