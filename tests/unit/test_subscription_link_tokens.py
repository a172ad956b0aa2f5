"""Link tokens: wrong purpose, tampering, expiry and the issue time used against replays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.subscription.errors import ExpiredLinkToken, InvalidLinkToken
from services.subscription.link_tokens import LinkTokenReader
from shared.links import payload
from shared.tokens import Purpose, TokenSigner

SECRET = "s" * 48


def _token(purpose: Purpose = Purpose.CONFIRM) -> str:
    return TokenSigner(SECRET).sign(purpose, payload(7, "ab" * 32))


def test_a_good_token_gives_its_subscriber_hash_prefix_and_issue_time() -> None:
    link = LinkTokenReader(SECRET).read(Purpose.CONFIRM, _token(), max_age_s=3600)
    assert link.subscriber_id == 7
    assert link.email_hash_prefix == ("ab" * 32)[:16]
    assert abs(link.issued_at - datetime.now(UTC)) < timedelta(seconds=5)


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        "not-a-token",
        "x" * 10_000,
        "ab\r\nSet-Cookie: a=b",
        "токен",
    ],
)
def test_malformed_tokens_are_invalid(token: str | None) -> None:
    with pytest.raises(InvalidLinkToken):
        LinkTokenReader(SECRET).read(Purpose.CONFIRM, token, max_age_s=3600)


def test_a_tampered_token_or_another_key_is_invalid() -> None:
    token = _token()
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    with pytest.raises(InvalidLinkToken):
        LinkTokenReader(SECRET).read(Purpose.CONFIRM, tampered, max_age_s=3600)
    with pytest.raises(InvalidLinkToken):
        LinkTokenReader("o" * 48).read(Purpose.CONFIRM, token, max_age_s=3600)


@pytest.mark.parametrize("purpose", [Purpose.UNSUBSCRIBE, Purpose.PREFERENCES, Purpose.VERP])
def test_a_token_for_another_purpose_is_invalid(purpose: Purpose) -> None:
    with pytest.raises(InvalidLinkToken):
        LinkTokenReader(SECRET).read(purpose, _token(Purpose.CONFIRM), max_age_s=None)


def test_an_expired_token_still_names_its_subscriber_for_a_new_mail() -> None:
    with pytest.raises(ExpiredLinkToken) as caught:
        LinkTokenReader(SECRET).read(Purpose.CONFIRM, _token(), max_age_s=-1)
    assert caught.value.subscriber_id == 7
    assert caught.value.email_hash_prefix == ("ab" * 32)[:16]


def test_a_signed_payload_of_the_wrong_shape_is_invalid() -> None:
    token = TokenSigner(SECRET).sign(Purpose.CONFIRM, {"sid": "7", "h": "x"})
    with pytest.raises(InvalidLinkToken):
        LinkTokenReader(SECRET).read(Purpose.CONFIRM, token, max_age_s=None)


def test_links_signed_before_the_faster_signer_still_read() -> None:
    """Links already in mailboxes were made by itsdangerous' own ``dumps`` (zlib tried)."""
    from itsdangerous import URLSafeTimedSerializer

    older = URLSafeTimedSerializer(SECRET, salt=f"newsletter.{Purpose.UNSUBSCRIBE}").dumps(
        payload(7, "ab" * 32)
    )
    link = LinkTokenReader(SECRET).read(Purpose.UNSUBSCRIBE, older, max_age_s=None)
    assert link.subscriber_id == 7
    assert TokenSigner(SECRET).verify(Purpose.UNSUBSCRIBE, older) == payload(7, "ab" * 32)
