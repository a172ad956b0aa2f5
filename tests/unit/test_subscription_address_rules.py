"""The address rules of the signup form and the import (services/subscription/address_rules)."""

from __future__ import annotations

import pytest

from services.subscription.address_rules import mailbox_key, normalize_address
from services.subscription.errors import InvalidAddress
from shared.addresses import address_hash


def test_a_plain_address_is_lower_cased_and_hashed() -> None:
    address = normalize_address("  Alice.Smith@Example.ORG \t")
    assert address.email == "alice.smith@example.org"
    assert address.domain == "example.org"
    assert address.email_hash == address_hash("alice.smith@example.org")


def test_an_internationalized_domain_is_stored_as_ascii_a_labels() -> None:
    address = normalize_address("reader@пример.бел")
    assert address.email == "reader@xn--e1afmkfd.xn--90ais"
    assert address.email.isascii()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("a" * 10_000 + "@example.org", "too_long"),
        ("alice@example.org\r\nBcc: victim@example.org", "control_character"),
        ("alice@example.org\nbob@example.org", "control_character"),
        ("alice\x00@example.org", "control_character"),
        ("alice@example.org)<bob@example.org", "syntax"),
        ("alice@example.org, bob@example.org", "syntax"),
        ('"alice smith"@example.org', "syntax"),
        ("Alice <alice@example.org>", "syntax"),
        ("alice@[192.0.2.1]", "syntax"),
        ("<script>alert(1)</script>@example.org", "syntax"),
        ("{{7*7}}@example.org", None),
        ("чытач@example.org", "non_ascii_local_part"),
        ("no-at-sign.example.org", "syntax"),
    ],
)
def test_hostile_or_unsupported_addresses_are_refused_with_a_reason(
    raw: str, reason: str | None
) -> None:
    if reason is None:
        # Template syntax is legal in a local part: stored inert, never evaluated.
        assert normalize_address(raw).email == raw.lower()
        return
    with pytest.raises(InvalidAddress) as caught:
        normalize_address(raw)
    assert caught.value.reason == reason


def test_the_mailbox_key_drops_subaddresses_everywhere_and_dots_only_on_gmail() -> None:
    same = {
        "alice@example.org": ["alice+news@example.org", "alice+a+b@example.org"],
        "alice@gmail.com": ["a.l.i.c.e@gmail.com", "alice+x@googlemail.com", "al.ice@gmail.com"],
    }
    for key, variants in same.items():
        assert mailbox_key(key) == key
        for variant in variants:
            assert mailbox_key(variant) == key, variant
    assert mailbox_key("a.lice@example.org") == "a.lice@example.org", "dots matter elsewhere"
    assert mailbox_key("+tag@example.org") == "+tag@example.org", "no user part to keep"
    assert mailbox_key("bob-news@example.org") == "bob-news@example.org", "only + is a delimiter"
    first = normalize_address("Alice+One@Example.org")
    assert first.mailbox_hash == normalize_address("alice@example.org").mailbox_hash
    assert first.email_hash != normalize_address("alice@example.org").email_hash
