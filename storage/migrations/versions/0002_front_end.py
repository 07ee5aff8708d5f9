"""Front end: profiles, processed updates, chat messages to delete.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "profiles",
        sa.Column("owner", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("data_ct", sa.LargeBinary(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("owner", name="pk_profiles"),
        sa.ForeignKeyConstraint(
            ["key_id"], ["data_keys.id"], name="fk_profiles_key_id_data_keys", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_profiles_expires_at", "profiles", ["expires_at"])
    op.create_table(
        "processed_updates",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_processed_updates"),
    )
    op.create_index("ix_processed_updates_expires_at", "processed_updates", ["expires_at"])
    op.create_table(
        "chat_messages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("owner", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("ref_ct", sa.LargeBinary(), nullable=False),
        sa.Column("delete_after", TS, nullable=True),
        sa.Column("expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_chat_messages"),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["data_keys.id"],
            name="fk_chat_messages_key_id_data_keys",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_chat_messages_owner", "chat_messages", ["owner"])
    op.create_index("ix_chat_messages_delete_after", "chat_messages", ["delete_after"])
    op.create_index("ix_chat_messages_expires_at", "chat_messages", ["expires_at"])


def downgrade() -> None:
    for table in ("chat_messages", "processed_updates", "profiles"):
        op.drop_table(table)
