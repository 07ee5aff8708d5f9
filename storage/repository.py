"""The storage contract: sessions, kept answers, expiry, erasure, key rotation.

It stores bytes and JSON-able values and knows nothing of flows or Telegram. Every read
filters on ``expires_at > now``, so an expired row is invisible even before the purge.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from cachetools import TTLCache
from sqlalchemy import (
    BigInteger,
    Connection,
    Dialect,
    Engine,
    Integer,
    LargeBinary,
    String,
    bindparam,
    cast,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.expression import BindParameter

from storage import crypto, purge_sql
from storage.crypto import KeyRing
from storage.errors import (
    Changed,
    Conflict,
    DatabaseUnavailable,
    Duplicate,
    KeyFileMissing,
    WrongKey,
)
from storage.locks import Lease
from storage.models import (
    AnswerRow,
    ChatMessage,
    DataKey,
    FlowSnapshot,
    Meta,
    ProcessedUpdate,
    Profile,
    SessionRow,
    UTCDateTime,
)
from storage.prepared import Prepared, batch, send_committing, transaction

log = logging.getLogger("waymark.storage")

_VERIFIER = "key_verifier"
#: How long an update claim is kept: Telegram redelivers for at most a day.
CLAIM_TTL = timedelta(days=1)
#: Telegram lets bots delete messages for 48 hours; a reference older than that is useless.
MESSAGE_TTL = timedelta(hours=47)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A live session as read back.

    Attributes:
        id: The session id.
        owner: The owner's pseudonym.
        status: ``active`` or ``ended``.
        version: Optimistic-lock version; pass it back to ``save``.
        state: The decrypted state.
        expires_at: When the session and its answers expire.
        cached: Taken from this process's copy of the session as its last step left it,
            not read from the database (``Store.step``). Another worker may have moved the
            session on since: a step decided on it is written only if the stored version
            is still this one, and a refusal decided on it is not to be trusted (``step``
            decides again on a fresh read).
    """

    id: str
    owner: str
    status: str
    version: int
    state: dict[str, Any]
    expires_at: datetime
    cached: bool = False


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    """What one purge removed."""

    answers: int = 0
    sessions: int = 0
    data_keys: int = 0

    def __add__(self, other: PurgeCounts) -> PurgeCounts:
        return PurgeCounts(
            self.answers + other.answers,
            self.sessions + other.sessions,
            self.data_keys + other.data_keys,
        )

    @property
    def total(self) -> int:
        """Rows removed in all."""
        return self.answers + self.sessions + self.data_keys


@dataclass(frozen=True, slots=True)
class AnswerChange:
    """Keep (``value`` set) or drop (``value`` None and ``drop``) one answer by name."""

    name: str
    value: Any = None
    drop: bool = False


@dataclass(frozen=True, slots=True)
class StepPlan:
    """What one step writes to a session, atomically (see ``Store.step``).

    Attributes:
        state: The new state.
        status: ``active`` or ``ended``.
        answers: Answers to keep or drop.
        claim: An update key claimed in the same transaction (exactly-once).
        writes: More writes that must commit with this one or not at all.
    """

    state: dict[str, Any]
    status: str
    answers: Iterable[AnswerChange] = ()
    claim: str | None = None
    writes: Iterable[Callable[[Session], None]] = field(default_factory=tuple)


R = TypeVar("R")

# The hot path's statements, built once: a button press runs them in one transaction, and
# building and caching ORM queries anew cost more than the database work itself.
_OWNER: BindParameter[str] = bindparam("owner")
_NOW: BindParameter[datetime] = bindparam("now")
_PROFILE_READ = (
    select(
        Profile.data_ct,
        Profile.version,
        DataKey.id.label("key_id"),
        DataKey.kek_id,
        DataKey.wrapped,
    )
    .join(DataKey, DataKey.id == Profile.key_id)
    .where(Profile.owner == _OWNER, Profile.expires_at > _NOW, DataKey.expires_at > _NOW)
)
# Which profile, in which version, the owner has live ("<key id>:<version>", "" when none):
# what ``_SESSION_WRITE`` compares with the profile a step was decided with. The key id
# tells a profile rebuilt after expiry (its versions start at 1 again) from the old one.
_PROFILE_TAG = func.coalesce(
    _PROFILE_READ.with_only_columns(
        Profile.key_id + ":" + cast(Profile.version, String)
    ).scalar_subquery(),
    "",
)
_PROFILE_SEEN: BindParameter[str | None] = bindparam("profile_tag", type_=String)
_SESSION_COLUMNS = (
    SessionRow.id,
    SessionRow.owner,
    SessionRow.status,
    SessionRow.version,
    SessionRow.state_ct,
    SessionRow.expires_at,
    DataKey.id.label("key_id"),
    DataKey.kek_id,
    DataKey.wrapped,
)
_ACTIVE_READ = (
    select(*_SESSION_COLUMNS)
    .join(DataKey, DataKey.id == SessionRow.key_id)
    .where(
        SessionRow.owner == _OWNER,
        SessionRow.status == "active",
        SessionRow.expires_at > _NOW,
        DataKey.expires_at > _NOW,
    )
    .order_by(SessionRow.created_at.desc())
    .limit(1)
)
# For a write: PostgreSQL locks the session row until commit; SQLite's BEGIN IMMEDIATE
# already excludes other writers (and SQLAlchemy renders no FOR UPDATE there).
_ACTIVE_FOR_UPDATE = _ACTIVE_READ.with_for_update(of=SessionRow)
_SESSION_READ = (
    select(*_SESSION_COLUMNS)
    .join(DataKey, DataKey.id == SessionRow.key_id)
    .where(
        SessionRow.id == bindparam("id"), SessionRow.expires_at > _NOW, DataKey.expires_at > _NOW
    )
)
_SESSION_FOR_UPDATE = _SESSION_READ.with_for_update(of=SessionRow)
# A session whose data key is gone or expired cannot be read: it is left out, as if gone.
_SESSIONS_OF = (
    select(*_SESSION_COLUMNS)
    .join(DataKey, DataKey.id == SessionRow.key_id)
    .where(SessionRow.owner == _OWNER, SessionRow.expires_at > _NOW, DataKey.expires_at > _NOW)
    .order_by(SessionRow.created_at.desc())
)
_SESSION_WRITE = (
    update(SessionRow)
    .where(
        SessionRow.id == bindparam("sid"),
        SessionRow.version == bindparam("expected"),
        SessionRow.expires_at > _NOW,
        # A step decided with a profile (its language, what follows a consent) is written
        # only if that profile is still the live one: with a cached copy (``Store.step``),
        # another worker may have changed it. None: the writer read no profile (``save``).
        or_(_PROFILE_SEEN.is_(None), _PROFILE_TAG == _PROFILE_SEEN),
    )
    .values(
        state_ct=bindparam("state_ct"),
        status=bindparam("new_status"),
        version=bindparam("new_version"),
        updated_at=_NOW,
    )
)
# PostgreSQL: a step's writes as one statement, the function of migration 0005 (its
# docstring says why). It runs the chat's lock, the claim, ``_SESSION_WRITE`` and the
# answers' upserts and drops in this order, and fails with SQLSTATE WM001 where
# ``_SESSION_WRITE`` would change no row.
_PRESS = select(
    func.waymark_press(
        bindparam("lock_key", type_=BigInteger),
        bindparam("claim", type_=String),
        bindparam("claim_expires", type_=UTCDateTime()),
        bindparam("sid", type_=String),
        bindparam("expected", type_=Integer),
        bindparam("now", type_=UTCDateTime()),
        bindparam("state_ct", type_=LargeBinary),
        bindparam("new_status", type_=String),
        bindparam("new_version", type_=Integer),
        bindparam("owner", type_=String),
        _PROFILE_SEEN,
        bindparam("slots", type_=postgresql.ARRAY(String)),
        # None drops the slot's answer.
        bindparam("values", type_=postgresql.ARRAY(LargeBinary)),
        bindparam("answers_expire", type_=UTCDateTime()),
    )
)
_VERSION_MISSED = "WM001"
_CLAIM = insert(ProcessedUpdate).values(key=bindparam("key"), expires_at=bindparam("expires_at"))
_ANSWER_DROP = delete(AnswerRow).where(
    AnswerRow.session_id == bindparam("sid"), AnswerRow.slot == bindparam("name")
)


