"""The renderer's exceptions, all under one base.

::

    RendererError
    ├── IssueFormatError      an issue file is broken (names the file, the line, the problem)
    ├── IssueNotReady         a send cannot start: editions missing without a fallback, or
    │                         preflight errors
    ├── RenderFailed          a template or CSS inlining step failed
    ├── FillError             (fill.py) an unknown marker, a missing or unsafe value
    ├── SpamCheckUnavailable  (spam.py) spamassassin is not installed or did not answer
    └── InvalidCommand        (consumer.py) a command that cannot be carried out: dead-lettered
"""

from __future__ import annotations

from dataclasses import dataclass


class RendererError(Exception):
    """Base of every error the renderer raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an issue file, located by file name and line (1-based)."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class IssueFormatError(RendererError):
    """One or more issue files are broken; ``problems`` says where and what."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class IssueNotReady(RendererError):
    """A send would go out incomplete or broken; the message lists what blocks it."""


class RenderFailed(RendererError):
    """Rendering a template or inlining its CSS failed."""
