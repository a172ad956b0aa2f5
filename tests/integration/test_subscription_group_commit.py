"""Group commit of signups on a real PostgreSQL: one batch answers each signup as one by one
would, a refused command costs only its own signup, and two processes racing on the same new
addresses store each once and mail it once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.subscription.address_rules import normalize_address
from services.subscription.errors import MailQueueUnavailable
from services.subscription.group_commit import GroupCommit
from services.subscription.mail_commands import TransactionalMail
from services.subscription.signup import SignupOutcome, SignupRequest, SignupResult
from shared.addresses import address_hash
from shared.db.engine import create_engine, session_factory
from shared.db.tables.timestamps import utcnow
from shared.links import Links
from shared.messaging.publisher import PublishError
from shared.messaging.schemas import Message, RenderTransactional
from shared.tokens import TokenSigner
from tests.integration.subscription_support import unique_address

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


class RecordingPublisher:
    """Takes every command but those addressed to ``refuse`` (as a broker's nack would)."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.taken: list[RenderTransactional] = []
        self._refuse = refuse

    async def publish(self, message: Message, *, routing_key: str) -> None:
        raise AssertionError("a batch must be published with publish_each")

    async def publish_each(
        self, messages: Sequence[Message], *, routing_key: str
    ) -> list[PublishError | None]:
        outcomes: list[PublishError | None] = []
        for message in messages:
            assert isinstance(message, RenderTransactional)
            if message.to in self._refuse:
                outcomes.append(PublishError(f"{routing_key}: nack"))
            else:
                self.taken.append(message)
                outcomes.append(None)
        return outcomes


class BrokenPublisher(RecordingPublisher):
    """A publisher that fails as a whole (a bug, a lost channel) instead of per message."""

    async def publish_each(
        self, messages: Sequence[Message], *, routing_key: str
    ) -> list[PublishError | None]:
        raise RuntimeError("channel gone")


class StuckPublisher(RecordingPublisher):
    """Never answers (a broker that stopped confirming); ``entered`` is set once it is called."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()

    async def publish_each(
        self, messages: Sequence[Message], *, routing_key: str
    ) -> list[PublishError | None]:
        self.entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def _mail(publisher: RecordingPublisher) -> TransactionalMail:
    links = Links(public_url="http://127.0.0.1", signer=TokenSigner("k" * 48))
    return TransactionalMail(links=links, publisher=publisher, public_url="http://127.0.0.1")


def _request(
    email: str, *, locale: str = "en", languages: Sequence[str] = ("en",)
) -> SignupRequest:
    return SignupRequest(
        address=normalize_address(email),
        languages=list(languages),
        locale=locale,
        consent_text_version="test-v1",
        source="group commit test",
    )


@asynccontextmanager
async def _writer(engine: AsyncEngine, *, writers: int = 1) -> AsyncIterator[GroupCommit]:
    batcher = GroupCommit(
        engine=engine,
        sessions=session_factory(engine),
        confirmation_interval_s=3600,
        writers=writers,
        max_batch=500,
    )
    try:
        yield batcher
    finally:
        await batcher.stop()


async def _one_batch(
    batcher: GroupCommit, mail: TransactionalMail, requests: list[SignupRequest]
) -> list[SignupResult | BaseException]:
    """Queue every signup before the single writer starts, so they share one transaction."""
    calls = [asyncio.ensure_future(batcher.sign_up(mail=mail, request=r)) for r in requests]
    await asyncio.sleep(0)  # each call is queued now
    batcher.start()
    return list(await asyncio.gather(*calls, return_exceptions=True))


async def _seed(engine: AsyncEngine, email: str, *, status: str, mailed_ago_s: float) -> None:
    now = utcnow()
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO subscriber (email, email_hash, email_domain, status, locale, "
                "created_at, updated_at, last_confirmation_sent_at) "
                "VALUES (:e, :h, 'example.org', :s, 'en', :now, :now, :sent)"
            ),
            {
                "e": email,
                "h": address_hash(email),
                "s": status,
                "now": now,
                "sent": now - timedelta(seconds=mailed_ago_s),
            },
        )


async def _rows(engine: AsyncEngine, email: str) -> tuple[int, str | None, int, list[str], bool]:
    """Subscriber rows, status, consent records, languages, and whether a slot is held."""
    async with engine.connect() as connection:
        subscribers = (
            await connection.execute(
                text(
                    "SELECT id, status, last_confirmation_sent_at FROM subscriber WHERE email = :e"
                ),
                {"e": email},
            )
        ).all()
        consents = (
            await connection.execute(
                text("SELECT count(*) FROM consent_record WHERE email_hash = :h"),
                {"h": address_hash(email)},
            )
        ).scalar_one()
        languages: list[str] = []
        if subscribers:
            languages = sorted(
                (
                    await connection.execute(
                        text("SELECT language FROM subscriber_language WHERE subscriber_id = :i"),
                        {"i": subscribers[0][0]},
                    )
                ).scalars()
            )
    status = subscribers[0][1] if subscribers else None
    held = bool(subscribers) and subscribers[0][2] is not None
    return len(subscribers), status, int(consents), languages, held


async def test_one_batch_answers_every_state_as_one_by_one_would(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    new, twice = unique_address("gc-new"), unique_address("gc-twice")
    active, unsubscribed = unique_address("gc-active"), unique_address("gc-unsub")
    recent, stale = unique_address("gc-recent"), unique_address("gc-stale")
    suppressed = unique_address("gc-suppressed")
    try:
        await _seed(engine, active, status="active", mailed_ago_s=86_400)
        await _seed(engine, unsubscribed, status="unsubscribed", mailed_ago_s=86_400)
        await _seed(engine, recent, status="pending", mailed_ago_s=60)
        await _seed(engine, stale, status="pending", mailed_ago_s=7200)
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO suppression (email_hash, reason, detail, created_at, lift_note) "
                    "VALUES (:h, 'hard_bounce', '', :now, '')"
                ),
                {"h": address_hash(suppressed), "now": utcnow()},
            )
        publisher = RecordingPublisher()
        emails = [new, twice, twice, active, unsubscribed, recent, stale, suppressed]
        requests = [_request(e) for e in emails]
        requests[2] = _request(twice, locale="ru", languages=("ru", "be"))  # the repeat
        async with _writer(engine) as batcher:
            results = await _one_batch(batcher, _mail(publisher), requests)
        outcomes = [(r.outcome, r.mailed) for r in results if isinstance(r, SignupResult)]
        assert outcomes == [
            (SignupOutcome.CREATED, True),
            (SignupOutcome.CREATED, True),
            (SignupOutcome.PENDING_AGAIN, False),  # same batch, slot already taken
            (SignupOutcome.ALREADY_ACTIVE, False),
            (SignupOutcome.RESUBSCRIBED, True),
            (SignupOutcome.PENDING_AGAIN, False),  # mailed a minute ago
            (SignupOutcome.PENDING_AGAIN, True),  # mailed two hours ago
            (SignupOutcome.SUPPRESSED, False),
        ], results
        assert sorted(m.to for m in publisher.taken) == sorted([new, twice, unsubscribed, stale])
        assert await _rows(engine, new) == (1, "pending", 1, ["en"], True)
        # The repeat in the batch set the editions and added its consent record.
        assert await _rows(engine, twice) == (1, "pending", 2, ["be", "ru"], True)
        assert await _rows(engine, active) == (1, "active", 0, [], True)
        assert await _rows(engine, unsubscribed) == (1, "pending", 1, ["en"], True)
        assert await _rows(engine, suppressed) == (0, None, 0, [], False)
    finally:
        await engine.dispose()


async def test_a_refused_command_fails_only_its_signup_and_gives_its_slot_back(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url)
    refused, taken = unique_address("gc-refused"), unique_address("gc-taken")
    publisher = RecordingPublisher(refuse=frozenset({refused}))
    try:
        async with _writer(engine) as batcher:
            results = await _one_batch(
                batcher, _mail(publisher), [_request(refused), _request(taken)]
            )
        assert isinstance(results[0], MailQueueUnavailable), results
        assert isinstance(results[1], SignupResult), results
        assert results[1].mailed, results
        # Stored, but its slot is free again: a retry is mailed.
        assert await _rows(engine, refused) == (1, "pending", 1, ["en"], False)
        assert await _rows(engine, taken) == (1, "pending", 1, ["en"], True)
        retry_publisher = RecordingPublisher()
        async with _writer(engine) as batcher:
            again = await _one_batch(batcher, _mail(retry_publisher), [_request(refused)])
        assert isinstance(again[0], SignupResult), again
        assert again[0].mailed, again
        assert [m.to for m in retry_publisher.taken] == [refused]
    finally:
        await engine.dispose()


async def test_a_publisher_that_fails_whole_answers_unavailable_and_frees_every_slot(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url)
    emails = [unique_address(f"gc-broken{n}") for n in range(3)]
    try:
        async with _writer(engine) as batcher:
            results = await _one_batch(
                batcher, _mail(BrokenPublisher()), [_request(e) for e in emails]
            )
        assert all(isinstance(r, MailQueueUnavailable) for r in results), results
        for email in emails:
            assert await _rows(engine, email) == (1, "pending", 1, ["en"], False)
    finally:
        await engine.dispose()


async def test_stopping_in_the_middle_of_a_batch_leaves_no_signup_waiting(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url)
    publisher = StuckPublisher()
    try:
        batcher = GroupCommit(
            engine=engine, sessions=session_factory(engine), confirmation_interval_s=3600
        )
        batcher.start()
        call = asyncio.ensure_future(
            batcher.sign_up(mail=_mail(publisher), request=_request(unique_address("gc-stop")))
        )
        await asyncio.wait_for(publisher.entered.wait(), timeout=60)
        await batcher.stop()
        with pytest.raises(MailQueueUnavailable):
            await asyncio.wait_for(call, timeout=60)
    finally:
        await engine.dispose()


async def test_two_processes_racing_on_new_addresses_store_and_mail_each_once(
    postgres_url: str,
) -> None:
    """Two writers with engines of their own (as two worker processes have) get the same new
    addresses at once: ON CONFLICT and the slot claim leave one row and one mail each."""
    first_engine, second_engine = create_engine(postgres_url), create_engine(postgres_url)
    emails = [unique_address(f"gc-race{n}") for n in range(40)]
    publishers = RecordingPublisher(), RecordingPublisher()
    try:
        async with (
            _writer(first_engine, writers=2) as first,
            _writer(second_engine, writers=2) as second,
        ):
            first.start()
            second.start()
            results = await asyncio.gather(
                *(
                    writer.sign_up(mail=_mail(publisher), request=_request(email))
                    for email in emails
                    for writer, publisher in zip((first, second), publishers, strict=True)
                ),
                return_exceptions=True,
            )
        assert all(isinstance(r, SignupResult) for r in results), results
        mailed = sorted(m.to for p in publishers for m in p.taken)
        assert mailed == sorted(emails), "each new address must be mailed exactly once"
        for email in emails:
            count, status, consents, languages, held = await _rows(first_engine, email)
            assert (count, status, consents, languages, held) == (1, "pending", 2, ["en"], True)
    finally:
        await first_engine.dispose()
        await second_engine.dispose()


async def test_a_batch_stores_the_time_zone_of_new_and_returning_readers(postgres_url: str) -> None:
    """The form's time zone reaches the subscriber row through the batch as it does one by one
    (a returning reader without one keeps the zone stored before)."""
    engine = create_engine(postgres_url)
    fresh, returning, keeps = (unique_address(p) for p in ("gc-tz-new", "gc-tz-back", "gc-tz-keep"))
    try:
        await _seed(engine, returning, status="unsubscribed", mailed_ago_s=86_400)
        await _seed(engine, keeps, status="unsubscribed", mailed_ago_s=86_400)
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE subscriber SET time_zone = 'Europe/Berlin' WHERE email = :e"),
                {"e": keeps},
            )
        requests = [
            SignupRequest(**{**vars(_request(fresh)), "time_zone": "America/New_York"}),
            SignupRequest(**{**vars(_request(returning)), "time_zone": "Asia/Tokyo"}),
            _request(keeps),
        ]
        async with _writer(engine) as batcher:
            results = await _one_batch(batcher, _mail(RecordingPublisher()), requests)
        assert all(isinstance(r, SignupResult) for r in results), results
        async with engine.connect() as connection:
            zones = dict(
                (
                    await connection.execute(
                        text("SELECT email, time_zone FROM subscriber WHERE email = ANY(:e)"),
                        {"e": [fresh, returning, keeps]},
                    )
                ).all()
            )
        assert zones == {
            fresh: "America/New_York",
            returning: "Asia/Tokyo",
            keeps: "Europe/Berlin",
        }
    finally:
        await engine.dispose()


async def test_variants_of_one_mailbox_in_a_batch_get_one_mail_and_a_refused_one_frees_it(
    postgres_url: str,
) -> None:
    """``inbox+1@`` and ``inbox+2@`` are variants of ``inbox@``: one confirmation mail per
    interval between the variants (a loser gives its own slot back), while the mailbox's own
    address keeps its own slot; a variant's mail the broker refused frees the mailbox's."""
    engine = create_engine(postgres_url)
    user = unique_address("gc-inbox").split("@")[0]
    variants = [f"{user}+1@example.org", f"{user}+2@example.org"]
    own = f"{user.upper()}@example.org"  # normalized to the mailbox's own address
    other = unique_address("gc-other")
    try:
        publisher = RecordingPublisher()
        async with _writer(engine) as batcher:
            results = await _one_batch(
                batcher, _mail(publisher), [_request(e) for e in [*variants, own, other]]
            )
        assert all(isinstance(r, SignupResult) for r in results), results
        mailed = [r.mailed for r in results if isinstance(r, SignupResult)]
        assert mailed == [True, False, True, True], "the batch's first variant, own, other"
        assert sorted(m.to for m in publisher.taken) == sorted([variants[0], own.lower(), other])
        assert await _rows(engine, variants[1]) == (1, "pending", 1, ["en"], False), (
            "the losing variant is stored and its own slot is free again"
        )
        async with _writer(engine) as batcher:
            later = await _one_batch(
                batcher, _mail(RecordingPublisher()), [_request(f"{user}+3@example.org")]
            )
        assert isinstance(later[0], SignupResult), later
        assert not later[0].mailed, "a new variant within the interval is not mailed"

        # A refused mail gives the mailbox's slot back: the next variant is mailed.
        fresh = unique_address("gc-refused-box").split("@")[0]
        refused = f"{fresh}+a@example.org"
        async with _writer(engine) as batcher:
            first = await _one_batch(
                batcher, _mail(RecordingPublisher(refuse=frozenset({refused}))), [_request(refused)]
            )
        assert isinstance(first[0], MailQueueUnavailable), first
        retry_publisher = RecordingPublisher()
        async with _writer(engine) as batcher:
            again = await _one_batch(
                batcher, _mail(retry_publisher), [_request(f"{fresh}+b@example.org")]
            )
        assert isinstance(again[0], SignupResult), again
        assert again[0].mailed, again
        assert [m.to for m in retry_publisher.taken] == [f"{fresh}+b@example.org"]
    finally:
        await engine.dispose()
