"""Group commit of signups: concurrent signups of one process written in one transaction.

Under a rush every signup paid its own transaction (a look-up, three INSERTs, a commit, a
publish and its confirm) and the statement building around each of them: that was most of the
CPU of a signup. Here a few writer tasks (several, because a batch mostly waits on round trips
and confirms, and those waits overlap) each take whatever signups are waiting (at most
``max_batch``) and write them together, with statements that are the same text whatever the
batch size (``unnest`` over arrays, so asyncpg prepares each once):

1. one look-up of every address (its subscriber and whether it is suppressed);
2. one statement for the new addresses: a multi-row INSERT of the subscribers with their
   confirmation slot taken, ``ON CONFLICT (email) DO NOTHING``, and, in data-modifying CTEs,
   their editions and consent records. An address another process inserted meanwhile comes
   back missing and is handled as a known address (looked up again);
3. for the known, not active addresses: one UPDATE back to pending, their editions replaced,
   and one conditional UPDATE that claims the one-mail-per-interval slot (the same rule as
   :func:`~services.subscription.records.claim_confirmation_slot`, so it holds across
   processes), then their editions and consent records;
4. one conditional upsert that claims the mailboxes' slots of the signups that won their
   address's (``mailbox_slots.py``: variants of one inbox get one mail per interval); commit;
5. the confirmation commands of the batch published together, waiting for every confirm;
   a command the broker did not take has its slot released (one UPDATE) and its signup
   raises :class:`MailQueueUnavailable` (503: nothing promised).

Each signup still gets its own outcome. If the batch's transaction fails (a deadlock between
two processes, a broken connection), its signups are retried one by one with
:func:`~services.subscription.signup.sign_up`, each in its own transaction, so one bad signup
cannot fail the others. At low load a batch is a single signup and costs what
:func:`sign_up` costs.

PostgreSQL only (``unnest``, arrays); SQLite, a single writer anyway, keeps :class:`OneByOne`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import structlog
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.subscription import mailbox_slots
from services.subscription.errors import MailQueueUnavailable
from services.subscription.languages import as_language
from services.subscription.mail_commands import ConfirmationTo, TransactionalMail
from services.subscription.signup import SignupOutcome, SignupRequest, SignupResult, sign_up
from shared.db.tables import SubscriberStatus
from shared.db.tables.timestamps import utcnow

log = structlog.get_logger(__name__)


class SignupWriter(Protocol):
    """What the signup route calls: store one signup and request its confirmation mail."""

    async def sign_up(self, *, mail: TransactionalMail, request: SignupRequest) -> SignupResult:
        """Raises :class:`MailQueueUnavailable` if the mail could not be queued."""
        ...


class OneByOne:
    """Each signup in its own transaction (SQLite, and the tests' reference)."""

    def __init__(
        self, *, sessions: async_sessionmaker[AsyncSession], confirmation_interval_s: int
    ) -> None:
        self._sessions = sessions
        self._interval = confirmation_interval_s

    async def sign_up(self, *, mail: TransactionalMail, request: SignupRequest) -> SignupResult:
        return await sign_up(
            sessions=self._sessions,
            mail=mail,
            request=request,
            confirmation_interval_s=self._interval,
        )


# The statements, built once: the same text for any batch size.
_LOOKUP = text(
    "SELECT 's' AS kind, email AS key, id, status FROM subscriber WHERE email = ANY(:emails) "
    "UNION ALL SELECT 'x', email_hash, NULL, NULL FROM suppression "
    "WHERE email_hash = ANY(:hashes) AND lifted_at IS NULL"
)
_FIND = text("SELECT email, id, status FROM subscriber WHERE email = ANY(:emails)")
# The new subscribers with their slot taken, their editions and their consent records in one
# statement (data-modifying CTEs; the foreign keys are checked at the end of the statement).
_INSERT_NEW = text(
    "WITH t AS (SELECT * FROM unnest(CAST(:emails AS text[]), CAST(:hashes AS text[]), "
    "CAST(:domains AS text[]), CAST(:locales AS text[]), CAST(:languages AS text[]), "
    "CAST(:versions AS text[]), CAST(:forms AS text[]), CAST(:sources AS text[]), "
    "CAST(:ip_hashes AS text[]), CAST(:shown AS timestamptz[]), CAST(:zones AS text[])) "
    "AS t(e, h, d, l, ls, v, f, s, ip, sa, z)), "
    "ins AS (INSERT INTO subscriber (email, email_hash, email_domain, status, locale, "
    "time_zone, created_at, updated_at, last_confirmation_sent_at) "
    "SELECT e, h, d, 'pending', l, z, :now, :now, :now FROM t ORDER BY e "
    "ON CONFLICT (email) DO NOTHING RETURNING email, id), "
    "langs AS (INSERT INTO subscriber_language (subscriber_id, language) "
    "SELECT ins.id, x FROM ins JOIN t ON t.e = ins.email "
    "CROSS JOIN LATERAL unnest(string_to_array(t.ls, ',')) AS x), "
    "consents AS (INSERT INTO consent_record (subscriber_id, email_hash, consent_text_version, "
    "consent_language, languages, form, source, client_ip_hash, shown_at, given_at) "
    "SELECT ins.id, t.h, t.v, t.l, t.ls, t.f, t.s, t.ip, t.sa, :now "
    "FROM ins JOIN t ON t.e = ins.email) "
    "SELECT email, id FROM ins"
)
_BACK_TO_PENDING = text(
    "UPDATE subscriber SET status = 'pending', locale = t.l, updated_at = :now, "
    "time_zone = COALESCE(t.z, subscriber.time_zone) "
    "FROM unnest(CAST(:ids AS integer[]), CAST(:locales AS text[]), CAST(:zones AS text[])) "
    "AS t(i, l, z) "
    "WHERE subscriber.id = t.i"
)
_DROP_LANGUAGES = text("DELETE FROM subscriber_language WHERE subscriber_id = ANY(:ids)")
_CLAIM_SLOTS = text(
    "UPDATE subscriber SET last_confirmation_sent_at = :now WHERE id = ANY(:ids) AND "
    "(last_confirmation_sent_at IS NULL OR last_confirmation_sent_at <= :cutoff) RETURNING id"
)
_INSERT_LANGUAGES = text(
    "INSERT INTO subscriber_language (subscriber_id, language) "
    "SELECT i, l FROM unnest(CAST(:ids AS integer[]), CAST(:languages AS text[])) AS t(i, l)"
)
_INSERT_CONSENTS = text(
    "INSERT INTO consent_record (subscriber_id, email_hash, consent_text_version, "
    "consent_language, languages, form, source, client_ip_hash, shown_at, given_at) "
    "SELECT i, h, v, cl, ls, f, s, ip, sa, :now FROM unnest(CAST(:ids AS integer[]), "
    "CAST(:hashes AS text[]), CAST(:versions AS text[]), CAST(:consent_languages AS text[]), "
    "CAST(:languages AS text[]), CAST(:forms AS text[]), CAST(:sources AS text[]), "
    "CAST(:ip_hashes AS text[]), CAST(:shown AS timestamptz[])) "
    "AS t(i, h, v, cl, ls, f, s, ip, sa)"
)
_RELEASE_SLOTS = text(
    "UPDATE subscriber SET last_confirmation_sent_at = NULL "
    "WHERE id = ANY(:ids) AND last_confirmation_sent_at = :claimed_at"
)


@dataclass
class _Pending:
    request: SignupRequest
    mail: TransactionalMail
    future: asyncio.Future[SignupResult]
    outcome: SignupOutcome = SignupOutcome.CREATED
    subscriber_id: int | None = None
    claimed: bool = False


@dataclass
class _Batch:
    items: list[_Pending]
    now: datetime = field(default_factory=utcnow)


class GroupCommit:
    """Concurrent signups of this process, written ``max_batch`` at a time by ``writers``
    tasks; started and stopped by the app's lifespan."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        confirmation_interval_s: int,
        writers: int = 8,
        max_batch: int = 64,
    ) -> None:
        self._engine = engine
        self._one_by_one = OneByOne(
            sessions=sessions, confirmation_interval_s=confirmation_interval_s
        )
        self._interval = confirmation_interval_s
        self._writers = writers
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._write_loop(), name=f"signup-writer-{n}")
            for n in range(self._writers)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while not self._queue.empty():
            waiting = self._queue.get_nowait()
            if not waiting.future.done():
                waiting.future.set_exception(MailQueueUnavailable("stopping"))

    async def sign_up(self, *, mail: TransactionalMail, request: SignupRequest) -> SignupResult:
        future: asyncio.Future[SignupResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(request=request, mail=mail, future=future))
        return await future

    async def _write_loop(self) -> None:
        while True:
            items = [await self._queue.get()]
            while len(items) < self._max_batch and not self._queue.empty():
                items.append(self._queue.get_nowait())
            try:
                await self._write(_Batch(items))
            except Exception as err:
                log.exception("signup_batch_failed", size=len(items), error=type(err).__name__)
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(err)
            finally:
                # Stopped in the middle of a batch (the lifespan ends): no request waits forever.
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(MailQueueUnavailable("stopping"))

    async def _write(self, batch: _Batch) -> None:
        started = time.perf_counter()
        try:
            async with self._engine.begin() as connection:
                await self._store(connection, batch)
        except SQLAlchemyError as err:
            # One by one, each in its own transaction: a deadlock or a bad row fails alone.
            log.warning(
                "signup_batch_retried_one_by_one", size=len(batch.items), error=type(err).__name__
            )
            await asyncio.gather(*(self._alone(item) for item in batch.items))
            return
        stored = time.perf_counter()
        await self._mail(batch)
        log.debug(
            "signup_batch_written",
            size=len(batch.items),
            store_s=round(stored - started, 4),
            mail_s=round(time.perf_counter() - stored, 4),
        )

    async def _alone(self, item: _Pending) -> None:
        try:
            result = await self._one_by_one.sign_up(mail=item.mail, request=item.request)
        except Exception as err:
            if not item.future.done():
                item.future.set_exception(err)
        else:
            if not item.future.done():
                item.future.set_result(result)

    async def _store(self, connection: AsyncConnection, batch: _Batch) -> None:
        """Steps 1-4 of the module docstring, in the caller's transaction."""
        items, now = batch.items, batch.now
        emails = sorted({i.request.address.email for i in items})
        hashes = sorted({i.request.address.email_hash for i in items})
        found: dict[str, tuple[int, str]] = {}
        suppressed: set[str] = set()
        for kind, key, row_id, status in await connection.execute(
            _LOOKUP, {"emails": emails, "hashes": hashes}
        ):
            if kind == "x":
                suppressed.add(key)
            else:
                found[key] = (row_id, status)
        new: dict[str, _Pending] = {}
        known: list[_Pending] = []
        for item in items:
            address = item.request.address
            if address.email_hash in suppressed:
                item.outcome = SignupOutcome.SUPPRESSED
            elif address.email in found or address.email in new:
                known.append(item)
            else:
                new[address.email] = item
        if new:
            await self._insert_new(connection, new, known=known, found=found, now=now)
        if known:
            await self._refresh_known(connection, known, found=found, now=now)
        # The known addresses' editions and consent records (the new ones' are written).
        stored = [i for i in known if i.subscriber_id is not None]
        languages = {i.subscriber_id: i.request.languages for i in stored}  # the last one wins
        pairs = [(sid, lang) for sid, langs in sorted(languages.items()) for lang in langs]
        if pairs:
            await connection.execute(
                _INSERT_LANGUAGES,
                {"ids": [p[0] for p in pairs], "languages": [p[1] for p in pairs]},
            )
        if stored:
            await connection.execute(_INSERT_CONSENTS, _consent_rows(stored, now=now))
        await self._claim_mailboxes(connection, items, now=now)

    async def _claim_mailboxes(
        self, connection: AsyncConnection, items: list[_Pending], *, now: datetime
    ) -> None:
        """Step 4: the mailboxes' slots (``mailbox_slots.py``) for the variants that won their
        address's; one mail per mailbox, to the batch's first variant of it. A variant that
        loses gives its address's slot back (as ``signup._claim_mailbox`` does)."""
        wanting = [
            i
            for i in items
            if i.claimed and i.subscriber_id is not None and i.request.address.is_variant
        ]
        won = await mailbox_slots.claim_many(
            connection,
            keys=[i.request.address.mailbox_hash for i in wanting],
            now=now,
            interval_s=self._interval,
        )
        lost: list[int] = []
        for item in wanting:
            key = item.request.address.mailbox_hash
            if key in won:
                won.discard(key)
            else:
                item.claimed = False
                lost.append(item.subscriber_id or 0)
        if lost:
            await connection.execute(_RELEASE_SLOTS, {"ids": sorted(lost), "claimed_at": now})

    async def _insert_new(
        self,
        connection: AsyncConnection,
        new: dict[str, _Pending],
        *,
        known: list[_Pending],
        found: dict[str, tuple[int, str]],
        now: datetime,
    ) -> None:
        ordered = [new[email] for email in sorted(new)]
        rows = await connection.execute(
            _INSERT_NEW,
            {
                key: value
                for key, value in _consent_rows(ordered, now=now).items()
                if key not in {"ids", "consent_languages"}  # no id yet; the locale is given
            }
            | {
                "emails": [i.request.address.email for i in ordered],
                "domains": [i.request.address.domain for i in ordered],
                "locales": [i.request.locale for i in ordered],
                "zones": [i.request.time_zone for i in ordered],
            },
        )
        inserted: dict[str, int] = {email: row_id for email, row_id in rows}
        for email, item in new.items():
            if email in inserted:
                item.subscriber_id = inserted[email]
                item.claimed = True  # inserted with the slot taken
                found[email] = (inserted[email], SubscriberStatus.PENDING)
        lost = sorted(set(new) - set(inserted))
        if lost:
            # Another process inserted these meanwhile (and committed): known addresses now.
            for email, row_id, status in await connection.execute(_FIND, {"emails": lost}):
                found[email] = (row_id, status)
            known.extend(new[email] for email in lost)
        for item in known:
            email = item.request.address.email
            if email in inserted and item is not new[email]:
                item.outcome = SignupOutcome.PENDING_AGAIN  # a repeat inside this batch

    async def _refresh_known(
        self,
        connection: AsyncConnection,
        known: list[_Pending],
        *,
        found: dict[str, tuple[int, str]],
        now: datetime,
    ) -> None:
        refresh: dict[int, _Pending] = {}
        for item in known:
            entry = found.get(item.request.address.email)
            if entry is None:  # erased or deleted between the statements: nothing to do
                item.outcome = SignupOutcome.SUPPRESSED
                continue
            row_id, status = entry
            if status == SubscriberStatus.ACTIVE:
                item.outcome = SignupOutcome.ALREADY_ACTIVE
                continue
            if item.outcome != SignupOutcome.PENDING_AGAIN:
                item.outcome = (
                    SignupOutcome.RESUBSCRIBED
                    if status == SubscriberStatus.UNSUBSCRIBED
                    else SignupOutcome.PENDING_AGAIN
                )
            item.subscriber_id = row_id
            refresh[row_id] = item  # the last signup of an address sets its locale
        if not refresh:
            return
        ids = sorted(refresh)
        await connection.execute(
            _BACK_TO_PENDING,
            {
                "now": now,
                "ids": ids,
                "locales": [refresh[i].request.locale for i in ids],
                "zones": [refresh[i].request.time_zone for i in ids],
            },
        )
        await connection.execute(_DROP_LANGUAGES, {"ids": ids})
        claimed = {
            row[0]
            for row in await connection.execute(
                _CLAIM_SLOTS,
                {"now": now, "ids": ids, "cutoff": now - timedelta(seconds=self._interval)},
            )
        }
        # One mail per address: the first signup of it in the batch gets the claimed slot.
        for item in known:
            if item.subscriber_id in claimed and not any(
                o.claimed and o.subscriber_id == item.subscriber_id for o in known
            ):
                item.claimed = True

    async def _mail(self, batch: _Batch) -> None:
        """Step 5: publish the batch's confirmations, release the slots of those not taken."""
        to_mail = [i for i in batch.items if i.claimed and i.subscriber_id is not None]
        by_mail: dict[int, list[_Pending]] = {}
        for item in to_mail:
            by_mail.setdefault(id(item.mail), []).append(item)
        failed: list[_Pending] = []
        for group in by_mail.values():
            try:
                queued = await group[0].mail.request_confirmations(
                    [
                        ConfirmationTo(
                            subscriber_id=i.subscriber_id or 0,
                            email=i.request.address.email,
                            email_hash=i.request.address.email_hash,
                            language=as_language(i.request.locale),
                        )
                        for i in group
                    ]
                )
            except Exception as err:
                log.exception(
                    "signup_batch_not_published", size=len(group), error=type(err).__name__
                )
                queued = [False] * len(group)
            failed += [item for item, ok in zip(group, queued, strict=True) if not ok]
        failed_ids = {id(item) for item in failed}
        for item in batch.items:
            if id(item) in failed_ids or item.future.done():
                continue
            mailed = item.claimed and item.subscriber_id is not None
            log.info(
                "signup_stored",
                outcome=item.outcome,
                subscriber_id=item.subscriber_id,
                mailed=mailed,
                batch=len(batch.items),
            )
            item.future.set_result(
                SignupResult(outcome=item.outcome, subscriber_id=item.subscriber_id, mailed=mailed)
            )
        if not failed:
            return
        try:
            # Give the slots back, so that a retry is not refused (as sign_up does).
            async with self._engine.begin() as connection:
                await connection.execute(
                    _RELEASE_SLOTS,
                    {"ids": [i.subscriber_id for i in failed], "claimed_at": batch.now},
                )
                await mailbox_slots.release_many(
                    connection,
                    keys=[
                        i.request.address.mailbox_hash
                        for i in failed
                        if i.request.address.is_variant
                    ],
                    claimed_at=batch.now,
                )
        finally:
            for item in failed:
                if not item.future.done():
                    item.future.set_exception(MailQueueUnavailable("confirmation"))


def _consent_rows(stored: list[_Pending], *, now: datetime) -> dict[str, object]:
    requests = [i.request for i in stored]
    return {
        "now": now,
        "ids": [i.subscriber_id for i in stored],
        "hashes": [r.address.email_hash for r in requests],
        "versions": [r.consent_text_version for r in requests],
        "consent_languages": [r.locale for r in requests],
        "languages": [",".join(r.languages) for r in requests],
        "forms": [r.form for r in requests],
        "sources": [r.source[:255] for r in requests],
        "ip_hashes": [r.client_ip_hash for r in requests],
        "shown": [r.shown_at for r in requests],
    }
