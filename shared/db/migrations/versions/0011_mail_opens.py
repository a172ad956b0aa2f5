"""Open pixel counts (issue 18, ``NEWSLETTER_OPEN_TRACKING=true``), written by the renderer.

- ``mail_open``: loads of an edition's open pixel per issue, edition, UTC day and verdict.
  Aggregate like ``link_click``: no column holds a subscriber id, an address or a client.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mail_open",
        sa.Column("issue_number", sa.Integer(), nullable=False),
        sa.Column("edition", sa.String(length=8), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("issue_number", "edition", "day", "verdict"),
    )


def downgrade() -> None:
    op.drop_table("mail_open")
