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


def test_a_signed_delivery_reference_round_trips_and_refuses_forgeries() -> None:
    reference = verp.delivery_reference(secret_key=KEY, delivery_id=41)
    assert verp.delivery_from_reference(secret_key=KEY, value=reference) == 41
    assert verp.delivery_from_reference(secret_key=KEY, value=reference.upper()) == 41
    assert (
        verp.delivery_from_reference(secret_key=KEY, value=reference.replace("41-", "42-")) is None
    )
    assert verp.delivery_from_reference(secret_key=KEY, value="41") is None


def test_signed_message_ids_name_their_delivery_and_guessed_ones_do_not() -> None:
    from shared import message_ids

    key = message_ids.delivery_key(7, "abcdef12")
    signed = message_ids.signed_message_id(secret_key=KEY, key=key, domain="example.org")
    assert signed.startswith("<d7.abcdef12.")
    assert signed.endswith("@example.org>")
    assert message_ids.delivery_from_message_id(secret_key=KEY, message_id=signed) == 7
    assert message_ids.delivery_from_message_id(secret_key=KEY, message_id=signed.upper()) == 7
    assert message_ids.delivery_from_message_id(secret_key=KEY, message_id=signed[1:-1]) == 7
    for forged in (
        "<d7.abcdef12@example.org>",  # the old, guessable form
        signed.replace("<d7.", "<d8."),
        signed.replace("@example.org", "@x.example").replace("abcdef12", "abcdef13"),
    ):
        assert message_ids.delivery_from_message_id(secret_key=KEY, message_id=forged) is None
    other = message_ids.signed_message_id(secret_key="other" * 10, key=key, domain="example.org")
    assert message_ids.delivery_from_message_id(secret_key=KEY, message_id=other) is None
    tx = message_ids.signed_message_id(secret_key=KEY, key="tx.abc", domain="example.org")
    assert message_ids.verified_key(secret_key=KEY, message_id=tx) == "tx.abc"
    assert message_ids.delivery_from_message_id(secret_key=KEY, message_id=tx) is None
