"""The reader's cadence, as the planner honours it (chosen on the preference page).

- ``every``: every issue;
- ``monthly``: the first issue of each calendar month (UTC) in each edition they read: a
  reader who already has a delivery of this edition from another send this month is left out;
- ``paused``: nothing until ``paused_until`` (four weeks from the choice), then every issue.

The subscription service writes the choice (and records it in the consent ledger); the
planner only reads it, in the same ``INSERT ... SELECT`` that writes the deliveries. A choice
made after the planning (a local-hour send waits hours in the ledger) is read again when a
worker claims the delivery, in the claim's one statement per batch
(:data:`PAUSED_AT_CLAIM`, :data:`MONTHLY_AT_CLAIM`, used by
:mod:`services.dispatcher.ledger`): such a delivery is ``cancelled`` with the reason in its
``smtp_reply`` (:data:`PAUSED_REASON`, :data:`MONTHLY_REASON`), which ``send status`` shows.
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


# At claim time, on a ``delivery`` row (``s`` its subscriber; ``:cadence_now`` and
# ``:month_start`` from the dispatcher's clock). Of two deliveries of one edition this month,
# the earlier one (lower id) is the month's issue, so a reader who turned monthly while two
# sends were open still gets one of them.
PAUSED_AT_CLAIM = "(s.cadence = 'paused' AND s.paused_until > :cadence_now)"
MONTHLY_AT_CLAIM = (
    "(s.cadence = 'monthly' AND EXISTS (SELECT 1 FROM delivery m "  # noqa: S608 - constants only
    "JOIN send ms ON ms.id = m.send_id "
    "WHERE m.subscriber_id = s.id AND m.language = delivery.language "
    "AND m.send_id <> delivery.send_id AND m.id < delivery.id AND ms.test_to IS NULL "
    f"AND m.created_at >= :month_start AND m.status IN ({_RECEIVED})))"
)
PAUSED_REASON = "not sent: the reader paused the newsletter (cadence changed after planning)"
MONTHLY_REASON = (
    "not sent: one issue a month, this month's already delivered (cadence changed after planning)"
)


def month_start(moment: datetime) -> datetime:
    """Midnight UTC of the first day of ``moment``'s month."""
    utc = moment.astimezone(UTC)
    return utc.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
