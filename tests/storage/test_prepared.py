"""The hot path's statements run on the driver's cursor (storage.prepared), on both databases.

What SQLAlchemy's own execution would do must still happen: values go through the column
types (aware UTC datetimes in and out), a violated key is SQLAlchemy's IntegrityError (so
a replayed update is a Duplicate), and a lost connection is discarded, not pooled.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.pool import NullPool

from storage.errors import Conflict, Duplicate
from storage.models import ProcessedUpdate
from storage.prepared import Prepared
from storage.repository import (
    _ACTIVE_FOR_UPDATE,
    _CLAIM,
    AnswerChange,
    SessionRecord,
    StepPlan,
    Store,
)
from tests.conftest import T0


@pytest.mark.parametrize("later", [T0 + timedelta(days=1, microseconds=123), T0])
def test_values_pass_through_the_column_types(engine: Engine, later: datetime) -> None:
    """A datetime is stored exactly as SQLAlchemy's own execution stores it, and reads back.

    On SQLite a timestamp is text, compared as text (``expires_at > now``): one written in
    another format (say, without the microseconds) would compare wrongly.
    """
    claim = Prepared(_CLAIM, engine.dialect)
    with engine.begin() as conn:
        assert claim.run(conn, {"key": "prepared", "expires_at": later}) == 1
        conn.execute(insert(ProcessedUpdate).values(key="core", expires_at=later))
    with engine.connect() as conn:
        stored = dict(
            conn.execute(text("SELECT key, CAST(expires_at AS TEXT) FROM processed_updates")).all()
        )
        read = conn.execute(
            select(ProcessedUpdate.expires_at).where(ProcessedUpdate.key == "prepared")
        ).scalar_one()
    assert stored["prepared"] == stored["core"]
    assert read == later and read.utcoffset() == timedelta(0)


def test_a_select_returns_named_typed_rows(store: Store) -> None:
    """The session read gives the row by column name, with its expiry as an aware datetime."""
    record = store.create_session("owner", {"n": 1}, now=T0, expires_at=T0 + timedelta(hours=1))
    active = Prepared(_ACTIVE_FOR_UPDATE, store.engine.dialect)
    with store.engine.begin() as conn:
        row = active.first(conn, {"owner": "owner", "now": T0})
        missing = active.first(conn, {"owner": "nobody", "now": T0})
        expired = active.first(conn, {"owner": "owner", "now": T0 + timedelta(hours=2)})
    assert missing is None and expired is None
    assert (row.id, row.owner, row.status, row.version) == (record.id, "owner", "active", 1)
    assert row.expires_at == T0 + timedelta(hours=1)
    assert row.expires_at.utcoffset() == timedelta(0)
    assert isinstance(row.wrapped, bytes) and row.key_id


def test_a_violated_key_is_sqlalchemys_integrity_error(engine: Engine) -> None:
    claim = Prepared(_CLAIM, engine.dialect)
    with engine.begin() as conn:
        claim.run(conn, {"key": "u1", "expires_at": T0})
    with pytest.raises(IntegrityError), engine.begin() as conn:
        claim.run(conn, {"key": "u1", "expires_at": T0})


def test_a_replayed_press_is_a_duplicate_and_writes_nothing(store: Store) -> None:
    """The press path (Store.step) with an update key it has seen: nothing changes."""
    store.create_session("owner", {"n": 1}, now=T0, expires_at=T0 + timedelta(hours=1))

    def decide(
        n: int,
    ) -> Any:
        def inner(
            _profile: dict[str, Any], record: SessionRecord | None
        ) -> tuple[None, StepPlan | None]:
            return None, StepPlan({"n": n}, "active", claim="u7")

        return inner

    store.step("owner", now=T0, decide=decide(2))
    with pytest.raises(Duplicate):
        store.step("owner", now=T0, decide=decide(3))
    record = store.active_session("owner", now=T0)
    assert record is not None and (record.state, record.version) == ({"n": 2}, 2)


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_lost_connection_is_invalidated_not_pooled(engine: Engine) -> None:
    """The server ends the session mid-transaction: the error says so and the pool drops it."""
    claim = Prepared(_CLAIM, engine.dialect)
    killer = create_engine(engine.url, poolclass=NullPool)
    conn = engine.connect()
    try:
        conn.begin()
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with killer.begin() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DBAPIError) as caught:
            claim.run(conn, {"key": "u1", "expires_at": T0})
        assert caught.value.connection_invalidated
        assert conn.invalidated
    finally:
        conn.close()
        killer.dispose()
    # The pool hands out a live connection afterwards.
    with engine.begin() as fresh:
        assert claim.run(fresh, {"key": "u2", "expires_at": T0}) == 1


def test_a_write_that_misses_its_version_is_a_conflict_and_rolls_back(store: Store) -> None:
    """The writes go out together (one round trip on PostgreSQL, one statement); a missed
    version check undoes them all, claim and answer included."""
    record = store.create_session("owner", {"n": 1}, now=T0, expires_at=T0 + timedelta(hours=1))
    with store.engine.connect() as conn:
        row = Prepared(_ACTIVE_FOR_UPDATE, store.engine.dialect).first(
            conn, {"owner": "owner", "now": T0}
        )
    _, dek = store._record(row)
    moved_on = dataclasses.replace(record, version=record.version + 5)
    plan = StepPlan({"n": 2}, "active", [AnswerChange("q1", "yes")], claim="u9")
    with pytest.raises(Conflict), store._core_tx() as conn:
        store._write_step(conn, moved_on, dek, plan, T0)
    again = store.active_session("owner", now=T0)
    assert again is not None and (again.state, again.version) == ({"n": 1}, 1)
    assert store.answers(record.id, now=T0) == {}
    with store.engine.connect() as conn:
        assert conn.execute(select(ProcessedUpdate.key)).all() == []


def _step_with(store: Store, changes: list[AnswerChange], claim: str | None = None) -> None:
    def decide(
        _profile: dict[str, Any], record: SessionRecord | None
    ) -> tuple[None, StepPlan | None]:
        assert record is not None
        return None, StepPlan({"n": record.version}, "active", changes, claim)

    store.step("owner", now=T0, decide=decide)


def test_a_step_s_claim_and_answers_are_written_with_it(store: Store) -> None:
    """Kept and dropped answers of one step, with its claim: all are written, and a replay
    of the claim writes none of them."""
    record = store.create_session("owner", {"n": 1}, now=T0, expires_at=T0 + timedelta(hours=1))
    _step_with(store, [AnswerChange("q1", "yes"), AnswerChange("q2", [1, 2])])
    _step_with(store, [AnswerChange("q1", drop=True), AnswerChange("q3", 3)], claim="u1")
    assert store.answers(record.id, now=T0) == {"q2": [1, 2], "q3": 3}
    with pytest.raises(Duplicate):
        _step_with(store, [AnswerChange("q2", drop=True), AnswerChange("q4", 4)], claim="u1")
    assert store.answers(record.id, now=T0) == {"q2": [1, 2], "q3": 3}
    again = store.active_session("owner", now=T0)
    assert again is not None and again.version == 3


@pytest.mark.parametrize(
    ("changes", "kept"),
    [
        # One slot twice in one step: the changes apply in order. (Were they parts of one
        # statement, as data-modifying CTEs, all would see the row as before the step.)
        ([AnswerChange("q1", drop=True), AnswerChange("q1", "again")], {"q1": "again"}),
        ([AnswerChange("q1", "new"), AnswerChange("q1", drop=True)], {}),
        ([AnswerChange("q1", "a"), AnswerChange("q1", "b")], {"q1": "b"}),
        # Several slots, each changed more than once, interleaved.
        (
            [
                AnswerChange("q1", "a"),
                AnswerChange("q2", "x"),
                AnswerChange("q1", drop=True),
                AnswerChange("q2", "y"),
                AnswerChange("q1", "c"),
            ],
            {"q1": "c", "q2": "y"},
        ),
        # Many changes in one step: all of them apply.
        ([AnswerChange(f"q{n}", n) for n in range(7)], {f"q{n}": n for n in range(7)}),
    ],
)
def test_a_step_s_answer_changes_apply_in_the_order_given(
    store: Store, changes: list[AnswerChange], kept: dict[str, Any]
) -> None:
    """A step's answer changes apply in the order given, and all of them apply."""
    record = store.create_session("owner", {"n": 1}, now=T0, expires_at=T0 + timedelta(hours=1))
    _step_with(store, [AnswerChange("q1", "old")])
    _step_with(store, changes, claim="u2")
    assert store.answers(record.id, now=T0) == kept
