"""Index every column that references data_keys.

Deleting a data key (the purge, crypto-shredding) makes the database check each table
that references it; without an index that check scans the whole table once per key, and a
purge of 100,000 sessions held the write lock for about a second per batch.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

REFERENCES = (
    ("sessions", "key_id"),
    ("profiles", "key_id"),
    ("chat_messages", "key_id"),
    ("teams", "key_id"),
)


def upgrade() -> None:
    for table, column in REFERENCES:
        op.create_index(f"ix_{table}_{column}", table, [column])


def downgrade() -> None:
    for table, column in REFERENCES:
        op.drop_index(f"ix_{table}_{column}", table)
