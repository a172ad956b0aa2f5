"""Issue folders the editor page and the admin API can pick: sub-folders of ``issues_dir``
(e.g. ``deploy/sample-issue``) and uploads kept under ``<var_dir>/issues/<name>/``."""

from __future__ import annotations

import re
from pathlib import Path

from services.renderer.errors import N_, IssueFormatError, Problem
from services.renderer.issue import LANGUAGES, IssueFolder

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
MAX_SOURCE_BYTES = 512 * 1024


class IssueLibrary:
    def __init__(self, *, issues_dir: Path, uploads_dir: Path) -> None:
        self._roots = (uploads_dir, issues_dir)
        self._uploads = uploads_dir

    def names(self) -> list[str]:
        found: set[str] = set()
        for root in self._roots:
            if root.is_dir():
                found.update(
                    p.name
                    for p in root.iterdir()
                    if p.is_dir()
                    and NAME.match(p.name)
                    and any((p / f"{lang}.md").is_file() for lang in LANGUAGES)
                )
        return sorted(found)

    def folder(self, name: str) -> IssueFolder | None:
        if not NAME.match(name):
            return None
        for root in self._roots:
            path = root / name
            if path.is_dir() and any((path / f"{lang}.md").is_file() for lang in LANGUAGES):
                return IssueFolder.read(path)
        return None

    def store(self, name: str, sources: dict[str, str]) -> IssueFolder:
        """Save an uploaded issue (replacing an earlier upload of the same name)."""
        problems = []
        if not NAME.match(name):
            problems.append(
                Problem.coded(name, 0, N_("the name must be lower-case letters, digits and '-'"))
            )
        for lang, text in sources.items():
            if lang not in LANGUAGES:
                problems.append(
                    Problem.coded(
                        f"{lang}.md",
                        0,
                        N_("%(language)r is not one of %(languages)s"),
                        language=lang,
                        languages=LANGUAGES,
                    )
                )
            elif len(text.encode()) > MAX_SOURCE_BYTES:
                problems.append(
                    Problem.coded(f"{lang}.md", 0, N_("the file is larger than 512 KB"))
                )
        if not sources:
            problems.append(Problem.coded(name, 0, N_("no language file was uploaded")))
        if problems:
            raise IssueFormatError(problems)
        path = self._uploads / name
        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("*.md"):
            old.unlink()
        for lang, text in sources.items():
            (path / f"{lang}.md").write_text(text, encoding="utf-8")
        return IssueFolder.read(path)
