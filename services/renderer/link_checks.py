"""Is a link absolute and well-formed (issue files, rendered editions, transactional mails)?
And, for ``issue check --links``, does it answer?

:func:`check_links` asks each distinct URL of an issue once, concurrently (bounded), HEAD first
and GET when HEAD fails, following redirects, each URL within a deadline; 4xx/5xx answers and
hosts that do not answer come back with the file, line and column of every place the URL is
written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import urlsplit

import httpx

from services.renderer.errors import N_, Wording


def _shown(url: str) -> str:
    """A URL as problems show it: without its query, which may hold a token."""
    base, sep, _query = url.partition("?")
    return base + ("?…" if sep else "")


def link_problem(url: str, *, image: bool = False) -> str | None:
    """Why ``url`` is not an absolute, well-formed link (None when it is)."""
    why = link_wording(url, image=image)
    return None if why is None else str(why)


def link_wording(url: str, *, image: bool = False) -> Wording | None:
    """:func:`link_problem` as a code and values, for pages that word it in their language."""
    shown = _shown(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return Wording.of(N_("link %(url)r is not a well-formed URL"), url=shown)
    allowed = {"https", "http"} if image else {"https", "http", "mailto"}
    if any(c.isspace() for c in url) or not url:
        return Wording.of(N_("link %(url)r contains spaces or is empty"), url=shown)
    if parts.scheme not in allowed:
        if not parts.scheme:
            return Wording.of(
                N_("link %(url)r is not absolute (write the full https:// address)"), url=shown
            )
        return Wording.of(
            N_("link %(url)r uses the scheme %(scheme)r, not one of %(allowed)s"),
            url=shown,
            scheme=parts.scheme,
            allowed=sorted(allowed),
        )
    if parts.scheme != "mailto" and not parts.hostname:
        return Wording.of(N_("link %(url)r has no host"), url=shown)
    return None


@dataclass(frozen=True)
class LinkTarget:
    """One link of an issue file and where it is written."""

    url: str
    file: str
    line: int
    column: int


@dataclass(frozen=True)
class LinkAnswer:
    """What a URL answered: its final status (after redirects) or why there was no answer."""

    url: str
    status: int | None = None
    final_url: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and self.status < HTTP_ERROR

    def problem(self) -> str:
        if self.status is not None:
            try:
                phrase = HTTPStatus(self.status).phrase
            except ValueError:
                phrase = "an unknown status"
            moved = (
                f" (redirected to {_shown(self.final_url)})" if self.final_url != self.url else ""
            )
            return f"link {_shown(self.url)} answers {self.status} {phrase}{moved}"
        return f"link {_shown(self.url)} does not answer: {self.error}"


@dataclass
class LinkReport:
    """Every checked link occurrence with its URL's answer."""

    checked: list[tuple[LinkTarget, LinkAnswer]] = field(default_factory=list)

    @property
    def failures(self) -> list[tuple[LinkTarget, LinkAnswer]]:
        return [(t, a) for t, a in self.checked if not a.ok]

    @property
    def ok(self) -> bool:
        return not self.failures

    def lines(self) -> list[str]:
        """``file:line:column: link … answers 404 Not Found (fix the address or remove it)``."""
        return [
            f"{t.file}:{t.line}:{t.column}: {a.problem()} (fix the address or remove the link)"
            for t, a in self.failures
        ]

    def as_dict(self) -> dict[str, object]:
        return {
            "checked": len({a.url for _t, a in self.checked}),
            "failures": self.lines(),
            "ok": self.ok,
        }


HTTP_ERROR = 400
USER_AGENT = "newsletter-link-check/1 (+issue check --links)"


def web_targets(targets: Iterable[LinkTarget]) -> list[LinkTarget]:
    """The http(s) links worth asking (well-formed ones; mailto has no answer to check)."""
    return [
        t
        for t in targets
        if urlsplit(t.url).scheme in {"http", "https"} and link_problem(t.url) is None
    ]


async def _ask(client: httpx.AsyncClient, url: str, *, timeout: float) -> LinkAnswer:
    """HEAD, then GET when HEAD fails (many servers refuse or mishandle HEAD); redirects
    followed by the client; a whole-answer deadline so that a slow trickle cannot hang."""
    try:
        async with asyncio.timeout(timeout):
            head = await client.head(url)
            if head.status_code < HTTP_ERROR:
                return LinkAnswer(url, head.status_code, str(head.url))
            async with client.stream("GET", url) as got:
                return LinkAnswer(url, got.status_code, str(got.url))
    except TimeoutError:
        return LinkAnswer(url, error=f"no answer within {timeout:g} s")
    except httpx.TooManyRedirects:
        return LinkAnswer(url, error="too many redirects")
    except httpx.ConnectError as err:
        return LinkAnswer(url, error=f"cannot connect ({_reason(err)})")
    except httpx.HTTPError as err:
        return LinkAnswer(url, error=f"{type(err).__name__} ({_reason(err)})")


def _reason(err: Exception) -> str:
    text = str(err) or type(err).__name__
    return text.splitlines()[0][:120]


async def check_links(
    targets: Sequence[LinkTarget],
    *,
    client: httpx.AsyncClient,
    concurrency: int = 8,
    timeout: float = 10.0,
) -> LinkReport:
    """Ask every distinct web URL once, at most ``concurrency`` at a time.

    The client is the caller's (the composition root opens it with ``follow_redirects=True``,
    see :func:`link_client`); ``timeout`` bounds each URL's whole answer, redirects included.
    """
    web = web_targets(targets)
    urls = list(dict.fromkeys(t.url for t in web))
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(url: str) -> LinkAnswer:
        async with gate:
            return await _ask(client, url, timeout=timeout)

    answers = dict(zip(urls, await asyncio.gather(*(one(u) for u in urls)), strict=True))
    return LinkReport(checked=[(t, answers[t.url]) for t in web])


def link_client(*, timeout: float, concurrency: int) -> httpx.AsyncClient:
    """The HTTP client of ``issue check --links``: redirects followed, timeouts on every step."""
    return httpx.AsyncClient(
        follow_redirects=True,
        max_redirects=10,
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(max_connections=max(1, concurrency)),
        headers={"User-Agent": USER_AGENT},
    )
