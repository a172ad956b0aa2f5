"""Schema changes owned by the bounces work (kept as its own revision so that work on
different services never edits the same migration file).

Adds ``bounce_decision.reason`` (why a decision was taken) and ``suppression.lift_note`` (who
lifted a suppression and why).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bounce_decision") as batch_op:
        batch_op.add_column(
            sa.Column("reason", sa.String(length=255), nullable=False, server_default="")
        )
    with op.batch_alter_table("suppression") as batch_op:
        batch_op.add_column(
            sa.Column("lift_note", sa.String(length=255), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("suppression") as batch_op:
        batch_op.drop_column("lift_note")
    with op.batch_alter_table("bounce_decision") as batch_op:
        batch_op.drop_column("reason")
