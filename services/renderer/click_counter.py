"""The click counter: classify a request, hold a reader's click briefly, count in memory.

A click costs one dictionary update on the hot path; :meth:`ClickCounter.drain` hands the
counts to the flusher (``click_store.flush``), which upserts them in one transaction.

Machines are not readers (issue 18). Filtered, and counted under their reason:

- ``head``: a HEAD request (link checkers and scanners ask for headers only);
- ``prefetch``: ``Sec-Purpose``/``Purpose: prefetch`` (Chromium's and Safari's prefetch and
  prerender) or ``X-Moz: prefetch`` (Firefox);
- ``scanner``: a User-Agent naming a link scanner. The families are those that publish their
  rewriting or are documented to follow every link: Microsoft Safe Links / Defender ("ms-office",
  "Microsoft Office"), Barracuda Link Protection, Proofpoint URL Defense, Mimecast URL Protect,
  Cisco Secure Email (IronPort), and generic crawlers (the IAB list's approach: "bot",
  "crawler", "spider"), HTTP libraries that no reader's browser sends, and no User-Agent;
- ``burst``: one client (address and User-Agent, kept in memory only, for the window, never
  written) following every tracked link of a mail within ``burst_window_s``: the pattern of
  sandboxes that "click every link in the email within 10 seconds" of delivery (Defender's
  Safe Attachments; Marketo's "proximity pattern"). A reader's click is therefore held for the
  window before it is counted, so that a burst can take back the clicks it began with.

What a held click waits for is time only: :meth:`release_due` (called by the flusher) counts
the clicks whose window has ended.

Per-reader mode: a click whose URL carried a good per-delivery reference also names its
delivery. When (and only when) it is counted as a reader's click, the delivery, the link and
the time go into a second buffer (:meth:`drain_readers`); the flusher writes them for readers
whose consent still stands. Filtered requests and bursts never make a per-reader entry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from services.renderer.tracking import LinkRef
from shared.db.tables import ClickVerdict

SCANNER_AGENTS: tuple[str, ...] = (
    "ms-office",
    "msoffice",
    "microsoft office",
    "microsoft-urlanalyzer",
    "safelinks",
    "barracuda",
    "proofpoint",
    "urldefense",
    "mimecast",
    "ironport",
    "ciscosecureemail",
    "fortimail",
    "bot",
    "crawler",
    "spider",
    "headlesschrome",
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp",
    "go-http-client",
    "curl/",
    "wget/",
    "libwww-perl",
    "okhttp",
)
MAX_HELD = 50_000  # clients whose clicks wait for their burst window at once

CounterKey = tuple[int, str, int, int, date, str]  # issue, edition, article, link, day, verdict
MAX_READER_ENTRIES = 100_000  # per-reader clicks waiting for a flush (a flood drops the rest)


@dataclass(frozen=True)
class ReaderEntry:
    """One counted click of a mail whose links carried a per-delivery reference."""

    delivery_id: int
    ref: LinkRef
    at: datetime


def classify(method: str, headers: Mapping[str, str]) -> ClickVerdict | None:
    """The reason a request is not a reader's click, or None when it may be one."""
    if method == "HEAD":
        return ClickVerdict.HEAD
    purpose = (headers.get("sec-purpose") or headers.get("purpose") or "").lower()
    if "prefetch" in purpose or "prerender" in purpose:
        return ClickVerdict.PREFETCH
    if headers.get("x-moz", "").lower() == "prefetch":
        return ClickVerdict.PREFETCH
    agent = headers.get("user-agent", "").strip().lower()
    if not agent or any(signature in agent for signature in SCANNER_AGENTS):
        return ClickVerdict.SCANNER
    return None


@dataclass
class _Held:
    started: float
    burst: bool = False
    links: set[tuple[int, int]] = field(default_factory=set)
    clicks: list[tuple[LinkRef, date, ReaderEntry | None]] = field(default_factory=list)


def _today() -> date:
    return datetime.now(UTC).date()


