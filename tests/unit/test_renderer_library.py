"""The issue folders editors can pick, and what an upload may hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.renderer.errors import IssueFormatError
from services.renderer.library import MAX_SOURCE_BYTES, IssueLibrary


@pytest.fixture
def library(tmp_path: Path) -> IssueLibrary:
    issues = tmp_path / "issues"
    (issues / "week-50").mkdir(parents=True)
    (issues / "week-50" / "en.md").write_text("---\n", encoding="utf-8")
    (issues / "not-an-issue").mkdir()
    return IssueLibrary(issues_dir=issues, uploads_dir=tmp_path / "uploads")


def test_folders_with_language_files_are_listed_and_uploads_join_them(
    library: IssueLibrary,
) -> None:
    assert library.names() == ["week-50"]
    library.store("week-51", {"ru": "text"})
    assert library.names() == ["week-50", "week-51"]
    folder = library.folder("week-51")
    assert folder is not None
    assert folder.sources == {"ru": "text"}
    assert library.folder("../etc") is None
    assert library.folder("missing") is None


def test_a_new_upload_replaces_the_files_of_the_earlier_one(library: IssueLibrary) -> None:
    library.store("week-51", {"ru": "one", "be": "two"})
    library.store("week-51", {"en": "three"})
    folder = library.folder("week-51")
    assert folder is not None
    assert folder.sources == {"en": "three"}


@pytest.mark.parametrize(
    ("name", "sources", "expected"),
    [
        ("Bad Name", {"en": "x"}, "the name must be lower-case letters"),
        ("ok", {"de": "x"}, "'de' is not one of"),
        ("ok", {"en": "x" * (MAX_SOURCE_BYTES + 1)}, "larger than 512 KB"),
        ("ok", {}, "no language file was uploaded"),
    ],
)
def test_bad_uploads_are_refused_with_the_reason(
    library: IssueLibrary, name: str, sources: dict[str, str], expected: str
) -> None:
    with pytest.raises(IssueFormatError, match=expected):
        library.store(name, sources)
