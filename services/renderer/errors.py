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

from collections.abc import Callable
from dataclasses import dataclass, field

Gettext = Callable[[str], str]


def N_(message: str) -> str:  # noqa: N802 - the gettext convention for "mark for extraction"
    return message


class RendererError(Exception):
    """Base of every error the renderer raises on purpose."""


@dataclass(frozen=True)
class Wording:
    """A sentence as a code (its English catalog id, with ``%(name)s`` places) and values.

    ``str()`` is the English sentence, for the CLI, the admin API and logs; :meth:`worded`
    says it in the language of ``gettext`` (an editor page). A value that is itself a
    :class:`Wording` is worded the same way.
    """

    code: str
    values: tuple[tuple[str, object], ...] = ()
    literal: bool = False  # a text said as it is, in every language (no code)

    @classmethod
    def of(cls, code: str, /, **values: object) -> Wording:
        return cls(code, tuple(values.items()))

    @classmethod
    def text(cls, text: str) -> Wording:
        """Words meant for scripts and logs, or a value: never translated nor formatted."""
        return cls(text, literal=True)

    def worded(self, gettext: Gettext | None = None) -> str:
        if self.literal:
            return self.code
        text = gettext(self.code) if gettext is not None and self.code else self.code
        if not self.values:
            return text
        values = {k: v.worded(gettext) if isinstance(v, Wording) else v for k, v in self.values}
        return text % values

    def __str__(self) -> str:
        return self.worded()


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
    # The message and the hint as codes with values, so that a page can word them in its
    # language (:meth:`worded`); ``message`` and ``hint`` are their English wording.
    wording: Wording | None = field(default=None, compare=False)
    hint_wording: Wording | None = field(default=None, compare=False)

    @classmethod
    def coded(
        cls,
        file: str,
        line: int,
        code: str,
        /,
        *,
        hint: str | Wording = "",
        column: int = 1,
        level: str = "error",
        check: str = "",
        **values: object,
    ) -> Problem:
        """A problem whose message (and hint) are catalog ids filled with ``values`` (a hint
        may also come worded with values of its own)."""
        wording = Wording.of(code, **values)
        if isinstance(hint, Wording):
            hint_wording: Wording | None = hint
        else:
            hint_wording = Wording.of(hint, **values) if hint else None
        return cls(
            file,
            line,
            str(wording),
            column=column,
            hint=str(hint_wording or ""),
            level=level,
            check=check,
            wording=wording,
            hint_wording=hint_wording,
        )

    @property
    def is_error(self) -> bool:
        return self.level == "error"

    def worded(self, gettext: Gettext | None = None) -> str:
        """``file:line:column: what (what to do)`` in the language of ``gettext``; the place
        stays as it is, so that an editor can jump to it."""
        where = f"{self.file}:{max(self.line, 1)}:{max(self.column, 1)}: "
        say: Gettext = gettext or (lambda text: text)
        kind = say(N_("warning: ")) if self.level == "warning" else ""
        message = self.wording.worded(gettext) if self.wording else self.message
        hint = self.hint_wording.worded(gettext) if self.hint_wording else self.hint
        return where + kind + message + (f" ({hint})" if hint else "")

    def __str__(self) -> str:
        return self.worded()


class IssueFormatError(RendererError):
    """One or more issue files are broken; ``problems`` says where and what."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    def worded(self, gettext: Gettext | None = None) -> str:
        return "\n".join(p.worded(gettext) for p in self.problems)


NOT_READY = N_("the issue is not ready to send:")


class IssueNotReady(RendererError):
    """A send would go out incomplete or broken; the message lists what blocks it.

    Raised from a readiness verdict, ``problems`` holds the errors (one per line of the message).
    """

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        self.problems = problems or []
        super().__init__(message)

    @classmethod
    def of(cls, problems: list[Problem]) -> IssueNotReady:
        refused = cls(NOT_READY + "\n" + "\n".join(map(str, problems)), problems)
        refused.listed = True
        return refused

    listed = False  # the message is the heading and the problems, so it can be worded anew

    def worded(self, gettext: Gettext | None = None) -> str:
        if not self.listed:
            return str(self)
        heading = gettext(NOT_READY) if gettext else NOT_READY
        return "\n".join([heading, *(p.worded(gettext) for p in self.problems)])


class RenderFailed(RendererError):
    """Rendering a template or inlining its CSS failed."""
