"""Schema owned by the dispatcher's ledger work (issue 12): deadlines and leases of open deliveries.

Every open delivery gets a deadline the reconciler can scan: ``due_at`` (a pending, queued or
deferred row: when it may be published, by when its job should have been consumed, when it is
tried again) and ``lease_until`` (a sending row: until when its claimer owns it). ``retries``
counts deferrals (the delay tier of the next attempt), ``redriven`` how often the reconciler
published a row again because its job was gone. ``claimed_by`` names the claiming process, and
``dispatcher_process`` holds each process's heartbeat: the row of a process that stopped
beating (killed) is taken over before its lease ends. One index on ``(status, due_at)`` serves the
reconciler's scans: a range of one status's deadlines (queued, deferred), and the few rows in
``sending``.

Rows open at upgrade time get ``updated_at`` as their deadline: stop the dispatchers, migrate,
start them; whatever was in the queues is still consumed, and whatever was lost is re-driven.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db.tables.timestamps

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "due_at", shared.db.tables.timestamps.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch_op.add_column(
            sa.Column(
                "lease_until", shared.db.tables.timestamps.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch_op.add_column(sa.Column("retries", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("redriven", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=36), nullable=True))
        batch_op.create_index("ix_delivery_status_due", ["status", "due_at"], unique=False)
    op.create_table(
        "dispatcher_process",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column(
            "started_at", shared.db.tables.timestamps.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "seen_at", shared.db.tables.timestamps.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute(
        "UPDATE delivery SET due_at = updated_at WHERE status IN ('pending', 'queued', 'deferred')"
    )
    op.execute("UPDATE delivery SET lease_until = updated_at WHERE status = 'sending'")


def downgrade() -> None:
    op.drop_table("dispatcher_process")
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_index("ix_delivery_status_due")
        batch_op.drop_column("claimed_by")
        batch_op.drop_column("redriven")
        batch_op.drop_column("retries")
        batch_op.drop_column("lease_until")
        batch_op.drop_column("due_at")
