"""One confirmation mail per mailbox per interval, whatever variant of its address.

- ``confirmation_slot``: the mailbox's hash (subaddress dropped, Gmail's dots dropped; see
  ``services/subscription/address_rules.mailbox_key``) and when it last got a confirmation
  mail. Written by the subscription service with a conditional upsert.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.tables.timestamps import UTCDateTime

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "confirmation_slot",
        sa.Column("mailbox_hash", sa.String(length=64), primary_key=True),
        sa.Column("last_sent_at", UTCDateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("confirmation_slot")
