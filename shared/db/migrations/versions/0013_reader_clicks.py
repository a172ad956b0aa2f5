"""Per-reader clicks (issue 18, ``NEWSLETTER_PER_READER_ANALYTICS=true``), written by the renderer.

- ``reader_click``: one row per click of a reader who consented to per-reader analytics (a
  ``consent_record`` row with ``form = 'reader_analytics'``, confirmed, not withdrawn). Empty
  while the mode is off; read by the GDPR export, deleted by the erasure.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.tables.timestamps import UTCDateTime

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reader_click",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("issue_number", sa.Integer(), nullable=False),
        sa.Column("edition", sa.String(length=8), nullable=False),
        sa.Column("article", sa.Integer(), nullable=False),
        sa.Column("link", sa.Integer(), nullable=False),
        sa.Column("clicked_at", UTCDateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_reader_click_subscriber_id", "reader_click", ["subscriber_id"])


def downgrade() -> None:
    op.drop_index("ix_reader_click_subscriber_id", table_name="reader_click")
    op.drop_table("reader_click")