def _notify(sent: Callable[[], None]) -> None:
    # A caller's notice, inside the write's batch: whatever it raises must neither stop
    # the write (it is on the wire already, with its COMMIT or as a lone statement that
    # commits at the batch's end) nor be taken for the write's failure.
    try:
        sent()
    except Exception:
        log.exception("the step's 'sent' hook failed; the write goes on")


def _seal_answer(dek: bytes, session_id: str, slot: str, change: AnswerChange) -> bytes:
    # The answer's name travels inside the ciphertext; the slot alone is opaque. Bound to
    # its session and slot (``answers`` reads it back with the same associated data).
    return crypto.seal(
        dek,
        {"name": change.name, "value": change.value},
        table="answers",
        row=f"{session_id}/{slot}",
        column="value",
    )


def _answer_upsert(dialect: str) -> Any:
    # One statement per kept answer: (session, slot) is unique, so an answer changed by
    # Back overwrites the old one in place.
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(AnswerRow).values(
        session_id=bindparam("session_id"),
        slot=bindparam("slot"),
        value_ct=bindparam("value_ct"),
        expires_at=bindparam("expires_at"),
    )
    return stmt.on_conflict_do_update(
        index_elements=[AnswerRow.session_id, AnswerRow.slot],
        set_={"value_ct": stmt.excluded.value_ct, "expires_at": stmt.excluded.expires_at},
    )


class _Hot:
    """The hot path's statements, compiled for one engine's dialect (see storage.prepared)."""

    def __init__(self, dialect: Dialect) -> None:
        self.profile = Prepared(_PROFILE_READ, dialect)
        self.active = Prepared(_ACTIVE_FOR_UPDATE, dialect)
        self.session = Prepared(_SESSION_FOR_UPDATE, dialect)
        self.claim = Prepared(_CLAIM, dialect)
        self.write = Prepared(_SESSION_WRITE, dialect)
        # One statement for the lot on PostgreSQL through psycopg 3, which types every
        # value (a drop-only step's array of NULLs included); SQLite, and another
        # PostgreSQL driver, run the statements one by one.
        self.press = (
            Prepared(_PRESS, dialect)
            if dialect.name == "postgresql" and dialect.driver == "psycopg"
            else None
        )
        self.answer = Prepared(_answer_upsert(dialect.name), dialect)
        self.drop = Prepared(_ANSWER_DROP, dialect)


#: How many owners' sessions ``Store.step`` keeps warm (see ``Store``).
WARM_ENTRIES = 2048
#: How long, in seconds, a warm session may go unused before it is dropped. Long enough for
#: a person's next answer; short, because a copy of a session erased through another
#: worker stays in this one's memory until then (never written back nor shown: see
#: ``Store.step``).
WARM_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class _Warm:
    """An owner's session as their last step wrote it (``Store.step``)."""

    profile: dict[str, Any]
    profile_tag: str
    record: SessionRecord
    dek: bytes


