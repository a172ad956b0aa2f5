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
    """One thing wrong with an issue file: where (file, 1-based line and column), what is wrong
    and what to do about it. Shown as ``file:line:column: message (hint)``, the form compilers
    use, so that editors and terminals can jump to it. A ``warning`` does not block a send."""

    file: str
    line: int
    message: str
    column: int = 1
    hint: str = ""
    level: str = "error"  # "error" or "warning"
    check: str = ""  # what kind of check found it: "links", "images", "dates", "articles", …

    @property
    def is_error(self) -> bool:
        return self.level == "error"

    def __str__(self) -> str:
        where = f"{self.file}:{max(self.line, 1)}:{max(self.column, 1)}: "
        kind = "warning: " if self.level == "warning" else ""
        return where + kind + self.message + (f" ({self.hint})" if self.hint else "")


class IssueFormatError(RendererError):
    """One or more issue files are broken; ``problems`` says where and what."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class IssueNotReady(RendererError):
    """A send would go out incomplete or broken; the message lists what blocks it.

    Raised from a readiness verdict, ``problems`` holds the errors (one per line of the message).
    """

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        self.problems = problems or []
        super().__init__(message)

    @classmethod
    def of(cls, problems: list[Problem]) -> IssueNotReady:
        return cls("the issue is not ready to send:\n" + "\n".join(map(str, problems)), problems)


class RenderFailed(RendererError):
    """Rendering a template or inlining its CSS failed."""
