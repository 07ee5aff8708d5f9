"""Teams, members, invitations, alerts, the outbox and aggregate counts.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("name_ct", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_teams"),
        sa.ForeignKeyConstraint(
            ["key_id"], ["data_keys.id"], name="fk_teams_key_id_data_keys", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_teams_expires_at", "teams", ["expires_at"])
    op.create_table(
        "members",
        sa.Column("owner", sa.String(32), nullable=False),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("data_ct", sa.LargeBinary(), nullable=False),
        sa.Column("joined_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("owner", name="pk_members"),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name="fk_members_team_id_teams", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_members_team_id", "members", ["team_id"])
    op.create_index("ix_members_expires_at", "members", ["expires_at"])
    op.create_table(
        "invitations",
        sa.Column("code_hash", sa.String(32), nullable=False),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(32), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("used_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("code_hash", name="pk_invitations"),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name="fk_invitations_team_id_teams", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_invitations_expires_at", "invitations", ["expires_at"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("payload_ct", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("acked_at", TS, nullable=True),
        sa.Column("acked_by", sa.String(32), nullable=True),
        sa.Column("reminded_at", TS, nullable=True),
        sa.Column("escalated_at", TS, nullable=True),
        sa.Column("expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name="fk_alerts_team_id_teams", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_alerts_team_id", "alerts", ["team_id"])
    op.create_index("ix_alerts_expires_at", "alerts", ["expires_at"])
    op.create_table(
        "outbox",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("alert_id", sa.String(32), nullable=True),
        sa.Column("recipient", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("body_ct", sa.LargeBinary(), nullable=False),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("lease_until", TS, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("sent_at", TS, nullable=True),
        sa.Column("expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name="fk_outbox_team_id_teams", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_outbox_team_id", "outbox", ["team_id"])
    op.create_index("ix_outbox_alert_id", "outbox", ["alert_id"])
    op.create_index("ix_outbox_due_at", "outbox", ["due_at"])
    op.create_index("ix_outbox_expires_at", "outbox", ["expires_at"])
    op.create_table(
        "aggregates",
        sa.Column("team_id", sa.String(32), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("metric", sa.String(96), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("team_id", "day", "metric", name="pk_aggregates"),
    )


def downgrade() -> None:
    for table in ("aggregates", "outbox", "alerts", "invitations", "members", "teams"):
        op.drop_table(table)
