"""VERP and mailto-unsubscribe addresses round-trip and refuse forgeries."""

from __future__ import annotations

from shared import verp

KEY = "k" * 40


def test_return_path_round_trips_even_when_lower_cased() -> None:
    address = verp.return_path(secret_key=KEY, delivery_id=123456, domain="example.org")
    assert address.startswith("bounces+123456-")
    assert len(address.partition("@")[0]) <= 64
    assert verp.delivery_from_return_path(secret_key=KEY, address=address.upper()) == 123456


def test_a_forged_or_foreign_return_path_is_refused() -> None:
    address = verp.return_path(secret_key=KEY, delivery_id=5, domain="example.org")
    forged = address.replace("bounces+5-", "bounces+6-")
    assert verp.delivery_from_return_path(secret_key=KEY, address=forged) is None
    assert verp.delivery_from_return_path(secret_key="other" * 10, address=address) is None
    assert verp.delivery_from_return_path(secret_key=KEY, address="alice@example.org") is None


def test_unsubscribe_address_is_not_a_return_path() -> None:
    mailto = verp.unsubscribe_mailto(secret_key=KEY, subscriber_id=9, domain="example.org")
    assert verp.subscriber_from_unsubscribe_mailto(secret_key=KEY, address=mailto) == 9
    assert verp.delivery_from_return_path(secret_key=KEY, address=mailto) is None
