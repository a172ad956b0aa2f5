"""Schema owned by the send identity work (issue 13): one delivery per send, subscriber and language.

- ``delivery``: unique ``(send_id, subscriber_id, language)`` instead of ``(send_id,
  subscriber_id)``, so that a reader of several editions gets each of them;
- ``send.intent``: first, only_new, resend_all or test;
- ``issue_send`` (renderer): the send requests of each issue, with a partial unique index that
  allows one ``first`` send per issue.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db.tables.timestamps

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FIRST_ONLY = sa.text("intent = 'first'")


def upgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_constraint("uq_delivery_send_subscriber", type_="unique")
        batch_op.create_unique_constraint(
            "uq_delivery_send_subscriber_language", ["send_id", "subscriber_id", "language"]
        )
    with op.batch_alter_table("send", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("intent", sa.String(length=16), nullable=False, server_default="first")
        )
    op.create_table(
        "issue_send",
        sa.Column("send_id", sa.String(length=36), nullable=False),
        sa.Column("issue_key", sa.String(length=64), nullable=False),
        sa.Column("issue_number", sa.Integer(), nullable=False),
        sa.Column("date_from", sa.Date(), nullable=False),
        sa.Column("date_to", sa.Date(), nullable=False),
        sa.Column("intent", sa.String(length=16), nullable=False),
        sa.Column("segments", sa.String(length=64), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column(
            "requested_at",
            shared.db.tables.timestamps.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("send_id"),
    )
    with op.batch_alter_table("issue_send", schema=None) as batch_op:
        batch_op.create_index("ix_issue_send_issue_key", ["issue_key"], unique=False)
        batch_op.create_index(
            "uq_issue_send_first",
            ["issue_key"],
            unique=True,
            sqlite_where=_FIRST_ONLY,
            postgresql_where=_FIRST_ONLY,
        )
    # Earlier sends of an issue become its first send: the oldest non-test one of each.
    op.execute(
        "INSERT INTO issue_send (send_id, issue_key, issue_number, date_from, date_to, intent, "
        "segments, origin, requested_at) "
        "SELECT s.id, s.issue_key, 0, '1970-01-01', '1970-01-01', "
        "CASE WHEN s.test_to IS NOT NULL THEN 'test' "
        "WHEN s.id = (SELECT f.id FROM send f WHERE f.issue_key = s.issue_key "
        "AND f.test_to IS NULL ORDER BY f.created_at, f.id LIMIT 1) THEN 'first' "
        "ELSE 'resend_all' END, "
        "s.languages, 'migration', s.created_at FROM send s"
    )
    op.execute("UPDATE send SET intent = 'test' WHERE test_to IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("issue_send", schema=None) as batch_op:
        batch_op.drop_index("uq_issue_send_first")
        batch_op.drop_index("ix_issue_send_issue_key")
    op.drop_table("issue_send")
    with op.batch_alter_table("send", schema=None) as batch_op:
        batch_op.drop_column("intent")
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_constraint("uq_delivery_send_subscriber_language", type_="unique")
        batch_op.create_unique_constraint(
            "uq_delivery_send_subscriber", ["send_id", "subscriber_id"]
        )
