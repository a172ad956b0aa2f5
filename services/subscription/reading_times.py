"""When and how often a reader gets the issue: their time zone and their cadence.

The signup form carries a ``time_zone`` select that works without JavaScript; a few lines of
script (:data:`TIME_ZONE_SCRIPT`, allowed by its hash in the page's CSP) pre-select the
browser's zone. The preference page changes both the zone and the cadence; every cadence
change is a ``consent_record`` row (``form="cadence"``). The dispatcher's planner reads the
columns (``subscriber.time_zone``, ``cadence``, ``paused_until``); this service writes them.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import structlog
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db.tables.subscribers import Cadence, ConsentRecord, Subscriber

log = structlog.get_logger(__name__)

PAUSE = timedelta(weeks=4)

# Offered in the select list (the readers' places first); any other IANA zone the browser
# reports is accepted too and shown as its own option.
OFFERED_ZONES: tuple[str, ...] = (
    "Europe/Minsk",
    "Europe/Warsaw",
    "Europe/Vilnius",
    "Europe/Riga",
    "Europe/Kyiv",
    "Europe/Berlin",
    "Europe/Prague",
    "Europe/Paris",
    "Europe/London",
    "Europe/Moscow",
    "Asia/Tbilisi",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Toronto",
    "Asia/Tokyo",
    "Australia/Sydney",
    "UTC",
)
_KNOWN = frozenset(available_timezones()) | {"UTC"}

# Pre-selects the browser's zone in the form's select (adding it if it is not offered).
TIME_ZONE_SCRIPT = (
    "(function(){var s=document.getElementById('time-zone');if(!s||!window.Intl)return;"
    "var z=Intl.DateTimeFormat().resolvedOptions().timeZone;if(!z||s.value)return;"
    "for(var i=0;i<s.options.length;i++){if(s.options[i].value===z){s.value=z;return;}}"
    "var o=document.createElement('option');o.value=z;o.textContent=z;s.appendChild(o);"
    "s.value=z;})();"
)
TIME_ZONE_SCRIPT_HASH = (
    "sha256-" + base64.b64encode(hashlib.sha256(TIME_ZONE_SCRIPT.encode()).digest()).decode()
)


def clean_time_zone(value: str | None) -> str | None:
    """An IANA zone name, or None (empty, unknown or malformed: the language's default)."""
    if not value or len(value) > 64 or value not in _KNOWN:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return value


def clean_cadence(value: str | None) -> Cadence | None:
    try:
        return Cadence(value or "")
    except ValueError:
        return None


def current_cadence(subscriber: Subscriber, *, now: datetime) -> Cadence:
    """What the preference page shows: a pause that ended reads as every issue again."""
    cadence = clean_cadence(subscriber.cadence) or Cadence.EVERY
    if cadence == Cadence.PAUSED and (
        subscriber.paused_until is None or subscriber.paused_until <= now
    ):
        return Cadence.EVERY
    return cadence


def zone_choices(current: str | None) -> list[str]:
    """The select list's zones, with the reader's own when it is not among the offered."""
    return list(OFFERED_ZONES) + ([current] if current and current not in OFFERED_ZONES else [])


async def change_reading_times(
    *,
    session: AsyncSession,
    subscriber: Subscriber,
    time_zone: str | None,
    cadence: Cadence,
    now: datetime,
) -> bool:
    """Store the zone and cadence (the caller commits); a changed cadence goes into the consent
    ledger. True when the cadence changed."""
    assert subscriber.id is not None
    subscriber.time_zone = time_zone
    changed = current_cadence(subscriber, now=now) != cadence
    if changed:
        subscriber.cadence = cadence
        subscriber.paused_until = now + PAUSE if cadence == Cadence.PAUSED else None
        until = f" until {subscriber.paused_until:%Y-%m-%d}" if subscriber.paused_until else ""
        session.add(
            ConsentRecord(
                subscriber_id=subscriber.id,
                email_hash=subscriber.email_hash,
                consent_text_version="cadence",
                consent_language=subscriber.locale,
                form="cadence",
                source=f"preferences page: {cadence.value}{until}",
                given_at=now,
                confirmed_at=now,
            )
        )
        log.info("cadence_changed", subscriber_id=subscriber.id, cadence=cadence.value)
    subscriber.updated_at = now
    session.add(subscriber)
    return changed
