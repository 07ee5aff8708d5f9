"""The storage contract, run on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text, update

from storage.crypto import KeyRing
from storage.errors import Conflict, DecryptionFailed, WrongKey
from storage.models import AnswerRow, DataKey, SessionRow
from storage.repository import AnswerChange, Store
from tests.conftest import T0

LATER = T0 + timedelta(hours=1)


def _session(store: Store, owner: str = "owner-a", ttl: int = 3600) -> str:
    record = store.create_session(
        owner, {"step": "q1"}, now=T0, expires_at=T0 + timedelta(seconds=ttl)
    )
    return record.id


def test_round_trip_state_and_answers(store: Store) -> None:
    """A saved state and its answers read back exactly, bumping the version."""
    sid = _session(store)
    version = store.save(
        sid,
        {"step": "q2"},
        expected_version=1,
        status="active",
        now=T0,
        answers=[AnswerChange("q1", "yes"), AnswerChange("note", "free words")],
    )
    assert version == 2
    record = store.active_session("owner-a", now=T0)
    assert record is not None
    assert (record.id, record.version, record.state) == (sid, 2, {"step": "q2"})
    assert store.answers(sid, now=T0) == {"q1": "yes", "note": "free words"}


def test_answer_can_be_replaced_and_dropped(store: Store) -> None:
    """Answering again replaces the row; a drop (Back) deletes it."""
    sid = _session(store)
    store.save(
        sid, {}, expected_version=1, status="active", now=T0, answers=[AnswerChange("q1", "yes")]
    )
    store.save(
        sid, {}, expected_version=2, status="active", now=T0, answers=[AnswerChange("q1", "no")]
    )
    assert store.answers(sid, now=T0) == {"q1": "no"}
    store.save(
        sid,
        {},
        expected_version=3,
        status="active",
        now=T0,
        answers=[AnswerChange("q1", drop=True)],
    )
    assert store.answers(sid, now=T0) == {}


def test_stale_version_is_a_conflict_and_writes_nothing(store: Store) -> None:
    """Optimistic locking: a save with an old version fails and changes nothing."""
    sid = _session(store)
    store.save(sid, {"n": 1}, expected_version=1, status="active", now=T0)
    with pytest.raises(Conflict):
        store.save(
            sid,
            {"n": 99},
            expected_version=1,
            status="active",
            now=T0,
            answers=[AnswerChange("x", 1)],
        )
    record = store.get_session(sid, now=T0)
    assert record is not None and record.state == {"n": 1}
    assert store.answers(sid, now=T0) == {}


def test_new_session_ends_the_previous_one(store: Store) -> None:
    """One open flow per person: starting another ends the first."""
    first = _session(store)
    second = _session(store)
    active = store.active_session("owner-a", now=T0)
    assert active is not None and active.id == second
    old = store.get_session(first, now=T0)
    assert old is not None and old.status == "ended"


def test_expired_rows_are_invisible_before_the_purge(store: Store) -> None:
    """Past expires_at nothing is returned, though the rows still exist."""
    sid = _session(store, ttl=60)
    store.save(
        sid, {}, expected_version=1, status="active", now=T0, answers=[AnswerChange("q1", "yes")]
    )
    after = T0 + timedelta(seconds=61)
    assert store.active_session("owner-a", now=after) is None
    assert store.get_session(sid, now=after) is None
    assert store.answers(sid, now=after) == {}
    assert store.count_expired(now=after) == 3  # answer, session, data key
    with pytest.raises(Conflict):
        store.save(sid, {}, expected_version=2, status="active", now=after)


def test_purge_removes_rows_and_keys_in_batches_idempotently(store: Store) -> None:
    """Purge deletes expired answers, sessions and data keys; a second purge finds nothing."""
    expired = [_session(store, owner=f"o{i}", ttl=60) for i in range(5)]
    for sid in expired:
        store.save(
            sid,
            {},
            expected_version=1,
            status="active",
            now=T0,
            answers=[AnswerChange("a", 1), AnswerChange("b", 2)],
        )
    keep = _session(store, owner="keeper", ttl=86400)
    counts = store.purge(now=T0 + timedelta(seconds=61), batch=2)
    assert (counts.answers, counts.sessions, counts.data_keys) == (10, 5, 5)
    assert store.purge(now=T0 + timedelta(seconds=61)).total == 0
    assert store.get_session(keep, now=T0) is not None
    with store.engine.connect() as conn:
        assert conn.execute(select(DataKey.id)).all() != []
        assert len(conn.execute(select(SessionRow.id)).all()) == 1


def test_purge_counts_every_row_whatever_the_batch_sizes(store: Store) -> None:
    """Batches that shrink to one session each still delete and count every expired row."""
    for i in range(7):
        sid = _session(store, owner=f"o{i}", ttl=60)
        store.save(
            sid,
            {},
            expected_version=1,
            status="active",
            now=T0,
            answers=[AnswerChange(f"q{n}", n) for n in range(i)],
        )
    # batch_time=0: every batch is "too slow", so the size halves down to one session.
    counts = store.purge(now=T0 + timedelta(seconds=61), batch=4, pause=0, batch_time=0)
    assert (counts.answers, counts.sessions, counts.data_keys) == (21, 7, 7)
    assert store.count_expired(now=T0 + timedelta(seconds=61)) == 0


def test_purge_removes_answers_that_expired_on_their_own(store: Store) -> None:
    """An expired answer of a live session goes; the session and its other answers stay."""
    sid = _session(store, ttl=86400)
    store.save(
        sid,
        {},
        expected_version=1,
        status="active",
        now=T0,
        answers=[AnswerChange("old", 1), AnswerChange("new", 2)],
    )
    with store.engine.begin() as conn:
        first = conn.execute(select(AnswerRow.id).order_by(AnswerRow.id)).scalars().first()
        conn.execute(update(AnswerRow).where(AnswerRow.id == first).values(expires_at=LATER))
    counts = store.purge(now=LATER + timedelta(minutes=1))
    assert (counts.answers, counts.sessions, counts.data_keys) == (1, 0, 0)
    assert store.answers(sid, now=T0) == {"new": 2}
    assert store.get_session(sid, now=T0) is not None


def test_erase_owner_removes_everything_of_that_person(store: Store) -> None:
    """/forget: all sessions, answers and keys of one owner go; others stay."""
    for _ in range(2):
        sid = _session(store, owner="leaver")
        store.save(
            sid, {}, expected_version=1, status="active", now=T0, answers=[AnswerChange("q", "yes")]
        )
    other = _session(store, owner="stayer")
    counts = store.erase_owner("leaver")
    assert (counts.sessions, counts.answers, counts.data_keys) == (2, 2, 2)
    assert store.active_session("leaver", now=T0) is None
    assert store.get_session(other, now=T0) is not None


def test_tampered_ciphertext_is_rejected(store: Store) -> None:
    """Flipping one byte of a stored state fails authentication."""
    sid = _session(store)
    with store.engine.begin() as conn:
        blob = conn.execute(select(SessionRow.state_ct).where(SessionRow.id == sid)).scalar_one()
        flipped = blob[:-1] + bytes([blob[-1] ^ 1])
        conn.execute(update(SessionRow).where(SessionRow.id == sid).values(state_ct=flipped))
    with pytest.raises(DecryptionFailed):
        store.get_session(sid, now=T0)


def test_ciphertext_moved_to_another_row_is_rejected(store: Store) -> None:
    """Associated data binds a ciphertext to its row: a copy into another row fails."""
    a = _session(store, owner="a")
    b = _session(store, owner="b")
    with store.engine.begin() as conn:
        rows = dict(conn.execute(select(SessionRow.id, SessionRow.key_id)).all())
        # Give b a's state *and* a's key: the key opens, the row binding does not.
        blob = conn.execute(select(SessionRow.state_ct).where(SessionRow.id == a)).scalar_one()
        conn.execute(
            update(SessionRow).where(SessionRow.id == b).values(state_ct=blob, key_id=rows[a])
        )
    with pytest.raises(DecryptionFailed):
        store.get_session(b, now=T0)


def test_wrong_key_ring_is_refused(store: Store) -> None:
    """Another key ring cannot open the database; the check says so."""
    _session(store)
    with pytest.raises(WrongKey):
        Store(store.engine, KeyRing.generate()).check_keys()


def test_missing_kek_after_rotation_is_refused(store: Store, keys: KeyRing) -> None:
    """A ring that lost a KEK still in use is refused before any read."""
    _session(store)
    stripped = KeyRing(keys.active, {}, keys.pseudonym_key)
    stripped.add_kek()
    with pytest.raises(WrongKey, match="lacks key"):
        Store(store.engine, stripped).check_keys()


def test_rotation_rewraps_every_data_key(store: Store, keys: KeyRing) -> None:
    """After rotation old KEKs can go: every session still opens with the new key only."""
    sids = [_session(store, owner=f"o{i}") for i in range(3)]
    old = set(keys.keks)
    keys.add_kek()
    assert store.rewrap_keys(batch=2) == 3
    for kek_id in old:
        del keys.keks[kek_id]
    fresh = Store(store.engine, KeyRing(keys.active, dict(keys.keks), keys.pseudonym_key))
    fresh.check_keys()
    for sid in sids:
        assert fresh.get_session(sid, now=T0) is not None
    with store.engine.connect() as conn:
        assert set(conn.execute(select(DataKey.kek_id)).scalars()) == {keys.active}


def test_no_plaintext_in_rows(store: Store) -> None:
    """Neither state, answer names nor values are stored in the clear."""
    sid = _session(store, owner=store.keys.pseudonym("tg", 987654321))
    store.save(
        sid,
        {"secret_state": "visible?"},
        expected_version=1,
        status="active",
        now=T0,
        answers=[AnswerChange("question_name", "a very private answer")],
    )
    with store.engine.connect() as conn:
        dump = repr(conn.execute(select(SessionRow.__table__)).all()) + repr(
            conn.execute(select(AnswerRow.__table__)).all()
        )
    for needle in ("secret_state", "visible", "question_name", "private answer", "987654321"):
        assert needle not in dump


def test_flow_snapshot_is_pinned_once(store: Store) -> None:
    """The first digest pinned for a version stays; a changed body is reported back."""
    assert store.pin_flow("f", 1, "d1", '{"a": 1}', now=T0) == "d1"
    assert store.pin_flow("f", 1, "d2", '{"a": 2}', now=T0) == "d1"
    assert store.flow_snapshot("f", 1) == ("d1", '{"a": 1}')
    assert store.flow_snapshot("f", 2) is None


def test_pseudonyms_are_keyed_and_stable() -> None:
    """The same id gives the same pseudonym under one key, another under another key."""
    ring = KeyRing.generate()
    assert ring.pseudonym("tg", 42) == ring.pseudonym("tg", 42)
    assert ring.pseudonym("tg", 42) != ring.pseudonym("tg", 43)
    assert ring.pseudonym("tg", 42) != KeyRing.generate().pseudonym("tg", 42)
    # A long id: a two-digit one turns up by chance in one pseudonym in 200 or so.
    assert "123456789" not in ring.pseudonym("tg", 123456789)


def test_sqlite_runs_in_wal_with_secure_delete(store: Store) -> None:
    """SQLite is set up as the module promises (skipped on PostgreSQL)."""
    if store.engine.dialect.name != "sqlite":
        pytest.skip("SQLite only")
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA secure_delete")).scalar() == 2  # FAST
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_purge_settings_end_with_its_transactions(store: Store) -> None:
    """The purge's commits skip the WAL flush; the next transaction's are durable again."""
    if store.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only")
    _session(store, ttl=60)
    assert store.purge(now=T0 + timedelta(seconds=61)).sessions == 1
    pool = store.engine.pool
    assert pool.checkedout() == 0
    # Every pooled connection (the purge's among them) is back to the server's defaults.
    conns = [store.engine.connect() for _ in range(pool.checkedin())]
    try:
        for conn in conns:
            assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"
            assert conn.execute(text("SHOW backend_flush_after")).scalar() == "0"
    finally:
        for conn in conns:
            conn.close()
