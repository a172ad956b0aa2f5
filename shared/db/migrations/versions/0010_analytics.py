"""Schema of editorial analytics (issue 18), written by the renderer: aggregate counters only.

- ``tracked_link``: the target of each article link of each issue edition;
- ``link_click``: clicks per issue, edition, article, link, UTC day and verdict. No column
  holds a subscriber id, an address or a client address.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db.tables.timestamps

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tracked_link",
        sa.Column("issue_number", sa.Integer(), nullable=False),
        sa.Column("edition", sa.String(length=8), nullable=False),
        sa.Column("article", sa.Integer(), nullable=False),
        sa.Column("link", sa.Integer(), nullable=False),
        sa.Column("article_key", sa.String(length=128), nullable=False),
        sa.Column("article_title", sa.String(length=998), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column(
            "updated_at",
            shared.db.tables.timestamps.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("issue_number", "edition", "article", "link"),
    )
    op.create_table(
        "link_click",
        sa.Column("issue_number", sa.Integer(), nullable=False),
        sa.Column("edition", sa.String(length=8), nullable=False),
        sa.Column("article", sa.Integer(), nullable=False),
        sa.Column("link", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("issue_number", "edition", "article", "link", "day", "verdict"),
    )


def downgrade() -> None:
    op.drop_table("link_click")
    op.drop_table("tracked_link")
