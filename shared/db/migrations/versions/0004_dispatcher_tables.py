"""Schema changes owned by the dispatcher work (kept as its own revision so that work on
different services never edits the same migration file).

Adds ``send.test_to`` (a test send mails one address and no audience) and
``send.cancelled_at``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db.tables.timestamps

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("send", schema=None) as batch_op:
        batch_op.add_column(sa.Column("test_to", sa.String(length=320), nullable=True))
        batch_op.add_column(
            sa.Column(
                "cancelled_at",
                shared.db.tables.timestamps.UTCDateTime(timezone=True),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("send", schema=None) as batch_op:
        batch_op.drop_column("cancelled_at")
        batch_op.drop_column("test_to")
