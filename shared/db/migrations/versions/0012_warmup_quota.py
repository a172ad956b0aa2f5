"""The warm-up's daily quota per receiving domain, reserved atomically (issue 17).

- ``warmup_quota`` (dispatcher): one row per sending domain, UTC day and receiving domain;
  ``used`` is what relays reserved of the day's cap (a conditional ``UPDATE`` of this row,
  which the database serialises across dispatcher processes), ``last_grant`` what the last
  reservation got (read back with ``RETURNING``).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "warmup_quota",
        sa.Column("sending_domain", sa.String(length=255), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("email_domain", sa.String(length=255), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.Column("last_grant", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("sending_domain", "day", "email_domain"),
    )


def downgrade() -> None:
    op.drop_table("warmup_quota")
