"""SQLAlchemy 2 typed models.

What is stored in the clear, and why it is safe:

* ids are random; ``owner`` is a keyed pseudonym, never a Telegram id;
* ``status``, versions and timestamps drive expiry and locking;
* everything a person said (answers, session state, chat ids) is ciphertext under the
  session's or profile's own data key, bound to its row (see ``storage.crypto``);
* every row with personal content has ``expires_at``; reads never return an expired row.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Named constraints keep Alembic migrations portable between SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    SQLite has no time zone type; storing naive UTC and re-attaching UTC on the way out
    keeps comparisons (``expires_at > now``) right on SQLite and PostgreSQL alike.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store as UTC (naive on SQLite, aware elsewhere)."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Read back as an aware UTC datetime."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class Base(DeclarativeBase):
    """Declarative base with the naming convention."""

    metadata = MetaData(naming_convention=NAMING)


class Meta(Base):
    """Key/value facts about the database itself (the key verifier), nothing personal."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(512))


class DataKey(Base):
    """A wrapped data key. Deleting it shreds every ciphertext sealed under it."""

    __tablename__ = "data_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kek_id: Mapped[str] = mapped_column(String(16), index=True)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class SessionRow(Base):
    """One person's run of one flow; its state is ciphertext."""

    __tablename__ = "sessions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    key_id: Mapped[str] = mapped_column(ForeignKey("data_keys.id", ondelete="CASCADE"), index=True)
    state_ct: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    __table_args__ = (Index("ix_sessions_owner_status", "owner", "status"),)


class AnswerRow(Base):
    """One kept answer; ``slot`` is an opaque per-session name, ``value_ct`` the ciphertext."""

    __tablename__ = "answers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    slot: Mapped[str] = mapped_column(String(32))
    value_ct: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    __table_args__ = (UniqueConstraint("session_id", "slot", name="uq_answers_session_slot"),)


class FlowSnapshot(Base):
    """The exact flow content a session was pinned to.

    Editing a file then never corrupts a session in flight. Flow definitions are not
    personal data, so snapshots have no expiry.
    """

    __tablename__ = "flow_snapshots"
    flow_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))
    body: Mapped[bytes] = mapped_column(LargeBinary)  # zlib-compressed canonical JSON
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Profile(Base):
    """One person's settings (language, the message holding their current question…).

    Everything is ciphertext under the profile's own data key; ``owner`` is a pseudonym.
    """

    __tablename__ = "profiles"
    owner: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("data_keys.id", ondelete="CASCADE"), index=True)
    data_ct: Mapped[bytes] = mapped_column(LargeBinary)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class ProcessedUpdate(Base):
    """An update already applied, so a redelivered or duplicated one changes nothing twice.

    Claimed in the same transaction as the change it caused. Update ids are Telegram's
    counters, not personal data; the row expires after a day.
    """

    __tablename__ = "processed_updates"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class ChatMessage(Base):
    """A message of a conversation to delete later (on schedule or on quick exit).

    The chat id and message id are ciphertext under the owner's profile key.
    """

    __tablename__ = "chat_messages"
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    owner: Mapped[str] = mapped_column(String(32), index=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("data_keys.id", ondelete="CASCADE"), index=True)
    ref_ct: Mapped[bytes] = mapped_column(LargeBinary)
    delete_after: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True, nullable=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Team(Base):
    """A team; its name is ciphertext under the team's key (which also seals handles)."""

    __tablename__ = "teams"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("data_keys.id", ondelete="CASCADE"), index=True)
    name_ct: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Member(Base):
    """A person's role in a team; handle and chat id are ciphertext under the team key."""

    __tablename__ = "members"
    owner: Mapped[str] = mapped_column(String(32), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    data_ct: Mapped[bytes] = mapped_column(LargeBinary)
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Invitation(Base):
    """A single-use, expiring invitation; only a keyed hash of its code is stored."""

    __tablename__ = "invitations"
    code_hash: Mapped[str] = mapped_column(String(32), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Alert(Base):
    """A supervisor alert: codes only (tier, categories, child flag), sealed with the team key."""

    __tablename__ = "alerts"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    payload_ct: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    acked_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Outbox(Base):
    """A message to send, durably.

    Written with the change that caused it, leased to one worker at a time, marked sent once
    Telegram accepted it.
    """

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    alert_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    recipient: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    body_ct: Mapped[bytes] = mapped_column(LargeBinary)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class Aggregate(Base):
    """A count (never a person): kept after the per-person data it came from has expired."""

    __tablename__ = "aggregates"
    team_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    metric: Mapped[str] = mapped_column(String(96), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
