"""Schema owned by the schedule work (issue 17): scheduled sends, local hours, cadence, warm-up.

- ``send`` (dispatcher): ``scheduled_at`` (a ``scheduled`` send starts then), ``schedule_tz``
  (the zone the editor gave, for display), ``local_time`` (``HH:MM``: each reader gets it at
  that hour in their zone), ``start_requested_at`` (when a scheduler published its start: of
  several dispatchers one takes it, by a conditional update), ``started_at``;
- ``subscriber`` (subscription service): ``time_zone`` (IANA name, NULL = the language's
  default), ``cadence`` (``every``, ``monthly``, ``paused``) and ``paused_until``;
- ``warmup_domain`` (dispatcher): sending domains marked new, capped per receiving domain
  per day on a ramp.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db.tables.timestamps

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_AT = shared.db.tables.timestamps.UTCDateTime


def upgrade() -> None:
    with op.batch_alter_table("send", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scheduled_at", _AT(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("schedule_tz", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("local_time", sa.String(length=5), nullable=True))
        batch_op.add_column(sa.Column("start_requested_at", _AT(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("started_at", _AT(timezone=True), nullable=True))
        batch_op.create_index("ix_send_status_scheduled", ["status", "scheduled_at"])
    with op.batch_alter_table("subscriber", schema=None) as batch_op:
        batch_op.add_column(sa.Column("time_zone", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("cadence", sa.String(length=16), nullable=False, server_default="every")
        )
        batch_op.add_column(sa.Column("paused_until", _AT(timezone=True), nullable=True))
    op.create_table(
        "warmup_domain",
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("started_on", sa.Date(), nullable=False),
        sa.Column("caps", sa.String(length=255), nullable=False, server_default=""),
        sa.Column("created_at", _AT(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("domain"),
    )


def downgrade() -> None:
    op.drop_table("warmup_domain")
    with op.batch_alter_table("subscriber", schema=None) as batch_op:
        batch_op.drop_column("paused_until")
        batch_op.drop_column("cadence")
        batch_op.drop_column("time_zone")
    with op.batch_alter_table("send", schema=None) as batch_op:
        batch_op.drop_index("ix_send_status_scheduled")
        batch_op.drop_column("started_at")
        batch_op.drop_column("start_requested_at")
        batch_op.drop_column("local_time")
        batch_op.drop_column("schedule_tz")
        batch_op.drop_column("scheduled_at")
