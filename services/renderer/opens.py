"""The open pixel (``NEWSLETTER_OPEN_TRACKING=true`` only): its token, its verdicts, its counter.

With the setting on, the HTML part of each edition of a tracked send ends with a 1x1 GIF at
``{pages_url}/{edition}/o/{token}.gif``. The token is a compact token of
:class:`shared.tokens.TokenSigner` (purpose ``open``): six bytes (version, issue, edition)
and eight bytes of HMAC, 19 characters. It names no reader and no delivery: every reader of
an edition loads the same URL, so a load is counted per issue, edition, UTC day and verdict
(the aggregate rule of issue 18), never per person. With the setting off there is no pixel at
all, nor a route to answer it.

A load is not an open. What loads images without a reader, from published sources:

- Apple Mail Privacy Protection downloads remote content through Apple's proxies when the mail
  arrives, "whether or not you open the email", so every such mail looks opened (Apple's
  description as reported by cleanbox.app and 9to5Mac; SendGrid's glossary: Apple Mail loads
  images without configuration). Its fetches carry a bare ``Mozilla/5.0`` User-Agent and no
  reader's address: those are counted as ``apple_proxy``. A proxy that sends a browser's
  User-Agent cannot be told apart from a reader's mail program, which is why every open figure
  is shown as *machine-inflated*.
- Gmail serves every image through Google's proxy (``GoogleImageProxy`` in the User-Agent;
  Google Workspace's "Image URL proxy" help page). It fetches when a reader opens the mail and
  then serves its cached copy (Word to the Wise, "Gmail deploys image proxy servers", 2013):
  counted as ``gmail_proxy``, a lower bound for Gmail readers, since one cached copy can serve
  many later opens.
- HEAD requests, prefetches and known scanners are filtered exactly as for clicks
  (:func:`services.renderer.click_counter.classify`).
- Readers whose mail program blocks images (Outlook, Thunderbird and Gmail by default in some
  set-ups, SendGrid's glossary) never load it: opens are missed too.

So the report gives loads per edition (``loaded`` + ``gmail_proxy``, machine-inflated), the
likely Apple preloads and the filtered requests apart, and never an "open rate" of readers.
"""

from __future__ import annotations

import base64
import re
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

from services.renderer.click_counter import classify
from shared.db.tables import ClickVerdict, OpenVerdict
from shared.settings import LANGUAGES
from shared.tokens import Purpose, TokenError, TokenSigner

PAYLOAD = struct.Struct(">BIB")  # version, issue (32 bits), edition
VERSION = 2
OPEN_PATH = "o"
# A transparent GIF of 42 bytes: 1x1, one transparent colour.
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
PIXEL_HEADERS = {
    # Every load should reach us (a cached copy counts nothing) and nothing should be kept.
    "Cache-Control": "no-store, no-cache, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
    "Referrer-Policy": "no-referrer",
}
GMAIL_PROXY_AGENT = "googleimageproxy"
APPLE_PROXY_AGENT = "mozilla/5.0"  # the whole User-Agent of Apple's preloads, nothing after it
_FILTERED = {
    ClickVerdict.HEAD: OpenVerdict.HEAD,
    ClickVerdict.PREFETCH: OpenVerdict.PREFETCH,
    ClickVerdict.SCANNER: OpenVerdict.SCANNER,
}
#: Verdicts that a reader may stand behind (shown together, as machine-inflated loads).
LOADS = (OpenVerdict.LOADED.value, OpenVerdict.GMAIL_PROXY.value)

OpenKey = tuple[int, str, date, str]  # issue, edition, day, verdict


@dataclass(frozen=True)
class OpenRef:
    """What an open token names: an issue's edition, nothing about the reader."""

    issue: int
    edition: str

    def pack(self) -> bytes:
        return PAYLOAD.pack(VERSION, self.issue, LANGUAGES.index(self.edition))

    @classmethod
    def unpack(cls, data: bytes) -> OpenRef | None:
        if len(data) != PAYLOAD.size:
            return None
        version, issue, edition = PAYLOAD.unpack(data)
        if version != VERSION or edition >= len(LANGUAGES):
            return None
        return cls(issue, LANGUAGES[edition])


class OpenTokens:
    def __init__(self, signer: TokenSigner) -> None:
        self._signer = signer

    def mint(self, ref: OpenRef) -> str:
        return self._signer.sign_compact(Purpose.OPEN, ref.pack())

    def check(self, token: str) -> OpenRef | None:
        """The reference of an authentic token, else None (a forged load counts nothing)."""
        try:
            data, good = self._signer.open_compact(Purpose.OPEN, token)
        except TokenError:
            return None
        ref = OpenRef.unpack(data)
        return ref if good else None


def pixel_url(pages_url: str, *, edition: str, token: str) -> str:
    return f"{pages_url}/{edition}/{OPEN_PATH}/{token}.gif"


class OpenPixels:
    """The pixel URL of each segment of one send (given to :func:`render_plan`)."""

    def __init__(self, *, tokens: OpenTokens, pages_url: str) -> None:
        self._tokens = tokens
        self._pages_url = pages_url

    def __call__(self, issue: int, segment: str) -> str:
        token = self._tokens.mint(OpenRef(issue, segment))
        return pixel_url(self._pages_url, edition=segment, token=token)


_PIXEL_IMG = re.compile(
    r'<img\b[^>]*\bsrc="[^"]*?/(?:en|be|ru)/' + OPEN_PATH + r'/[A-Za-z0-9_-]{8,64}\.gif"[^>]*>'
)


def without_pixel(html: str) -> str:
    """``html`` without its open pixel (the archive's web page: a visitor is not a reader)."""
    return _PIXEL_IMG.sub("", html)


def classify_open(method: str, headers: Mapping[str, str]) -> OpenVerdict:
    machine = classify(method, headers)
    agent = headers.get("user-agent", "").strip().lower()
    if GMAIL_PROXY_AGENT in agent:  # before the scanner rule: its agent says "via ggpht.com"
        return OpenVerdict.HEAD if method == "HEAD" else OpenVerdict.GMAIL_PROXY
    if machine is not None:
        return _FILTERED.get(machine, OpenVerdict.SCANNER)
    if agent == APPLE_PROXY_AGENT:
        return OpenVerdict.APPLE_PROXY
    return OpenVerdict.LOADED


class OpenCounter:
    """Loads per issue, edition, day and verdict, in memory until the flusher drains them."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        on_count: Callable[[OpenRef, OpenVerdict], None] | None = None,
    ) -> None:
        self._clock = clock
        self._on_count = on_count
        self._counts: dict[OpenKey, int] = {}

    def load(self, ref: OpenRef, verdict: OpenVerdict) -> None:
        day = datetime.fromtimestamp(self._clock(), UTC).date()
        key = (ref.issue, ref.edition, day, verdict.value)
        self._counts[key] = self._counts.get(key, 0) + 1
        if self._on_count is not None:
            self._on_count(ref, verdict)

    def drain(self) -> dict[OpenKey, int]:
        counts, self._counts = self._counts, {}
        return counts

    def restore(self, counts: Mapping[OpenKey, int]) -> None:
        for key, n in counts.items():
            self._counts[key] = self._counts.get(key, 0) + n
