"""Ledger helpers that need no database."""

from __future__ import annotations

from services.dispatcher.ledger import padded


def test_in_lists_are_padded_to_a_few_lengths_with_the_same_ids() -> None:
    assert padded([]) == []
    assert padded([5]) == [5] * 8
    assert padded(list(range(9))) == [*range(9), *([8] * 7)]
    lengths = {len(padded(list(range(n)))) for n in range(1, 501)}
    assert lengths == {8, 16, 32, 64, 128, 256, 512}
    assert all(set(padded(list(range(n)))) == set(range(n)) for n in range(1, 100))