class Store:
    """Encrypted, expiring persistence of sessions and answers.

    Args:
        engine: A SQLAlchemy engine (see ``storage.db.make_engine``), already migrated.
        keys: The key ring.
        warm_entries: How many owners' sessions ``step`` keeps warm (0: none).
        warm_seconds: How long a warm session may go unused before it is dropped.
    """

    def __init__(
        self,
        engine: Engine,
        keys: KeyRing,
        *,
        warm_entries: int = WARM_ENTRIES,
        warm_seconds: float = WARM_SECONDS,
    ) -> None:
        self.engine = engine
        self.keys = keys
        # Each owner's session as their last step left it, with its data key and the
        # profile it was decided with, so that the next press need not read them back
        # (``step``). Bounded in number and in time: plaintext and keys stay in memory for
        # minutes at most, not for as long as a conversation could last (``sweep_warm``).
        self._warm: TTLCache[str, _Warm] | None = (
            TTLCache(maxsize=warm_entries, ttl=warm_seconds) if warm_entries > 0 else None
        )
        # Owners whose copy here was found behind: their updates are being spread over
        # several workers, so a copy would be behind again at their next press here, and a
        # failed write costs more than the read it saves. None is kept for them for a while.
        self._spread: TTLCache[str, bool] = TTLCache(maxsize=max(warm_entries, 1), ttl=warm_seconds)
        self._warm_lock = threading.Lock()
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._hot = _Hot(engine.dialect)
        self._readers = sessionmaker(
            engine.execution_options(waymark_readonly=True), expire_on_commit=False
        )
        # Conversations writing right now. SQLite has one writer at a time and its busy
        # handler polls, so a purge looping batch after batch can starve them (its cycle can
        # phase-lock with the handler's 100 ms retries); the purge yields while this is > 0.
        self._writers = 0
        self._writers_lock = threading.Lock()

    @contextmanager
    def _tx(self, *, readonly: bool = False, background: bool = False) -> Iterator[Session]:
        with (
            self._mapped_errors(counted=not readonly and not background),
            (self._readers if readonly else self._sessions).begin() as db,
        ):
            yield db

    @contextmanager
    def _core_tx(self, lease: Lease | None = None) -> Iterator[Connection]:
        """A write transaction on a plain connection: the hot path's, without ORM bookkeeping."""
        with self._mapped_errors(counted=True):
            if lease is not None and lease.connection is not None:
                # The connection that holds (or will hold) the chat's lock carries the
                # transaction too; a lazy lease takes its lock with the first statements
                # (``step``). Its BEGIN goes with the first statements too (``transaction``).
                with transaction(lease.connection):
                    yield lease.connection
            else:
                with self.engine.connect() as conn, transaction(conn):
                    yield conn

    @contextmanager
    def _mapped_errors(self, *, counted: bool) -> Iterator[None]:
        if counted:
            with self._writers_lock:
                self._writers += 1
        try:
            yield
        except IntegrityError as exc:
            if "processed_updates" in str(exc) or "pk_processed_updates" in str(exc):
                raise Duplicate("this update was applied already") from None
            raise Conflict(f"integrity: {type(exc.orig).__name__}") from None
        except SQLAlchemyError as exc:
            if "database is locked" in str(exc):
                raise Conflict("the database is busy; retry") from None
            # The driver's own words ("database or disk is full", "connection refused")
            # tell an operator what to fix; they carry no answer (answers are ciphertext).
            reason = str(getattr(exc, "orig", exc)).splitlines()[0][:160]
            raise DatabaseUnavailable(f"database error: {reason}") from exc
        finally:
            if counted:
                with self._writers_lock:
                    self._writers -= 1

    def _yield_to_writers(self, pause: float) -> None:
        """Between purge batches: let waiting conversations write first (bounded)."""
        deadline = time.monotonic() + 0.5
        time.sleep(pause)
        while self._writers > 0 and time.monotonic() < deadline:
            time.sleep(0.001)

    def transaction(self, *, readonly: bool = False) -> contextlib.AbstractContextManager[Session]:
        """A transaction with Waymark's error mapping (for sibling storage modules)."""
        return self._tx(readonly=readonly)

    def new_key(self, db: Session, expires_at: datetime) -> tuple[str, bytes]:
        """Create a wrapped data key row; return its id and the key."""
        return self._new_key(db, expires_at)

    def data_key(self, db: Session, key_id: str, now: datetime) -> bytes | None:
        """Unwrap a data key, or None if it is gone or expired."""
        return self._dek(db, key_id, now)

    # ------------------------------------------------------------------ key check

    def check_keys(self) -> None:
        """Verify that this key ring opens this database; record it on a fresh database.

        Raises:
            WrongKey: The database was written with another key ring, or with KEKs the
                ring no longer holds.
        """
        try:
            self._check_keys()
        except Conflict:
            # Another worker recorded the verifier at the same moment: check against it.
            self._check_keys()

    def _check_keys(self) -> None:
        with self._tx() as db:
            row = db.get(Meta, _VERIFIER)
            if row is None:
                db.add(Meta(key=_VERIFIER, value=self.keys.verifier()))
                return
            if row.value != self.keys.verifier():
                raise WrongKey(
                    "the key ring does not belong to this database (pseudonym key differs); "
                    "point WAYMARK_KEY_FILE at the right key file. Nothing was changed."
                )
            used = set(db.scalars(select(DataKey.kek_id).distinct()))
            missing = used - set(self.keys.keks)
            if missing:
                raise WrongKey(
                    f"the key ring lacks key(s) {sorted(missing)} that wrap stored data keys; "
                    "restore the key file from before the last rotation. Nothing was changed."
                )

    @staticmethod
    def require_key_file(database_has_data: bool, key_file_exists: bool, key_file: str) -> None:
        """Fail closed when a database exists but its key file does not.

        Raises:
            KeyFileMissing: The database holds data and the key file is missing.
        """
        if database_has_data and not key_file_exists:
            raise KeyFileMissing(
                f"the database holds encrypted data but the key file {key_file} is missing; "
                "restore it or set WAYMARK_KEY_FILE. Nothing was changed."
            )

    # ------------------------------------------------------------------ data keys

    def _new_key(self, db: Session, expires_at: datetime) -> tuple[str, bytes]:
        key_id = crypto.random_id()
        dek, kek_id, wrapped = self.keys.new_data_key(key_id)
        db.add(DataKey(id=key_id, kek_id=kek_id, wrapped=wrapped, expires_at=expires_at))
        return key_id, dek

    def _dek(self, db: Session, key_id: str, now: datetime) -> bytes | None:
        row = db.get(DataKey, key_id)
        if row is None or row.expires_at <= now:
            return None
        return self.keys.unwrap(row.wrapped, row.id, row.kek_id)

    # ------------------------------------------------------------------ sessions

    def create_session(
        self, owner: str, state: dict[str, Any], *, now: datetime, expires_at: datetime
    ) -> SessionRecord:
        """Start a session for ``owner`` with its own data key.

        Any other active session of the same owner is ended first (one flow at a time).
        """
        session_id = crypto.random_id()
        with self._changing(owner), self._tx() as db:
            db.execute(
                update(SessionRow)
                .where(SessionRow.owner == owner, SessionRow.status == "active")
                .values(status="ended", version=SessionRow.version + 1, updated_at=now)
            )
            key_id, dek = self._new_key(db, expires_at)
            db.add(
                SessionRow(
                    id=session_id,
                    owner=owner,
                    status="active",
                    version=1,
                    key_id=key_id,
                    state_ct=crypto.seal(
                        dek, state, table="sessions", row=session_id, column="state"
                    ),
                    created_at=now,
                    updated_at=now,
                    expires_at=expires_at,
                )
            )
        return SessionRecord(session_id, owner, "active", 1, state, expires_at)

    def _record(self, row: Any) -> tuple[SessionRecord, bytes]:
        """A session row read with its data key's columns (``_SESSION_COLUMNS``)."""
        dek = self.keys.unwrap(row.wrapped, row.key_id, row.kek_id)
        state = crypto.unseal(dek, row.state_ct, table="sessions", row=row.id, column="state")
        return SessionRecord(row.id, row.owner, row.status, row.version, state, row.expires_at), dek

    def get_session(self, session_id: str, *, now: datetime) -> SessionRecord | None:
        """A session by id, or None if it does not exist or has expired."""
        with self._tx(readonly=True) as db:
            row = db.connection().execute(_SESSION_READ, {"id": session_id, "now": now}).first()
            return None if row is None else self._record(row)[0]

    def active_session(self, owner: str, *, now: datetime) -> SessionRecord | None:
        """The owner's active, unexpired session, if any."""
        with self._tx(readonly=True) as db:
            row = db.connection().execute(_ACTIVE_READ, {"owner": owner, "now": now}).first()
            return None if row is None else self._record(row)[0]

    def save(
        self,
        session_id: str,
        state: dict[str, Any],
        *,
        expected_version: int,
        status: str,
        now: datetime,
        answers: Iterable[AnswerChange] = (),
        claim: str | None = None,
        writes: Iterable[Callable[[Session], None]] = (),
    ) -> int:
        """Write a new state and the answer changes of one step, atomically.

        Args:
            session_id: The session.
            state: The new state.
            expected_version: The version read; a different stored version is a conflict.
            status: ``active`` or ``ended``.
            now: The clock.
            answers: Answers to keep or drop.
            claim: An update key claimed in the same transaction (exactly-once).
            writes: More writes that must commit with this one or not at all (an alert in
                the outbox, aggregate counts).

        Returns:
            The new version.

        Raises:
            Conflict: The session changed (or expired) since ``expected_version`` was read;
                nothing was written.
            Duplicate: ``claim`` was claimed before; nothing was written.
        """
        plan = StepPlan(state, status, answers, claim, writes)
        with self._core_tx() as conn:
            row = self._hot.session.first(conn, {"id": session_id, "now": now})
            if row is not None:
                self._warm_drop(row.owner)
            if row is None or row.version != expected_version:
                raise Changed(f"session {session_id} changed or expired")
            record, dek = self._record(row)
            return self._write_step(conn, record, dek, plan, now)

    def step(
        self,
        owner: str,
        *,
        now: datetime,
        decide: Callable[[dict[str, Any], SessionRecord | None], tuple[R, StepPlan | None]],
        lease: Lease | None = None,
        sent: Callable[[], None] | None = None,
    ) -> R:
        """Read an owner's profile and active session, decide, and write: one transaction.

        This is a button press's whole trip to the database. ``decide`` runs inside the
        transaction with the profile data and the session (or None); it returns the caller's
        result and a plan to write, or None to write nothing. On PostgreSQL the session row
        stays locked until the commit; on SQLite the transaction holds the write lock.

        **The warm copy.** After a step, this store keeps the owner's session as the step
        left it, with its data key and the profile it was decided with (bounded: see
        ``WARM_ENTRIES``, ``WARM_SECONDS``). The next step decides on that copy
        (``SessionRecord.cached``) without reading, and sends the lock and the writes
        together: one round trip on PostgreSQL instead of two. The write holds only if the
        session still has the copy's version and the profile is still the copy's (same key,
        same version; the statement checks both, unexpired), so another worker's change
        makes it fail with Conflict and nothing written; the caller's retry then reads
        afresh. A copy is never used past its session's expiry; erasure, a profile change
        and a new session through this store drop it, and ``sweep_warm`` the old ones. When
        ``decide`` declines to write on the copy, or raises, it is asked again on a fresh
        read: a refusal may be the copy's doing. An owner whose copy was found behind
        (``Changed``) gets none on this store for ``WARM_SECONDS``: their updates are being
        spread over several workers, and a copy that fails costs more round trips than the
        read it would save.

        Args:
            owner: The owner's pseudonym.
            now: The clock.
            decide: Chooses what to write (it must not touch the database itself, except
                through the plan's ``writes``).
            lease: The chat's lock; its connection carries the transaction.
            sent: Called once the step's writes are on their way to the server (on
                PostgreSQL, before their results are awaited), each time a plan is written.
                The caller's other work then shares the process with the wait for the server
                instead of with the sending. What it raises is logged and changes nothing:
                the write goes on.

        Returns:
            What ``decide`` returned first.

        Raises:
            Conflict: The session or the profile changed meanwhile; nothing was written.
            Duplicate: The plan's claim was claimed before; nothing was written.
        """
        warm = self._warm_take(owner, now)
        if warm is not None:
            done = self._step_warm(owner, now, decide, lease, warm, sent)
            if done is not None:
                return done[0]
        hot = self._hot
        with self._core_tx(lease) as conn:
            # The lock, then the reads: one round trip on PostgreSQL (``prepared.batch``);
            # the server takes the lock before the reads see anything.
            with batch(conn):
                if lease is not None:
                    lease.hold()
                profile_sent = hot.profile.send(conn, {"owner": owner, "now": now})
                active_sent = hot.active.send(conn, {"owner": owner, "now": now})
            profile, profile_tag = self._profile_read(owner, hot.profile.row(conn, profile_sent))
            row = hot.active.row(conn, active_sent)
            record, dek = self._record(row) if row is not None else (None, b"")
            result, plan = decide(profile, record)
            if plan is not None and record is not None:
                self._write_step(conn, record, dek, plan, now, lease, profile_tag, sent)
        if record is not None:
            self._warm_keep(_Warm(dict(profile), profile_tag, record, dek), plan)
        return result

    def _step_warm(
        self,
        owner: str,
        now: datetime,
        decide: Callable[[dict[str, Any], SessionRecord | None], tuple[R, StepPlan | None]],
        lease: Lease | None,
        warm: _Warm,
        sent: Callable[[], None] | None,
    ) -> tuple[R] | None:
        """A step decided on the warm copy: the lock and the writes in one round trip.

        Returns None when the step must be decided again on a fresh read: ``decide`` wrote
        nothing or raised, and either may be the copy's doing. A write that finds the
        session or the profile changed raises Conflict (nothing written), and the caller's
        retry reads afresh, the copy being gone.
        """
        try:
            result, plan = decide(dict(warm.profile), warm.record)
        except Exception:
            return None
        if plan is None:
            return None
        try:
            with self._core_tx(lease) as conn:
                self._write_step(
                    conn, warm.record, warm.dek, plan, now, lease, warm.profile_tag, sent
                )
        except Changed:
            # Another writer got there first (a busy database says nothing of the kind).
            with self._warm_lock:
                self._spread[owner] = True
            raise
        self._warm_keep(warm, plan)
        return (result,)

    def _warm_take(self, owner: str, now: datetime) -> _Warm | None:
        """Take an owner's warm session out (a failed step leaves none behind)."""
        if self._warm is None:
            return None
        with self._warm_lock:
            warm = self._warm.pop(owner, None)
        if warm is None or warm.record.expires_at <= now:
            return None
        return warm

    def _warm_keep(self, warm: _Warm, plan: StepPlan | None) -> None:
        """Keep a session as a step left it, if it is still active."""
        record = warm.record
        if plan is not None:
            record = replace(
                record, status=plan.status, version=record.version + 1, state=plan.state
            )
        if self._warm is None or record.status != "active":
            return
        with self._warm_lock:
            if record.owner not in self._spread:
                self._warm[record.owner] = replace(warm, record=replace(record, cached=True))

    def sweep_warm(self, *, now: datetime) -> int:
        """Drop from memory the warm sessions unused for too long or expired; how many.

        The cache drops entries past their time lazily, when it is next written to, so an
        idle worker would keep them: the bot calls this every 20 s on every worker (the
        purge, which runs on one worker at a time, calls it too).
        """
        if self._warm is None:
            return 0
        with self._warm_lock:
            self._spread.expire()
            unused = self._warm.expire()
            gone = [o for o, w in self._warm.items() if w.record.expires_at <= now]
            for owner in gone:
                self._warm.pop(owner, None)
            return len(unused) + len(gone)

    def _warm_drop(self, owner: str, *, erased: bool = False) -> None:
        """Forget an owner's warm session (their session or profile changed another way)."""
        if self._warm is not None:
            with self._warm_lock:
                self._warm.pop(owner, None)
                if erased:
                    self._spread.pop(owner, None)

    @contextmanager
    def _changing(self, owner: str, *, erased: bool = False) -> Iterator[None]:
        """Around a change to an owner's session or profile made otherwise than by ``step``.

        The warm copy goes before the change and again after its transaction, in case a step
        meanwhile put one back: a copy from before the change would fail its write (or, for
        an erasure, keep erased plaintext in memory).
        """
        self._warm_drop(owner, erased=erased)
        try:
            yield
        finally:
            self._warm_drop(owner, erased=erased)

    def _write_step(
        self,
        conn: Connection,
        record: SessionRecord,
        dek: bytes,
        plan: StepPlan,
        now: datetime,
        lease: Lease | None = None,
        profile_tag: str | None = None,
        sent: Callable[[], None] | None = None,
    ) -> int:
        version = record.version + 1
        state_ct = crypto.seal(dek, plan.state, table="sessions", row=record.id, column="state")
        values = {
            "sid": record.id,
            "expected": record.version,
            "now": now,
            "state_ct": state_ct,
            "new_status": plan.status,
            "new_version": version,
            "owner": record.owner,
            "profile_tag": profile_tag,
        }
        writes = list(plan.writes)
        if self._hot.press is not None:
            self._write_press(conn, record, dek, plan, values, bool(writes), lease, sent)
        else:
            self._write_statements(conn, record, dek, plan, values, lease, sent)
        if writes:
            # Alerts and counts are written through the ORM, in a savepoint of this same
            # transaction (only when a flow ends, so the hot path stays plain).
            with Session(
                bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False
            ) as db:
                for write in writes:
                    write(db)
                db.commit()
        return version

    def _write_press(
        self,
        conn: Connection,
        record: SessionRecord,
        dek: bytes,
        plan: StepPlan,
        values: dict[str, Any],
        more: bool,
        lease: Lease | None,
        sent: Callable[[], None] | None,
    ) -> None:
        """PostgreSQL: the step's writes as one statement (``waymark_press``).

        The version check is the server's: the function fails on a miss, and none of its
        writes stays (the chat's lock does: it is session-level, and the lease releases
        it). When nothing follows through the ORM (``more`` False), the statement is the
        transaction's last, sent with its commit; a warm step, which has sent nothing
        before it, sends it alone, as a transaction of its own (``send_committing``).
        """
        press = self._hot.press
        assert press is not None
        slots: list[str] = []
        sealed: list[bytes | None] = []
        for change in plan.answers:
            slot = crypto.slot(dek, change.name)
            slots.append(slot)
            sealed.append(None if change.drop else _seal_answer(dek, record.id, slot, change))
        params = {
            **values,
            # A warm step's lazy lease: the function takes the chat's lock first.
            "lock_key": lease.key_to_take() if lease is not None else None,
            "claim": plan.claim,
            "claim_expires": values["now"] + CLAIM_TTL,
            "slots": slots,
            "values": sealed,
            "answers_expire": record.expires_at,
        }
        try:
            with batch(conn):
                # ORM writes to follow: the transaction goes on, and commits after them.
                written = press.send(conn, params) if more else send_committing(press, conn, params)
                if sent is not None:
                    # The statement is on the wire (psycopg sends it as it is queued);
                    # what remains is the wait for its result. (A lone statement commits
                    # at the batch's end, once the hook has returned: the bot's hook only
                    # schedules a callback.)
                    _notify(sent)
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) == _VERSION_MISSED:
                # Nothing is committed: the transaction rolls back with this error.
                raise Changed(f"session {record.id} changed or expired") from None
            raise
        written.close()

    def _write_statements(
        self,
        conn: Connection,
        record: SessionRecord,
        dek: bytes,
        plan: StepPlan,
        values: dict[str, Any],
        lease: Lease | None,
        sent: Callable[[], None] | None,
    ) -> None:
        """SQLite (or a PostgreSQL driver other than psycopg 3): the writes one by one.

        The version check is the write's row count, read before the answers are written
        (an answer to a session erased meanwhile would fail its foreign key instead).
        """
        hot = self._hot
        if lease is not None:
            # A warm step's lazy lease (inert on SQLite): the lock before the writes.
            lease.hold()
        if plan.claim is not None:
            # First: a duplicate update fails here, before anything else is written.
            hot.claim.run(conn, {"key": plan.claim, "expires_at": values["now"] + CLAIM_TTL})
        if hot.write.run(conn, values) != 1:
            # Nothing is committed: the transaction rolls back with this error.
            raise Changed(f"session {record.id} changed or expired")
        for change in plan.answers:
            self._send_answer(conn, record, dek, change)
        if sent is not None:
            _notify(sent)

    def _send_answer(
        self, conn: Connection, record: SessionRecord, dek: bytes, change: AnswerChange
    ) -> None:
        """Write one kept or dropped answer of a step (``_write_statements``)."""
        name = crypto.slot(dek, change.name)
        if change.drop:
            self._hot.drop.run(conn, {"sid": record.id, "name": name})
            return
        self._hot.answer.run(
            conn,
            {
                "session_id": record.id,
                "slot": name,
                "value_ct": _seal_answer(dek, record.id, name, change),
                "expires_at": record.expires_at,
            },
        )

    def answers(self, session_id: str, *, now: datetime) -> dict[str, Any]:
        """The kept answers of a session, by name (empty if expired)."""
        with self._tx(readonly=True) as db:
            row = db.get(SessionRow, session_id)
            if row is None or row.expires_at <= now:
                return {}
            dek = self._dek(db, row.key_id, now)
            if dek is None:
                return {}
            out: dict[str, Any] = {}
            for answer in db.scalars(
                select(AnswerRow).where(
                    AnswerRow.session_id == session_id, AnswerRow.expires_at > now
                )
            ):
                item = crypto.unseal(
                    dek,
                    answer.value_ct,
                    table="answers",
                    row=f"{session_id}/{answer.slot}",
                    column="value",
                )
                out[item["name"]] = item["value"]
            return out

    # ------------------------------------------------------------------ erasure and expiry

    def erase_session(self, session_id: str) -> PurgeCounts:
        """Delete a session, its answers and its data key now."""
        with self._tx() as db:
            rows = db.execute(
                select(SessionRow.owner, SessionRow.key_id).where(SessionRow.id == session_id)
            ).all()
            counts = self._delete(db, [session_id], [row.key_id for row in rows])
        for row in rows:
            # Its plaintext and key must not outlive it in this worker's memory either
            # (dropped after the commit: a step meanwhile would have put a copy back).
            self._warm_drop(row.owner, erased=True)
        return counts

    def erase_owner(self, owner: str) -> PurgeCounts:
        """Delete everything held about one person (``/forget``)."""
        with self._changing(owner, erased=True):
            return self._erase_owner(owner)

    def _erase_owner(self, owner: str) -> PurgeCounts:
        with self._tx() as db:
            rows = db.execute(
                select(SessionRow.id, SessionRow.key_id).where(SessionRow.owner == owner)
            ).all()
            counts = self._delete(db, [r.id for r in rows], [r.key_id for r in rows])
            profile = db.get(Profile, owner)
            db.execute(delete(ChatMessage).where(ChatMessage.owner == owner))
            if profile is not None:
                key_id = profile.key_id
                db.delete(profile)
                db.flush()
                db.execute(delete(DataKey).where(DataKey.id == key_id))
                counts += PurgeCounts(data_keys=1)
            return counts

    def sessions_of(self, owner: str, *, now: datetime) -> list[SessionRecord]:
        """Every unexpired session of an owner, newest first."""
        with self._tx(readonly=True) as db:
            rows = db.connection().execute(_SESSIONS_OF, {"owner": owner, "now": now})
            return [self._record(row)[0] for row in rows]

    def _delete(self, db: Session, session_ids: list[str], key_ids: list[str]) -> PurgeCounts:
        if not session_ids and not key_ids:
            return PurgeCounts()
        # Children first: the explicit order works with or without ON DELETE CASCADE support.
        answers = db.execute(delete(AnswerRow).where(AnswerRow.session_id.in_(session_ids)))
        sessions = db.execute(delete(SessionRow).where(SessionRow.id.in_(session_ids)))
        keys = db.execute(delete(DataKey).where(DataKey.id.in_(key_ids)))
        return PurgeCounts(answers.rowcount, sessions.rowcount, keys.rowcount)  # type: ignore[attr-defined]

    def purge(
        self, *, now: datetime, batch: int = 500, pause: float = 0.02, batch_time: float = 0.01
    ) -> PurgeCounts:
        """Delete expired answers, sessions and data keys, in batches; idempotent.

        Each batch is its own short transaction followed by a short pause, so a purge of
        millions of rows never holds the write lock for long: SQLite has one writer at a time
        and its busy handler polls, so without the pause back-to-back batches would starve
        the conversations waiting to write.

        Batches of sessions and of answers size themselves to take about ``batch_time``
        each (at most ``batch`` rows): a fixed size is either so small on a fast database
        that the pauses make up most of the purge, or so large on a slow or busy one that a
        batch keeps a conversation waiting.
        """
        postgres = self.engine.dialect.name == "postgresql"
        self.sweep_warm(now=now)
        # Sessions first, each batch with its answers and data keys: deleting answers on
        # their own first would cost a second pass over them (on PostgreSQL every session
        # deleted afterwards still makes its cascade look through its answers' dead rows).
        total = self._purge_batches(
            lambda db, n: self._purge_sessions(db, now, n, postgres=postgres),
            batch=batch,
            pause=pause,
            batch_time=batch_time,
            postgres=postgres,
            pause_first=False,
        )
        # Answers expire with their session, so normally none is left here; this catches
        # any that expired on their own.
        total += self._purge_batches(
            lambda db, n: self._purge_answers(db, now, n, postgres=postgres),
            batch=batch,
            pause=pause,
            batch_time=batch_time,
            postgres=postgres,
        )
        with self._tx(background=True) as db:
            db.execute(delete(ProcessedUpdate).where(ProcessedUpdate.expires_at <= now))
            db.execute(delete(ChatMessage).where(ChatMessage.expires_at <= now))
        while True:
            self._yield_to_writers(pause)
            with self._tx(background=True) as db:
                owners = list(
                    db.scalars(select(Profile.owner).where(Profile.expires_at <= now).limit(batch))
                )
                if not owners:
                    break
                keys = list(db.scalars(select(Profile.key_id).where(Profile.owner.in_(owners))))
                db.execute(delete(ChatMessage).where(ChatMessage.owner.in_(owners)))
                db.execute(delete(Profile).where(Profile.owner.in_(owners)))
                result = db.execute(delete(DataKey).where(DataKey.id.in_(keys)))
                total += PurgeCounts(data_keys=result.rowcount)  # type: ignore[attr-defined]
        while True:
            with self._tx(background=True) as db:
                # Keys whose owner row is gone or which expired on their own.
                key_ids = list(
                    db.scalars(select(DataKey.id).where(DataKey.expires_at <= now).limit(batch))
                )
                if not key_ids:
                    break
                result = db.execute(delete(DataKey).where(DataKey.id.in_(key_ids)))
                total += PurgeCounts(data_keys=result.rowcount)  # type: ignore[attr-defined]
        return total

    def _purge_batches(
        self,
        step: Callable[[Session, int], tuple[int, PurgeCounts]],
        *,
        batch: int,
        pause: float,
        batch_time: float,
        postgres: bool,
        pause_first: bool = True,
        first: int = 16,
    ) -> PurgeCounts:
        """Run ``step(db, size)`` in transactions until it picks fewer rows than ``size``.

        The size starts small and then follows the time each batch took, at most halving or
        doubling at a time, so that one batch slowed down by a busy machine does not swing it.
        """
        total = PurgeCounts()
        size = max(1, min(batch, first))
        wait = pause_first
        while True:
            if wait:
                self._yield_to_writers(pause)
            wait = True
            with self._tx(background=True) as db:
                # Begin first (BEGIN IMMEDIATE on SQLite waits for the write lock), so that
                # the clock measures how long the batch holds it, not how long it queued.
                conn = db.connection()
                started = time.monotonic()
                if postgres:
                    conn.execute(purge_sql.PG_BATCH_SETTINGS)
                picked, counts = step(db, size)
            took = time.monotonic() - started
            total += counts
            if picked < size:
                return total
            factor = min(2.0, max(0.5, batch_time / max(took, 1e-6)))
            size = max(1, min(batch, round(size * factor)))

    def _purge_sessions(
        self, db: Session, now: datetime, n: int, *, postgres: bool
    ) -> tuple[int, PurgeCounts]:
        """Delete the ``n`` oldest expired sessions with their answers and data keys."""
        conn = db.connection()
        if postgres:
            picked, answers, sessions, keys = conn.execute(
                purge_sql.PG_SESSIONS, {"now": now, "n": n}
            ).one()
            return picked, PurgeCounts(answers, sessions, keys)
        rows = conn.execute(purge_sql.EXPIRED_SESSIONS, {"now": now, "n": n}).all()
        if not rows:
            return 0, PurgeCounts()
        ids = [row.id for row in rows]
        return len(rows), PurgeCounts(
            conn.execute(purge_sql.DELETE_ANSWERS_OF, {"ids": ids}).rowcount,
            conn.execute(purge_sql.DELETE_SESSIONS, {"ids": ids}).rowcount,
            conn.execute(purge_sql.DELETE_KEYS, {"ids": [row.key_id for row in rows]}).rowcount,
        )

    def _purge_answers(
        self, db: Session, now: datetime, n: int, *, postgres: bool
    ) -> tuple[int, PurgeCounts]:
        """Delete the ``n`` oldest expired answers."""
        conn = db.connection()
        if postgres:
            picked, answers = conn.execute(purge_sql.PG_ANSWERS, {"now": now, "n": n}).one()
            return picked, PurgeCounts(answers=answers)
        deleted = conn.execute(purge_sql.DELETE_EXPIRED_ANSWERS, {"now": now, "n": n}).rowcount
        return deleted, PurgeCounts(answers=deleted)

    def count_expired(self, *, now: datetime) -> int:
        """Rows waiting for the purge (for the log and the tests)."""
        with self._tx() as db:
            return sum(
                db.scalar(select(func.count()).select_from(model).where(model.expires_at <= now))
                or 0
                for model in (AnswerRow, SessionRow, DataKey)
            )

    # ------------------------------------------------------------------ key rotation

    def rewrap_keys(self, *, batch: int = 500) -> int:
        """Rewrap every data key not under the active KEK (after ``KeyRing.add_kek``).

        Returns:
            How many data keys were rewrapped.
        """
        done = 0
        active = self.keys.active
        while True:
            with self._tx() as db:
                rows = list(
                    db.scalars(select(DataKey).where(DataKey.kek_id != active).limit(batch))
                )
                if not rows:
                    return done
                for row in rows:
                    dek = self.keys.unwrap(row.wrapped, row.id, row.kek_id)
                    row.wrapped = self.keys.wrap(dek, row.id, active)
                    row.kek_id = active
                done += len(rows)

    # ------------------------------------------------------------------ flow snapshots

    def pin_flow(self, flow_id: str, version: int, digest: str, body: str, *, now: datetime) -> str:
        """Record the content of a flow version once; return the digest stored for it.

        A different digest for an existing (flow, version) means the file changed without a
        version bump; the caller decides what to do (the stored one is returned).
        """
        try:
            return self._pin_flow(flow_id, version, digest, body, now)
        except Conflict:
            # Another worker pinned it at the same moment: read what it stored.
            return self._pin_flow(flow_id, version, digest, body, now)

    def _pin_flow(self, flow_id: str, version: int, digest: str, body: str, now: datetime) -> str:
        with self._tx() as db:
            row = db.get(FlowSnapshot, (flow_id, version))
            if row is None:
                # Compressed: flows are long, repetitive text (and public content, not secrets).
                packed = zlib.compress(body.encode(), 9)
                db.add(
                    FlowSnapshot(
                        flow_id=flow_id, version=version, digest=digest, body=packed, created_at=now
                    )
                )
                return digest
            return row.digest

    def flow_snapshot(self, flow_id: str, version: int) -> tuple[str, str] | None:
        """The (digest, body) pinned for a flow version, if any."""
        # Read-only: a press may need it inside its own write transaction (Store.step).
        with self._tx(readonly=True) as db:
            row = db.get(FlowSnapshot, (flow_id, version))
            return None if row is None else (row.digest, zlib.decompress(row.body).decode())

    # ------------------------------------------------------------------ exactly-once claims

    def claim(self, key: str, *, now: datetime) -> bool:
        """Claim an update key for a change that touches no session; False if seen before."""
        try:
            with self._tx() as db:
                db.add(ProcessedUpdate(key=key, expires_at=now + CLAIM_TTL))
        except Duplicate:
            return False
        return True

    # ------------------------------------------------------------------ profiles

    def profile(self, owner: str, *, now: datetime) -> dict[str, Any]:
        """An owner's profile data (empty if none or expired)."""
        with self._tx(readonly=True) as db:
            row = self._hot.profile.first(db.connection(), {"owner": owner, "now": now})
            return self._profile_read(owner, row)[0]

    def _profile_read(self, owner: str, row: Any) -> tuple[dict[str, Any], str]:
        """A profile row (``_PROFILE_READ``) decrypted, and its tag (``_PROFILE_TAG``)."""
        if row is None:
            return {}, ""
        dek = self.keys.unwrap(row.wrapped, row.key_id, row.kek_id)
        data: dict[str, Any] = crypto.unseal(
            dek, row.data_ct, table="profiles", row=owner, column="data"
        )
        return data, f"{row.key_id}:{row.version}"

    def _profile_key(self, db: Session, owner: str, now: datetime, expires_at: datetime) -> bytes:
        row = db.get(Profile, owner)
        if row is not None and row.expires_at > now:
            dek = self._dek(db, row.key_id, now)
            if dek is not None:
                row.expires_at = max(row.expires_at, expires_at)
                key_row = db.get(DataKey, row.key_id)
                if key_row is not None:
                    key_row.expires_at = max(key_row.expires_at, expires_at)
                return dek
        if row is not None:
            # Expired but not yet purged: start afresh, shredding the old key.
            old_key = row.key_id
            db.execute(delete(ChatMessage).where(ChatMessage.owner == owner))
            db.delete(row)
            db.flush()
            db.execute(delete(DataKey).where(DataKey.id == old_key))
        # A new profile (new key, versions from 1): a warm copy decided with the old one or
        # with none would fail its write.
        self._warm_drop(owner)
        key_id, dek = self._new_key(db, expires_at)
        db.add(
            Profile(
                owner=owner,
                key_id=key_id,
                data_ct=crypto.seal(dek, {}, table="profiles", row=owner, column="data"),
                version=1,
                updated_at=now,
                expires_at=expires_at,
            )
        )
        db.flush()
        return dek

    def update_profile(
        self, owner: str, changes: dict[str, Any], *, now: datetime, expires_at: datetime
    ) -> dict[str, Any]:
        """Merge ``changes`` into the profile (None deletes a key); extend its expiry."""
        # The warm copy holds the old profile (a step on it would fail its check anyway).
        with self._changing(owner), self._tx() as db:
            dek = self._profile_key(db, owner, now, expires_at)
            row = db.scalars(select(Profile).where(Profile.owner == owner).with_for_update()).one()
            data = crypto.unseal(dek, row.data_ct, table="profiles", row=owner, column="data")
            for key, value in changes.items():
                if value is None:
                    data.pop(key, None)
                else:
                    data[key] = value
            row.data_ct = crypto.seal(dek, data, table="profiles", row=owner, column="data")
            row.version += 1
            row.updated_at = now
            result: dict[str, Any] = data
            return result

    # ------------------------------------------------------------------ chat messages

    def remember_message(
        self,
        owner: str,
        chat_id: int,
        message_id: int,
        *,
        now: datetime,
        profile_expires_at: datetime,
        delete_after: datetime | None = None,
    ) -> None:
        """Note a message of the conversation, so that it can be deleted later."""
        with self._tx() as db:
            dek = self._profile_key(db, owner, now, profile_expires_at)
            key_id = db.get(Profile, owner).key_id  # type: ignore[union-attr]
            row = ChatMessage(
                owner=owner,
                key_id=key_id,
                ref_ct=b"",
                delete_after=delete_after,
                expires_at=now + MESSAGE_TTL,
            )
            db.add(row)
            db.flush()
            row.ref_ct = crypto.seal(
                dek, [chat_id, message_id], table="chat_messages", row=str(row.id), column="ref"
            )

    def _refs(self, db: Session, rows: Iterable[ChatMessage], now: datetime) -> list[MessageRef]:
        keys: dict[str, bytes | None] = {}
        out = []
        for row in rows:
            if row.key_id not in keys:
                keys[row.key_id] = self._dek(db, row.key_id, now)
            dek = keys[row.key_id]
            if dek is None:
                continue
            chat_id, message_id = crypto.unseal(
                dek, row.ref_ct, table="chat_messages", row=str(row.id), column="ref"
            )
            out.append(MessageRef(row.id, row.owner, int(chat_id), int(message_id)))
        return out

    def messages_of(self, owner: str, *, now: datetime) -> list[MessageRef]:
        """Every remembered, still deletable message of an owner."""
        with self._tx() as db:
            rows = db.scalars(
                select(ChatMessage).where(ChatMessage.owner == owner, ChatMessage.expires_at > now)
            ).all()
            return self._refs(db, rows, now)

    def due_messages(self, *, now: datetime, limit: int = 500) -> list[MessageRef]:
        """Messages whose scheduled deletion time has come."""
        with self._tx() as db:
            rows = db.scalars(
                select(ChatMessage)
                .where(ChatMessage.delete_after <= now, ChatMessage.expires_at > now)
                .order_by(ChatMessage.id)
                .limit(limit)
            ).all()
            return self._refs(db, rows, now)

    def schedule_deletion(self, owner: str, at: datetime | None) -> int:
        """Schedule (or, with None, keep) every remembered message of an owner."""
        with self._tx() as db:
            result = db.execute(
                update(ChatMessage).where(ChatMessage.owner == owner).values(delete_after=at)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def forget_messages(self, ids: Iterable[int]) -> None:
        """Drop message references (deleted, or no longer deletable)."""
        ids = list(ids)
        if ids:
            with self._tx() as db:
                db.execute(delete(ChatMessage).where(ChatMessage.id.in_(ids)))


@dataclass(frozen=True, slots=True)
class MessageRef:
    """A message to delete: its reference row, owner, chat and message id."""

    row_id: int
    owner: str
    chat_id: int
    message_id: int