class ClickCounter:
    """Counts in memory; one instance per process, drained by the flusher."""

    def __init__(
        self,
        *,
        burst_window_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        today: Callable[[], date] = _today,
        on_count: Callable[[LinkRef, ClickVerdict], None] | None = None,
    ) -> None:
        self._window = burst_window_s
        self._clock = clock
        self._today = today
        self._on_count = on_count
        self._counts: dict[CounterKey, int] = {}
        self._held: dict[tuple[int, int, str, int], _Held] = {}
        self._readers: list[ReaderEntry] = []
        self.readers_dropped = 0

    def _add(
        self,
        ref: LinkRef,
        verdict: ClickVerdict,
        day: date,
        n: int = 1,
        reader: ReaderEntry | None = None,
    ) -> None:
        key = (ref.issue, ref.edition, ref.article, ref.link, day, verdict.value)
        self._counts[key] = self._counts.get(key, 0) + n
        if reader is not None and verdict is ClickVerdict.COUNTED:
            if len(self._readers) < MAX_READER_ENTRIES:
                self._readers.append(reader)
            else:
                self.readers_dropped += 1
        if self._on_count is not None:
            self._on_count(ref, verdict)

    def filtered(self, ref: LinkRef, verdict: ClickVerdict) -> None:
        self._add(ref, verdict, self._today())

    def click(self, ref: LinkRef, *, client: int, delivery: int | None = None) -> None:
        """A request that looks like a reader's: held for the burst window of its client.

        ``delivery``: the delivery named by the URL's per-delivery reference (per-reader mode,
        a consenting reader's mail), else None.
        """
        day = self._today()
        reader = ReaderEntry(delivery, ref, datetime.now(UTC)) if delivery is not None else None
        if ref.links < 2 or self._window <= 0:  # one link: "every link" proves nothing
            self._add(ref, ClickVerdict.COUNTED, day, reader=reader)
            return
        now = self._clock()
        key = (client, ref.issue, ref.edition, ref.links)
        held = self._held.get(key)
        if held is not None and now - held.started > self._window:
            self._release(key, held)
            held = None
        if held is None:
            if len(self._held) >= MAX_HELD:
                self.release_due()
            if len(self._held) >= MAX_HELD:  # a flood: count at once rather than grow
                self._add(ref, ClickVerdict.COUNTED, day, reader=reader)
                return
            held = self._held[key] = _Held(started=now)
        if held.burst:
            self._add(ref, ClickVerdict.BURST, day)
            return
        held.links.add((ref.article, ref.link))
        held.clicks.append((ref, day, reader))
        if len(held.links) >= ref.links:
            held.burst = True
            for ref_, day_, _reader in held.clicks:
                self._add(ref_, ClickVerdict.BURST, day_)
            held.clicks.clear()

    def _release(self, key: tuple[int, int, str, int], held: _Held) -> None:
        del self._held[key]
        for ref, day, reader in held.clicks:
            self._add(ref, ClickVerdict.COUNTED, day, reader=reader)

    def release_due(self, *, everything: bool = False) -> None:
        """Count the held clicks whose burst window has ended (all of them at shutdown)."""
        now = self._clock()
        for key, held in list(self._held.items()):
            if everything or now - held.started > self._window:
                self._release(key, held)

    def drain(self) -> dict[CounterKey, int]:
        counts, self._counts = self._counts, {}
        return counts

    def drain_readers(self) -> list[ReaderEntry]:
        readers, self._readers = self._readers, []
        return readers

    def restore_readers(self, readers: list[ReaderEntry]) -> None:
        """Put back per-reader clicks a failed flush could not write (bounded like the rest)."""
        room = max(0, MAX_READER_ENTRIES - len(self._readers))
        self._readers[:0] = readers[:room]
        self.readers_dropped += max(0, len(readers) - room)

    def restore(self, counts: Mapping[CounterKey, int]) -> None:
        """Put back counts a failed flush could not write (they are written next time)."""
        for key, n in counts.items():
            self._counts[key] = self._counts.get(key, 0) + n

    @property
    def held(self) -> int:
        return len(self._held)
