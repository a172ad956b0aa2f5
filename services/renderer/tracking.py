"""Tracked article links: a short signed token per link, and the rewrite of an edition's links.

A link of an article goes out as ``{pages_url}/{edition}/r/{token}``; the token is a compact
token of :class:`shared.tokens.TokenSigner` (purpose ``click``): nine bytes of payload and the
first eight bytes of its HMAC-SHA256, base64url, 23 characters. The payload names the issue,
the edition (the segment the mail went to), the article (its index in the issue), the link (its
index in the article) and how many tracked links the whole mail holds (what the scanner-burst
rule needs). The target is not in the token: it is the ``tracked_link`` row the renderer wrote
for those four numbers when it rendered the edition, so a redirect can only go to a URL an
issue linked, and a damaged token can only show a URL of ours.

In per-reader mode (``NEWSLETTER_PER_READER_ANALYTICS=true``) each tracked URL ends with the
``@@NL_READER_REF@@`` marker: the dispatcher fills it with ``/{ref}`` (a signed per-delivery
reference, :mod:`shared.reader_refs`) for a reader who consented, and with nothing otherwise.

Only ``http(s)`` links inside articles are tracked; the unsubscribe, preference, view-online
and archive links of the layout never are (they are not article links), nor images.
"""

from __future__ import annotations

import copy
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from html import escape as html_escape
from urllib.parse import urlsplit

from markdown_it.token import Token

from services.renderer.issue import IssueEdition
from shared.db.tables import TrackedLink
from shared.messaging.placeholders import READER_REF
from shared.settings import LANGUAGES
from shared.tokens import Purpose, TokenError, TokenSigner

# The issue number is 32 bits: issue numbers are not bounded by 65,535 (the identity tests use
# numbers up to 999,999,999).
PAYLOAD = struct.Struct(">BIBBBB")  # version, issue, edition, article, link, links in the mail
VERSION = 2
MAX_INDEX = 255
CLICK_PATH = "r"


@dataclass(frozen=True)
class LinkRef:
    """What a click token names."""

    issue: int
    edition: str
    article: int
    link: int
    links: int  # tracked links in the whole mail

    def pack(self) -> bytes:
        return PAYLOAD.pack(
            VERSION, self.issue, LANGUAGES.index(self.edition), self.article, self.link, self.links
        )

    @classmethod
    def unpack(cls, data: bytes) -> LinkRef | None:
        if len(data) != PAYLOAD.size:
            return None
        version, issue, edition, article, link, links = PAYLOAD.unpack(data)
        if version != VERSION or edition >= len(LANGUAGES):
            return None
        return cls(issue, LANGUAGES[edition], article, link, links)


class LinkTokens:
    """Mints and checks click tokens with the project's signer."""

    def __init__(self, signer: TokenSigner) -> None:
        self._signer = signer

    def mint(self, ref: LinkRef) -> str:
        return self._signer.sign_compact(Purpose.CLICK, ref.pack())

    def check(self, token: str) -> tuple[LinkRef | None, bool]:
        """The reference and whether it is authentic; a forged one is for display only."""
        try:
            data, good = self._signer.open_compact(Purpose.CLICK, token)
        except TokenError:
            return None, False
        ref = LinkRef.unpack(data)
        return ref, good and ref is not None


def click_url(pages_url: str, *, edition: str, token: str) -> str:
    return f"{pages_url}/{edition}/{CLICK_PATH}/{token}"


def _links_of(tokens: list[Token]) -> Iterator[Token]:
    for token in tokens:
        for child in token.children or []:
            if child.type == "link_open":
                yield child


def _trackable(href: str) -> bool:
    try:
        return urlsplit(href).scheme in {"http", "https"}
    except ValueError:
        return False


def track_edition(
    edition: IssueEdition,
    *,
    segment: str,
    pages_url: str,
    tokens: LinkTokens,
    per_reader: bool = False,
) -> tuple[IssueEdition, list[TrackedLink]]:
    """A copy of ``edition`` whose article links go through click tokens, and their targets.

    Rewriting the parsed Markdown (not the HTML) gives the HTML part and the plain part's
    footnotes the same tracked URLs, and tells exactly which article each link belongs to.
    """
    tracked = copy.deepcopy(edition)
    found: list[tuple[int, int, Token, str, str]] = []
    for a_index, article in enumerate(tracked.articles):
        if a_index > MAX_INDEX:
            break
        body = ([article.lead] if article.lead is not None else []) + article.body
        l_index = 0
        for link in _links_of(body):
            href = str(link.attrGet("href") or "")
            if _trackable(href) and l_index <= MAX_INDEX:
                found.append((a_index, l_index, link, article.key, article.title))
                l_index += 1
    total = min(len(found), MAX_INDEX)
    rows: list[TrackedLink] = []
    for a_index, l_index, link, key, title in found:
        ref = LinkRef(edition.number, segment, a_index, l_index, total)
        rows.append(
            TrackedLink(
                issue_number=edition.number,
                edition=segment,
                article=a_index,
                link=l_index,
                article_key=key[:128],
                article_title=title[:998],
                url=str(link.attrGet("href")),
            )
        )
        url = click_url(pages_url, edition=segment, token=tokens.mint(ref))
        link.attrSet("href", url + READER_REF if per_reader else url)
    return tracked, rows


class EditionTracker:
    """The ``rewrite`` step of :func:`services.renderer.editions.render_plan` for one send:
    rewrites each segment's edition and keeps the targets to write."""

    def __init__(self, *, tokens: LinkTokens, pages_url: str, per_reader: bool = False) -> None:
        self._tokens = tokens
        self._pages_url = pages_url
        self._per_reader = per_reader
        self.links: list[TrackedLink] = []

    def __call__(self, edition: IssueEdition, segment: str) -> IssueEdition:
        tracked, rows = track_edition(
            edition,
            segment=segment,
            pages_url=self._pages_url,
            tokens=self._tokens,
            per_reader=self._per_reader,
        )
        self.links.extend(rows)
        return tracked


_TRACKED_HREF = re.compile(
    r'href="[^"]*?/(?:en|be|ru)/'
    + CLICK_PATH
    + r"/([A-Za-z0-9_-]{8,64})(?:"
    + re.escape(READER_REF)
    + r')?"'
)


def untracked_html(html: str, *, tokens: LinkTokens, links: Sequence[TrackedLink]) -> str:
    """``html`` with each tracked link pointing at its target again (the archive's web page
    of an issue: a visitor of the site is not a reader of the mail, and is not counted)."""
    targets = {(r.issue_number, r.edition, r.article, r.link): r.url for r in links}

    def target(match: re.Match[str]) -> str:
        ref, good = tokens.check(match.group(1))
        url = targets.get((ref.issue, ref.edition, ref.article, ref.link)) if ref else None
        if not good or url is None:
            return match.group(0)
        return f'href="{html_escape(url, quote=True)}"'

    return _TRACKED_HREF.sub(target, html)
