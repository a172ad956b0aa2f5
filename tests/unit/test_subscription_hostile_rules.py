"""Pure rules that hostile requests lean on: the archive paths the proxy forwards, and the
length of an address's local part."""

from __future__ import annotations

import pytest

from services.subscription.address_rules import normalize_address
from services.subscription.archive_proxy import is_archive_path
from services.subscription.errors import InvalidAddress


@pytest.mark.parametrize(
    "path",
    ["/en", "/en/", "/be/issues/3", "/ru/feed.atom", "/archive/en/12", "/sitemap.xml", "/en/a.b"],
)
def test_archive_paths_are_forwarded(path: str) -> None:
    assert is_archive_path(path), path


@pytest.mark.parametrize(
    "path",
    [
        "/en/../editor",
        "/en/./../admin/api/issues",
        "/archive/../metrics",
        "/ru/issues/..",
        "/be/.",
        "/editor",
        "/english",
        "/sitemap.xml/../editor",
    ],
)
def test_dot_segments_and_other_paths_are_not_archive_paths(path: str) -> None:
    assert not is_archive_path(path), path


def test_a_local_part_of_64_characters_is_the_longest_accepted() -> None:
    assert normalize_address("a" * 64 + "@example.org").email == "a" * 64 + "@example.org"
    with pytest.raises(InvalidAddress) as refused:
        normalize_address("a" * 65 + "@example.org")
    assert refused.value.reason == "too_long"
