"""Amazon SNS signatures the tests make themselves: a self-signed certificate (as SNS serves at
``SigningCertURL``) and messages signed with its key as SNS signs them (SignatureVersion 1 is
SHA1, 2 is SHA256). The unit tests of the verifier and the bounce receiver's tests share it."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from services.bounces.sns import string_to_sign

CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem"


def signing_certificate() -> tuple[rsa.RSAPrivateKey, bytes]:
    """A fresh RSA key and its certificate (PEM), valid from yesterday to tomorrow."""
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


def sns_signed(
    key: rsa.RSAPrivateKey, message: dict[str, str], *, version: str = "2"
) -> dict[str, str]:
    """``message`` with its SignatureVersion, SigningCertURL (:data:`CERT_URL`) and Signature."""
    algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()
    body = {**message, "SignatureVersion": version, "SigningCertURL": CERT_URL}
    signature = key.sign(string_to_sign(body), padding.PKCS1v15(), algorithm)
    return {**body, "Signature": base64.b64encode(signature).decode()}
