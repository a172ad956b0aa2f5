"""Schema changes owned by the renderer work (kept as its own revision so that work on
different services never edits the same migration file).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Test sends ("[TEST]" to one address) stay out of the archive pages and Atom feeds.
    with op.batch_alter_table("edition", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("is_test", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.create_index("ix_edition_language_rendered", ["language", "rendered_at"])


def downgrade() -> None:
    with op.batch_alter_table("edition", schema=None) as batch_op:
        batch_op.drop_index("ix_edition_language_rendered")
        batch_op.drop_column("is_test")
