"""Schema owned by the bounce receiver (issue 11): reports that match no delivery of ours, kept for ops.

``bounce_report``: unmatched and unreadable reports (see ``shared/db/tables/reports.py``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.tables.timestamps import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bounce_report",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("report_key", sa.String(length=64), nullable=False),
        sa.Column("received_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("mailbox", sa.String(length=64), nullable=False),
        sa.Column("bounce_class", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("recipient_hash", sa.String(length=64), nullable=False),
        sa.Column("recipient_domain", sa.String(length=255), nullable=False),
        sa.Column("reporter_domain", sa.String(length=255), nullable=False),
        sa.Column("evidence", sa.String(length=512), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.UniqueConstraint("report_key", name="uq_bounce_report_key"),
    )
    op.create_index("ix_bounce_report_received_at", "bounce_report", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_bounce_report_received_at", table_name="bounce_report")
    op.drop_table("bounce_report")
