"""The reader's cadence, as the planner honours it (chosen on the preference page).

- ``every``: every issue;
- ``monthly``: the first issue of each calendar month (UTC) in each edition they read: a
  reader who already has a delivery of this edition from another send this month is left out;
- ``paused``: nothing until ``paused_until`` (four weeks from the choice), then every issue.

The subscription service writes the choice (and records it in the consent ledger); the
planner only reads it, in the same ``INSERT ... SELECT`` that writes the deliveries.
"""

from __future__ import annotations

from datetime import UTC, datetime

from shared.db.tables.deliveries import RECEIVED_STATUSES

_RECEIVED = ", ".join(f"'{status}'" for status in sorted(RECEIVED_STATUSES))

# Appended to the planner's audience page: ``s`` is the subscriber, ``:send_id``, ``:language``
# and ``:now`` the planner's, ``:month_start`` from :func:`month_start`.
CADENCE_FILTER = (
    "AND (s.cadence <> 'paused' OR s.paused_until IS NULL OR s.paused_until <= :now) "  # noqa: S608 - constants only
    "AND (s.cadence <> 'monthly' OR NOT EXISTS (SELECT 1 FROM delivery m "
    "JOIN send ms ON ms.id = m.send_id "
    "WHERE m.subscriber_id = s.id AND m.language = :language AND ms.id <> :send_id "
    f"AND ms.test_to IS NULL AND m.created_at >= :month_start AND m.status IN ({_RECEIVED}))) "
)


def month_start(moment: datetime) -> datetime:
    """Midnight UTC of the first day of ``moment``'s month."""
    utc = moment.astimezone(UTC)
    return utc.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
