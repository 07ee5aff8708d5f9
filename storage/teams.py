"""Teams, roles, invitations, alerts through a durable outbox, and aggregate counts.

Handles, chat ids and alert payloads are ciphertext under the team's own data key. An
alert and its outbox rows are written by ``alert_writes`` inside the same transaction as the
screening that caused them (``Store.save(writes=…)``), so a crash can delay an alert but
never lose it. Outbox rows are leased to one worker at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from storage import crypto
from storage.errors import StorageError
from storage.models import Aggregate, Alert, DataKey, Invitation, Member, Outbox, Team
from storage.repository import Store

ROLES = ("supervisor", "responder", "trainee")
#: Teams hold no personal data of their own; their key outlives members.
TEAM_LIFETIME = timedelta(days=3650)
#: An outbox row that cannot be sent for this long is dropped (and logged by the caller).
OUTBOX_LIFETIME = timedelta(days=2)


class InvitationInvalid(StorageError):
    """The invitation code is unknown, used or expired."""


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A member as read back."""

    owner: str
    team_id: str
    role: str
    status: str
    handle: str
    chat_id: int


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A leased outbox row, decrypted."""

    id: int
    team_id: str
    alert_id: str | None
    recipient: str
    kind: str
    body: dict[str, Any]
    attempts: int


@dataclass(frozen=True, slots=True)
class AlertInfo:
    """An alert as read back."""

    id: str
    team_id: str
    payload: dict[str, Any]
    created_at: datetime
    acked_at: datetime | None
    reminded_at: datetime | None
    escalated_at: datetime | None


class Teams:
    """Team storage on top of a ``Store`` (same engine, keys and transactions)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------------ keys

    def _team_key(self, db: Session, team_id: str, now: datetime) -> bytes:
        team = db.get(Team, team_id)
        if team is None:
            raise StorageError(f"no team {team_id}")
        key = self.store.data_key(db, team.key_id, now)
        if key is None:
            raise StorageError(f"team {team_id} has no key")
        return key

    def code_hash(self, code: str) -> str:
        """The keyed hash under which an invitation code is stored."""
        return self.store.keys.pseudonym("invite", code)

    # ------------------------------------------------------------------ teams

    def create_team(self, name: str, *, now: datetime) -> str:
        """Create a team; return its id."""
        team_id = crypto.random_id()
        with self.store.transaction() as db:
            key_id, key = self.store.new_key(db, now + TEAM_LIFETIME)
            name_ct = crypto.seal(key, name, table="teams", row=team_id, column="name")
            db.add(
                Team(
                    id=team_id,
                    key_id=key_id,
                    name_ct=name_ct,
                    created_at=now,
                    expires_at=now + TEAM_LIFETIME,
                )
            )
        return team_id

    def teams(self, *, now: datetime) -> list[tuple[str, str]]:
        """Every team as (id, name)."""
        with self.store.transaction() as db:
            out = []
            for team in db.scalars(
                select(Team).where(Team.expires_at > now).order_by(Team.created_at)
            ):
                key = self.store.data_key(db, team.key_id, now)
                if key is not None:
                    name = crypto.unseal(
                        key, team.name_ct, table="teams", row=team.id, column="name"
                    )
                    out.append((team.id, str(name)))
            return out

    # ------------------------------------------------------------------ invitations

    def invite(
        self, team_id: str, role: str, *, created_by: str, now: datetime, ttl: timedelta
    ) -> str:
        """Create a single-use invitation; return the code (only its hash is stored)."""
        if role not in ROLES:
            raise ValueError(role)
        code = crypto.random_id()[:16]
        with self.store.transaction() as db:
            db.add(
                Invitation(
                    code_hash=self.code_hash(code),
                    team_id=team_id,
                    role=role,
                    created_by=created_by,
                    created_at=now,
                    expires_at=now + ttl,
                )
            )
        return code

    def peek_invitation(self, code: str, *, now: datetime) -> tuple[str, str] | None:
        """(team id, role) of a usable invitation, without using it."""
        with self.store.transaction() as db:
            row = db.get(Invitation, self.code_hash(code))
            if row is None or row.used_at is not None or row.expires_at <= now:
                return None
            return row.team_id, row.role

    def join(
        self,
        code: str,
        owner: str,
        handle: str,
        chat_id: int,
        *,
        now: datetime,
        expires_at: datetime,
    ) -> MemberInfo:
        """Use an invitation: the person joins its team in its role (replacing any other).

        Raises:
            InvitationInvalid: Unknown, used or expired; nothing changed.
        """
        with self.store.transaction() as db:
            taken = db.execute(
                update(Invitation)
                .where(
                    Invitation.code_hash == self.code_hash(code),
                    Invitation.used_at.is_(None),
                    Invitation.expires_at > now,
                )
                .values(used_at=now)
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                raise InvitationInvalid("this invitation is unknown, used or expired")
            invitation = db.get(Invitation, self.code_hash(code))
            assert invitation is not None
            key = self._team_key(db, invitation.team_id, now)
            db.execute(delete(Member).where(Member.owner == owner))
            data = {"handle": handle, "chat": chat_id}
            db.add(
                Member(
                    owner=owner,
                    team_id=invitation.team_id,
                    role=invitation.role,
                    status="active",
                    joined_at=now,
                    expires_at=expires_at,
                    data_ct=crypto.seal(key, data, table="members", row=owner, column="data"),
                )
            )
            return MemberInfo(owner, invitation.team_id, invitation.role, "active", handle, chat_id)

    # ------------------------------------------------------------------ members

    def _read_member(self, db: Session, row: Member, now: datetime) -> MemberInfo | None:
        team = db.get(Team, row.team_id)
        if team is None:
            return None
        key = self.store.data_key(db, team.key_id, now)
        if key is None:
            return None
        data = crypto.unseal(key, row.data_ct, table="members", row=row.owner, column="data")
        return MemberInfo(
            row.owner, row.team_id, row.role, row.status, data["handle"], int(data["chat"])
        )

    def member(self, owner: str, *, now: datetime) -> MemberInfo | None:
        """The person's active membership, if any."""
        with self.store.transaction(readonly=True) as db:
            row = db.get(Member, owner)
            if row is None or row.status != "active" or row.expires_at <= now:
                return None
            return self._read_member(db, row, now)

    def members(self, team_id: str, *, now: datetime, role: str | None = None) -> list[MemberInfo]:
        """Active members of a team (optionally of one role)."""
        # Read-only: it is also read while a press's write transaction is open (alerts).
        with self.store.transaction(readonly=True) as db:
            query = select(Member).where(
                Member.team_id == team_id, Member.status == "active", Member.expires_at > now
            )
            if role is not None:
                query = query.where(Member.role == role)
            rows = db.scalars(query.order_by(Member.joined_at)).all()
            return [m for m in (self._read_member(db, r, now) for r in rows) if m is not None]

    def revoke(self, team_id: str, owner: str) -> bool:
        """Revoke a member of this team (only this team); pending sends to them are dropped."""
        with self.store.transaction() as db:
            result = db.execute(
                update(Member)
                .where(Member.team_id == team_id, Member.owner == owner)
                .values(status="revoked")
            )
            db.execute(delete(Outbox).where(Outbox.recipient == owner, Outbox.sent_at.is_(None)))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def leave(self, owner: str) -> bool:
        """Leave one's team (the membership row and pending sends go)."""
        with self.store.transaction() as db:
            db.execute(delete(Outbox).where(Outbox.recipient == owner, Outbox.sent_at.is_(None)))
            return bool(db.execute(delete(Member).where(Member.owner == owner)).rowcount)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ alerts and outbox

    def alert_writes(
        self,
        team_id: str,
        alert_id: str,
        payload: dict[str, Any],
        recipients: Iterable[tuple[str, int]],
        *,
        now: datetime,
        expires_at: datetime,
    ) -> Callable[[Session], None]:
        """The writes of a new alert and one outbox row per recipient, for ``Store.save``."""
        recipients = list(recipients)

        def write(db: Session) -> None:
            if db.get(Alert, alert_id) is not None:
                return  # already written: a retried save must not double the alert
            key = self._team_key(db, team_id, now)
            db.add(
                Alert(
                    id=alert_id,
                    team_id=team_id,
                    created_at=now,
                    expires_at=expires_at,
                    payload_ct=crypto.seal(
                        key, payload, table="alerts", row=alert_id, column="payload"
                    ),
                )
            )
            db.flush()
            for owner, chat_id in recipients:
                self._enqueue(db, key, team_id, alert_id, owner, chat_id, "alert", {}, now)

        return write

    def _enqueue(
        self,
        db: Session,
        key: bytes,
        team_id: str,
        alert_id: str | None,
        owner: str,
        chat_id: int,
        kind: str,
        extra: dict[str, Any],
        due: datetime,
    ) -> None:
        row = Outbox(
            team_id=team_id,
            alert_id=alert_id,
            recipient=owner,
            kind=kind,
            body_ct=b"",
            due_at=due,
            attempts=0,
            expires_at=due + OUTBOX_LIFETIME,
        )
        db.add(row)
        db.flush()
        row.body_ct = crypto.seal(
            key, {"chat": chat_id, **extra}, table="outbox", row=str(row.id), column="body"
        )

    def enqueue(
        self,
        team_id: str,
        owner: str,
        chat_id: int,
        kind: str,
        extra: dict[str, Any],
        *,
        now: datetime,
        alert_id: str | None = None,
    ) -> None:
        """Queue one message (a reminder, an escalation, a digest)."""
        with self.store.transaction() as db:
            key = self._team_key(db, team_id, now)
            self._enqueue(db, key, team_id, alert_id, owner, chat_id, kind, extra, now)

    def lease_due(self, *, now: datetime, lease: timedelta, limit: int = 20) -> list[OutboxItem]:
        """Lease due, unsent rows to this worker (another worker will not take them)."""
        out = []
        with self.store.transaction() as db:
            ids = list(
                db.scalars(
                    select(Outbox.id)
                    .where(
                        Outbox.sent_at.is_(None),
                        Outbox.due_at <= now,
                        Outbox.expires_at > now,
                        or_(Outbox.lease_until.is_(None), Outbox.lease_until <= now),
                    )
                    .order_by(Outbox.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            )
            for row_id in ids:
                # Conditional update: only one worker's lease can succeed for a row.
                got = db.execute(
                    update(Outbox)
                    .where(
                        Outbox.id == row_id,
                        Outbox.sent_at.is_(None),
                        or_(Outbox.lease_until.is_(None), Outbox.lease_until <= now),
                    )
                    .values(lease_until=now + lease, attempts=Outbox.attempts + 1)
                )
                if got.rowcount != 1:  # type: ignore[attr-defined]
                    continue
                row = db.get(Outbox, row_id)
                assert row is not None
                key = self._team_key(db, row.team_id, now)
                body = crypto.unseal(
                    key, row.body_ct, table="outbox", row=str(row.id), column="body"
                )
                out.append(
                    OutboxItem(
                        row.id,
                        row.team_id,
                        row.alert_id,
                        row.recipient,
                        row.kind,
                        body,
                        row.attempts,
                    )
                )
        return out

    def mark_sent(self, item_id: int, *, now: datetime) -> None:
        """Telegram accepted the message."""
        with self.store.transaction() as db:
            db.execute(
                update(Outbox).where(Outbox.id == item_id).values(sent_at=now, lease_until=None)
            )

    def retry_later(self, item_id: int, *, at: datetime) -> None:
        """The send failed; try again at ``at``."""
        with self.store.transaction() as db:
            db.execute(
                update(Outbox).where(Outbox.id == item_id).values(lease_until=None, due_at=at)
            )

    def drop(self, item_id: int) -> None:
        """Never send this row (e.g. its recipient was revoked)."""
        with self.store.transaction() as db:
            db.execute(delete(Outbox).where(Outbox.id == item_id))

    def alert(self, alert_id: str, *, now: datetime) -> AlertInfo | None:
        """An alert as read back."""
        with self.store.transaction() as db:
            row = db.get(Alert, alert_id)
            if row is None or row.expires_at <= now:
                return None
            key = self._team_key(db, row.team_id, now)
            payload = crypto.unseal(
                key, row.payload_ct, table="alerts", row=row.id, column="payload"
            )
            return AlertInfo(
                row.id,
                row.team_id,
                payload,
                row.created_at,
                row.acked_at,
                row.reminded_at,
                row.escalated_at,
            )

    def ack(self, alert_id: str, owner: str, *, now: datetime) -> bool:
        """Acknowledge an alert; False if it was acknowledged already."""
        with self.store.transaction() as db:
            result = db.execute(
                update(Alert)
                .where(Alert.id == alert_id, Alert.acked_at.is_(None))
                .values(acked_at=now, acked_by=owner)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def unacked(self, *, now: datetime, older_than: timedelta, field: str) -> list[str]:
        """Ids of unacknowledged alerts older than ``older_than`` not yet reminded/escalated."""
        column = Alert.reminded_at if field == "reminded_at" else Alert.escalated_at
        with self.store.transaction() as db:
            return list(
                db.scalars(
                    select(Alert.id).where(
                        Alert.acked_at.is_(None),
                        column.is_(None),
                        Alert.created_at <= now - older_than,
                        Alert.expires_at > now,
                    )
                )
            )

    def mark(self, alert_id: str, field: str, *, now: datetime) -> bool:
        """Set reminded_at or escalated_at once; False if another worker did it first."""
        column = Alert.reminded_at if field == "reminded_at" else Alert.escalated_at
        with self.store.transaction() as db:
            result = db.execute(
                update(Alert).where(Alert.id == alert_id, column.is_(None)).values({field: now})
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ aggregates

    @staticmethod
    def count_writes(team_id: str, day: date, metrics: dict[str, int]) -> Callable[[Session], None]:
        """Writes adding to aggregate counters, for ``Store.save``."""

        def write(db: Session) -> None:
            if metrics:
                # One statement for all the counters, built once per dialect: a flow's last
                # answer writes them, on the press's hot path.
                db.execute(
                    _count_upsert(db.get_bind().dialect.name),
                    [
                        {"team_id": team_id, "day": day.isoformat(), "metric": m, "count": c}
                        for m, c in metrics.items()
                    ],
                )

        return write

    def add_counts(self, team_id: str, day: date, metrics: dict[str, int]) -> None:
        """Add to aggregate counters in a transaction of their own."""
        with self.store.transaction() as db:
            self.count_writes(team_id, day, metrics)(db)

    def counts(self, team_id: str, *, since: date, until: date | None = None) -> dict[str, int]:
        """Summed counters of a team over [since, until]."""
        with self.store.transaction() as db:
            query = select(Aggregate.metric, func.sum(Aggregate.count)).where(
                Aggregate.team_id == team_id, Aggregate.day >= since.isoformat()
            )
            if until is not None:
                query = query.where(Aggregate.day <= until.isoformat())
            return {m: int(c) for m, c in db.execute(query.group_by(Aggregate.metric)).all()}

    # ------------------------------------------------------------------ expiry and erasure

    def purge(self, *, now: datetime) -> int:
        """Delete expired members, invitations, alerts and outbox rows, and empty teams."""
        removed = 0
        with self.store.transaction() as db:
            for model in (Outbox, Alert, Invitation, Member):
                removed += db.execute(delete(model).where(model.expires_at <= now)).rowcount  # type: ignore[attr-defined]
            db.execute(
                delete(Outbox).where(
                    Outbox.sent_at.is_not(None), Outbox.sent_at <= now - timedelta(days=1)
                )
            )
            keys = list(db.scalars(select(Team.key_id).where(Team.expires_at <= now)))
            removed += db.execute(delete(Team).where(Team.expires_at <= now)).rowcount  # type: ignore[attr-defined]
            db.execute(delete(DataKey).where(DataKey.id.in_(keys)))
        return int(removed)

    def claim_once(self, team_id: str, key: str) -> bool:
        """True for exactly one caller per (team, key), across workers (e.g. one digest a day)."""
        with self.store.transaction() as db:
            insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
            result = db.execute(
                insert(Aggregate)
                .values(team_id=team_id, day="once", metric=f"_once.{key}"[:96], count=1)
                .on_conflict_do_nothing(index_elements=["team_id", "day", "metric"])
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def erase_owner(self, owner: str) -> None:
        """/forget: membership and anything queued for this person."""
        self.leave(owner)


@cache
def _count_upsert(dialect: str) -> Any:
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(Aggregate).values(
        team_id=bindparam("team_id"),
        day=bindparam("day"),
        metric=bindparam("metric"),
        count=bindparam("count"),
    )
    return statement.on_conflict_do_update(
        index_elements=["team_id", "day", "metric"],
        set_={"count": Aggregate.count + statement.excluded.count},
    )
