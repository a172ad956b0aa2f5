"""The renderer's click service: token check, target lookup, counting, the batch flusher.

One instance per renderer process, built by its composition root: the counter lives in
memory and :meth:`ClickService.run_flusher` writes it every ``click_flush_s`` seconds (and
once more when the process stops), so a click never waits for the database. Targets are
read from ``tracked_link`` once per link and kept (a row changes only when an issue is sent
again with a corrected link, and then the old target is still one the issue linked).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from prometheus_client import CollectorRegistry, Counter

from services.renderer.click_counter import ClickCounter
from services.renderer.click_store import (
    flush_counts,
    flush_open_counts,
    flush_reader_clicks,
    sweep_withdrawn,
    tracked_link,
)
from services.renderer.opens import OpenCounter, OpenRef, OpenTokens
from services.renderer.store import Sessions
from services.renderer.tracking import LinkRef, LinkTokens
from shared.db.tables import ClickVerdict, OpenVerdict
from shared.reader_refs import ReaderRefs
from shared.tokens import TokenSigner

log = structlog.get_logger(__name__)

MAX_TARGETS = 100_000


class ClickMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.clicks = Counter(
            "newsletter_clicks",
            "Readers' clicks on tracked article links (machines filtered out).",
            ["edition", "issue"],
            registry=registry,
        )
        self.filtered = Counter(
            "newsletter_clicks_filtered",
            "Requests of tracked links not counted as readers' clicks, by reason.",
            ["edition", "issue", "reason"],
            registry=registry,
        )
        self.opens = Counter(
            "newsletter_opens",
            "Loads of the open pixel (NEWSLETTER_OPEN_TRACKING), by verdict: machine-inflated.",
            ["edition", "issue", "verdict"],
            registry=registry,
        )

    def observe_open(self, ref: OpenRef, verdict: OpenVerdict) -> None:
        self.opens.labels(edition=ref.edition, issue=str(ref.issue), verdict=verdict.value).inc()

    def observe(self, ref: LinkRef, verdict: ClickVerdict) -> None:
        if verdict is ClickVerdict.COUNTED:
            self.clicks.labels(edition=ref.edition, issue=str(ref.issue)).inc()
        else:
            self.filtered.labels(
                edition=ref.edition, issue=str(ref.issue), reason=verdict.value
            ).inc()


class ClickService:
    def __init__(
        self,
        *,
        sessions: Sessions,
        signer: TokenSigner,
        flush_s: float = 2.0,
        burst_window_s: float = 10.0,
        metrics: ClickMetrics | None = None,
        per_reader: bool = False,
        sweep_s: float = 60.0,
    ) -> None:
        self.sessions = sessions
        self.tokens = LinkTokens(signer)
        # Per-reader mode only: None otherwise, and a reference in a URL is then ignored.
        self.reader_refs = ReaderRefs(signer) if per_reader else None
        self.counter = ClickCounter(
            burst_window_s=burst_window_s, on_count=metrics.observe if metrics else None
        )
        self.open_tokens = OpenTokens(signer)
        self.opens = OpenCounter(on_count=metrics.observe_open if metrics else None)
        self._flush_s = flush_s
        self._sweep_s = sweep_s
        self._swept_at = 0.0
        self._targets: dict[tuple[int, str, int, int], str] = {}
        self._flush_lock = asyncio.Lock()

    async def target(self, ref: LinkRef) -> str | None:
        key = (ref.issue, ref.edition, ref.article, ref.link)
        found = self._targets.get(key)
        if found is None:
            row = await tracked_link(
                self.sessions,
                issue=ref.issue,
                edition=ref.edition,
                article=ref.article,
                link=ref.link,
            )
            if row is None:
                return None
            if len(self._targets) >= MAX_TARGETS:
                self._targets.clear()
            found = self._targets[key] = row.url
        return found

    async def flush(self, *, everything: bool = False) -> int:
        """Write what was counted; on a database error keep it for the next flush."""
        async with self._flush_lock:
            self.counter.release_due(everything=everything)
            counts = self.counter.drain()
            opens = self.opens.drain()
            await self._flush_readers()
            if not counts and not opens:
                return 0
            try:
                await flush_counts(self.sessions, counts)
            except Exception as err:  # any database error: the counts wait for the next flush
                self.counter.restore(counts)
                self.opens.restore(opens)
                log.warning("clicks_flush_failed", error=type(err).__name__, rows=len(counts))
                return 0
            try:
                await flush_open_counts(self.sessions, opens)
            except Exception as err:  # the clicks are written; the loads wait
                self.opens.restore(opens)
                log.warning("opens_flush_failed", error=type(err).__name__, rows=len(opens))
                return len(counts)
            log.debug(
                "clicks_flushed",
                rows=len(counts) + len(opens),
                clicks=sum(counts.values()),
                loads=sum(opens.values()),
            )
            return len(counts) + len(opens)

    async def _flush_readers(self) -> None:
        readers = self.counter.drain_readers()
        if not readers:
            return
        try:
            written = await flush_reader_clicks(self.sessions, readers)
        except Exception as err:  # any database error: they wait for the next flush
            self.counter.restore_readers(readers)
            log.warning("reader_clicks_flush_failed", error=type(err).__name__, rows=len(readers))
            return
        log.debug("reader_clicks_flushed", rows=written, dropped=len(readers) - written)

    async def sweep(self) -> int:
        """Delete the per-reader clicks of readers who withdrew (any path: the preference page,
        an unsubscribe, a complaint, an erasure); run every ``sweep_s`` by the flusher, whether
        or not per-reader mode is on now (rows written while it was on are covered too)."""
        self._swept_at = time.monotonic()
        try:
            deleted = await sweep_withdrawn(self.sessions)
        except Exception as err:  # any database error: the next sweep deletes them
            log.warning("reader_clicks_sweep_failed", error=type(err).__name__)
            return 0
        if deleted:
            log.info("reader_clicks_withdrawn_deleted", rows=deleted)
        return deleted

    async def run_flusher(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._flush_s)
            await self.flush()
            if time.monotonic() - self._swept_at >= self._sweep_s:
                await self.sweep()
        await self.flush(everything=True)
