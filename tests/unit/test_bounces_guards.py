"""The receiver's guards, as pure code: credentials, signatures, budgets, limits, settings."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.bounces.auth import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    PostmarkAuth,
    SendGridVerifier,
    load_public_key,
)
from services.bounces.errors import BodyTooLarge, Unauthenticated, WebhookRejected
from services.bounces.limits import bounded_id, load_json, mime_problem
from services.bounces.service import report_budget
from services.bounces.settings import load_bounces_settings
from shared.settings import SettingsError

NOW = 1_800_000_000.0


def sendgrid() -> tuple[ec.EllipticCurvePrivateKey, SendGridVerifier]:
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public = load_public_key(base64.b64encode(der).decode())
    return key, SendGridVerifier(public_key=public, max_age_s=600, clock=lambda: NOW)


def signed(key: ec.EllipticCurvePrivateKey, body: bytes, stamp: int) -> dict[str, str]:
    signature = key.sign(str(stamp).encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        SIGNATURE_HEADER.lower(): base64.b64encode(signature).decode(),
        TIMESTAMP_HEADER.lower(): str(stamp),
    }


def test_sendgrid_signature_over_timestamp_and_body_is_checked() -> None:
    key, verifier = sendgrid()
    body = b'[{"event":"bounce"}]'
    verifier.verify(headers=signed(key, body, int(NOW) - 5), body=body)
    for headers, tampered in (
        ({}, body),
        (signed(key, body, int(NOW) - 5), body + b" "),
        (signed(key, body, int(NOW) - 3600), body),  # a replay
        (signed(key, body, int(NOW) + 3600), body),
        ({**signed(key, body, int(NOW)), SIGNATURE_HEADER.lower(): "not base64!"}, body),
        (signed(ec.generate_private_key(ec.SECP256R1()), body, int(NOW)), body),
    ):
        with pytest.raises(Unauthenticated):
            verifier.verify(headers=headers, body=tampered)
    with pytest.raises(Unauthenticated):
        SendGridVerifier(public_key=None, max_age_s=600).verify(headers={}, body=body)


def test_the_sendgrid_key_must_be_p256_in_der_or_pem() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    assert isinstance(load_public_key(pem), ec.EllipticCurvePublicKey)
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    der = other.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for text in ("junk", base64.b64encode(der).decode()):
        with pytest.raises(ValueError, match="public key"):
            load_public_key(text)


def test_postmark_takes_basic_auth_or_the_token_and_nothing_else() -> None:
    auth = PostmarkAuth(basic_auth="pm:s3cret", token="tok")
    good = "Basic " + base64.b64encode(b"pm:s3cret").decode()
    auth.check(headers={"authorization": good}, query={})
    auth.check(headers={}, query={"token": "tok"})
    auth.check(headers={"x-webhook-token": "tok"}, query={})
    for headers, query in (
        ({}, {}),
        ({"authorization": "Basic " + base64.b64encode(b"pm:wrong").decode()}, {}),
        ({"authorization": "Basic !!!"}, {}),
        ({}, {"token": ""}),
        ({}, {"token": "to"}),
    ):
        with pytest.raises(Unauthenticated):
            auth.check(headers=headers, query=query)
    with pytest.raises(Unauthenticated):
        PostmarkAuth().check(headers={}, query={"token": ""})  # nothing configured: closed


def test_the_budget_counts_events_per_source_over_a_sliding_minute() -> None:
    now = [0.0]
    budget = report_budget(10, clock=lambda: now[0])
    assert budget.would_allow("ip:a", 8)
    budget.record("ip:a", 8)
    assert not budget.would_allow("ip:a", 3)
    assert budget.would_allow("ip:b", 10)
    now[0] = 61.0
    assert budget.would_allow("ip:a", 10)


def test_a_batch_bigger_than_the_budget_costs_the_whole_budget_not_more() -> None:
    """Else a provider's 1,000-event batch under a 600 budget is refused on every retry."""
    now = [0.0]
    budget = report_budget(10, clock=lambda: now[0])
    assert budget.would_allow("sendgrid", 1000)
    budget.record("sendgrid", 1000)
    assert not budget.would_allow("sendgrid", 1)
    now[0] = 61.0
    assert budget.would_allow("sendgrid", 1000)


def test_json_strings_with_lone_surrogates_are_4xx() -> None:
    for body in (b'{"Email": "a\\ud800@example.com"}', b'[{"\\udfff": 1}]'):
        with pytest.raises(WebhookRejected):
            load_json(body, max_bytes=1000)
    assert load_json(b'{"a": "\\u00e9\\u0000"}', max_bytes=1000) == {"a": "\u00e9\u0000"}


def test_json_limits_answer_4xx_for_depth_size_and_numbers() -> None:
    assert load_json(b'{"a": [1, {"b": 2}]}', max_bytes=100) == {"a": [1, {"b": 2}]}
    with pytest.raises(BodyTooLarge):
        load_json(b"[" * 60 + b"]" * 60, max_bytes=100)
    for body in (b"[" * 100_000 + b"]" * 100_000, b"[" * 40 + b"]" * 40, b"1" * 5000, b"{"):
        with pytest.raises(WebhookRejected):
            load_json(body, max_bytes=1_000_000)
    assert bounded_id("12") == 12
    assert bounded_id("abc") is None
    assert bounded_id(None) is None
    for value in (2**64, str(2**63), -1, 0, "9" * 30):
        with pytest.raises(WebhookRejected):
            bounded_id(value)


def test_mime_limits_count_content_types_before_parsing() -> None:
    assert mime_problem(b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n") is None
    nested = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' * 41
    assert "nested" in (mime_problem(nested) or "")
    flat = b"Content-Type: text/plain\r\n\r\nx\r\n" * 501
    assert "parts" in (mime_problem(flat) or "")


def test_production_refuses_to_start_a_provider_without_its_credential() -> None:
    base = {
        "mode": "production",
        "secret_key": "s" * 40,
        "admin_token": "a" * 32,
        "public_url": "https://news.digest.tld",
        "NEWSLETTER_FROM": "Digest <digest@news.digest.tld>",
    }
    with pytest.raises(SettingsError) as caught:
        load_bounces_settings(**base)
    message = str(caught.value)
    for variable in (
        "NEWSLETTER_BOUNCES_SNS_TOPIC_ARNS",
        "NEWSLETTER_BOUNCES_POSTMARK_BASIC_AUTH",
        "NEWSLETTER_BOUNCES_SENDGRID_PUBLIC_KEY",
        "NEWSLETTER_BOUNCES_WEBHOOKS",
    ):
        assert variable in message
    with pytest.raises(SettingsError, match="SENDGRID_PUBLIC_KEY"):
        load_bounces_settings(**base, bounces_webhooks="sendgrid")
    assert load_bounces_settings(**base, bounces_webhooks="none").webhooks == frozenset()
    ready = load_bounces_settings(
        **base, bounces_webhooks="postmark", bounces_postmark_basic_auth="pm:" + "p" * 30
    )
    assert ready.webhooks == {"postmark"}
    with pytest.raises(SettingsError, match="unknown providers"):
        load_bounces_settings(**base, bounces_webhooks="mailgun")
    assert load_bounces_settings(mode="test").missing_credentials()  # allowed outside production
