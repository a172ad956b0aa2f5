"""Importing subscribers from CSV (admin API), with the consent source recorded.

Columns (header row required, names case-insensitive): ``email`` (required), ``languages``
(editions, separated by spaces, ``;`` or ``,``; default: the locale), ``locale`` (page and
mail language; default ``en``).

Without ``prior_consent`` an imported person is stored as *pending* and is not mailed: no
edition reaches them until they confirm through a double opt-in. With ``prior_consent`` the
import states that consent was already given elsewhere: they are stored as *active* and the
ledger records the source and consent text version given. Addresses that are suppressed
(bounces, complaints, erasure) or already known are skipped and counted, never changed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.subscription.address_rules import normalize_address
from services.subscription.errors import ImportRejected, InvalidAddress
from services.subscription.languages import clean_languages
from services.subscription.records import is_suppressed, set_languages
from shared.db.tables import ConsentRecord, Subscriber, SubscriberStatus
from shared.db.tables.timestamps import utcnow
from shared.settings import LANGUAGES

MAX_IMPORT_BYTES = 10 * 1024 * 1024
MAX_ROWS = 100_000


class ImportProblem(BaseModel):
    line: int
    reason: str


class ImportReport(BaseModel):
    created: int = 0
    skipped_existing: int = 0
    skipped_suppressed: int = 0
    invalid: list[ImportProblem] = []
    status_given: str = SubscriberStatus.PENDING


def _rows(data: bytes) -> Iterator[tuple[int, dict[str, str]]]:
    if len(data) > MAX_IMPORT_BYTES:
        raise ImportRejected(f"file larger than {MAX_IMPORT_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ImportRejected("the file is not UTF-8") from err
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or "email" not in {f.strip().lower() for f in reader.fieldnames}:
        raise ImportRejected("the header row has no 'email' column")
    for count, row in enumerate(reader, start=1):
        if count > MAX_ROWS:
            raise ImportRejected(f"more than {MAX_ROWS} rows")
        cleaned = {
            (key or "").strip().lower(): (value if isinstance(value, str) else "").strip()
            for key, value in row.items()
        }
        yield reader.line_num, cleaned


async def import_csv(
    *,
    session: AsyncSession,
    data: bytes,
    source: str,
    prior_consent: bool,
    consent_text_version: str,
) -> ImportReport:
    status = SubscriberStatus.ACTIVE if prior_consent else SubscriberStatus.PENDING
    report = ImportReport(status_given=status)
    seen: set[str] = set()
    for line, row in _rows(data):
        try:
            address = normalize_address(row.get("email", ""))
        except InvalidAddress as err:
            report.invalid.append(ImportProblem(line=line, reason=f"email: {err.reason}"))
            continue
        locale = row.get("locale", "").lower() or "en"
        if locale not in LANGUAGES:
            report.invalid.append(ImportProblem(line=line, reason="locale: not en, be or ru"))
            continue
        raw_languages = row.get("languages", "").replace(";", " ").replace(",", " ").split()
        languages = clean_languages(raw_languages) if raw_languages else [locale]
        if not languages or len(languages) != len(set(raw_languages or [locale])):
            report.invalid.append(ImportProblem(line=line, reason="languages: unknown edition"))
            continue
        if address.email in seen:
            report.skipped_existing += 1
            continue
        seen.add(address.email)
        if await is_suppressed(session, address.email_hash):
            report.skipped_suppressed += 1
            continue
        existing = await session.exec(
            select(Subscriber.id).where(Subscriber.email == address.email)
        )
        if existing.first() is not None:
            report.skipped_existing += 1
            continue
        now = utcnow()
        subscriber = Subscriber(
            email=address.email,
            email_hash=address.email_hash,
            email_domain=address.domain,
            status=status,
            locale=locale,
            created_at=now,
            updated_at=now,
            confirmed_at=now if prior_consent else None,
        )
        session.add(subscriber)
        try:
            await session.flush()
        except IntegrityError:
            # Signed up through the form while the import ran: theirs wins.
            await session.rollback()
            report.skipped_existing += 1
            continue
        assert subscriber.id is not None
        await set_languages(session, subscriber.id, languages)
        session.add(
            ConsentRecord(
                subscriber_id=subscriber.id,
                email_hash=address.email_hash,
                consent_text_version=consent_text_version[:32],
                consent_language=locale,
                languages=",".join(languages),
                form="import",
                source=source[:255],
                given_at=now,
                confirmed_at=now if prior_consent else None,
            )
        )
        await session.commit()
        report.created += 1
    return report
