"""The chat lease: a PostgreSQL advisory lock held across the update, on its own connection.

A press takes its chat's lock as the first statement of its one transaction (a lazy lease)
and keeps it until its replies are sent; the release runs outside any transaction. These
tests watch the lock from a second connection (``try_exclusive``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from storage import locks
from storage.crypto import KeyRing
from storage.db import make_engine, migrate
from storage.errors import Duplicate
from storage.locks import lease, try_exclusive
from storage.repository import SessionRecord, StepPlan, Store
from tests.conftest import T0

NAME = "chat:test"


#: The conftest's migrated ``engine``, on PostgreSQL only (SQLite leases are inert).
on_postgres = pytest.mark.parametrize("db_url", ["postgres"], indirect=True)


def _free(engine: Engine) -> bool:
    # From another database session: a pooled connection of the same engine might be the
    # very one holding the lock, and advisory locks are re-entrant within a session.
    other = create_engine(engine.url, poolclass=NullPool)
    try:
        with try_exclusive(other, NAME) as got:
            return got
    finally:
        other.dispose()


def _touch(
    store: Store, owner: str, held: locks.Lease
) -> tuple[dict[str, Any], SessionRecord | None]:
    def decide(
        profile: dict[str, Any], record: SessionRecord | None
    ) -> tuple[tuple[dict[str, Any], SessionRecord | None], StepPlan | None]:
        plan = None if record is None else StepPlan({"n": 2}, "active", claim="u1")
        return (profile, record), plan

    return store.step(owner, now=T0, decide=decide, lease=held)


@on_postgres
def test_lazy_lease_locks_in_the_step_and_keeps_the_lock_until_released(
    engine: Engine,
) -> None:
    pg_engine = engine
    store = Store(pg_engine, KeyRing.generate())
    store.create_session("owner", {"n": 1}, now=T0, expires_at=T0 + timedelta(hours=1))
    held = lease(pg_engine, NAME, lazy=True)
    assert held.connection is not None and not held.held
    assert _free(pg_engine)  # lazy: nothing is locked before the transaction
    _, record = _touch(store, "owner", held)
    assert record is not None and record.state == {"n": 1}
    assert held.held
    assert not _free(pg_engine)  # committed, and the lock outlives the transaction
    assert store.active_session("owner", now=T0).state == {"n": 2}  # type: ignore[union-attr]
    held.release()
    assert held.connection is None
    assert _free(pg_engine)
    held.release()  # idempotent


def _warm_plan(claim: str) -> Any:
    def decide(_profile: dict[str, Any], record: SessionRecord | None) -> tuple[None, StepPlan]:
        assert record is not None and record.cached, "not decided on the warm copy"
        return None, StepPlan({"n": 3}, "active", claim=claim)

    return decide


@on_postgres
@pytest.mark.parametrize("one_statement", [True, False], ids=["waymark_press", "statements"])
def test_a_warm_step_takes_the_lock_which_outlives_a_failed_write(
    engine: Engine, one_statement: bool
) -> None:
    """On the warm copy the lock goes in ``waymark_press`` with the writes (or, on a driver
    other than psycopg 3, as the first of the step's statements): it is held after the
    step, and still held after a step whose write failed (a duplicate update), until the
    lease is released."""
    store = Store(engine, KeyRing.generate())
    if not one_statement:
        store._hot.press = None  # what another driver gets
    store.create_session("owner", {"n": 1}, now=T0, expires_at=T0 + timedelta(hours=1))
    first = lease(engine, NAME, lazy=True)
    _touch(store, "owner", first)  # a cold step (it reads first), claiming u1
    first.release()
    assert _free(engine)
    held = lease(engine, NAME, lazy=True)
    store.step("owner", now=T0, decide=_warm_plan("u2"), lease=held)
    assert held.held
    assert not _free(engine)
    held.release()
    assert _free(engine)
    again = lease(engine, NAME, lazy=True)
    with pytest.raises(Duplicate):
        store.step("owner", now=T0, decide=_warm_plan("u2"), lease=again)
    # The lock is session-level: the failed statement's rollback does not release it.
    assert not _free(engine)
    again.release()
    assert _free(engine)
    assert store.active_session("owner", now=T0).version == 3  # type: ignore[union-attr]


@on_postgres
def test_eager_lease_locks_at_once(engine: Engine) -> None:
    pg_engine = engine
    held = lease(pg_engine, NAME)
    assert held.held
    assert not _free(pg_engine)
    held.release()
    assert _free(pg_engine)
    assert pg_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


@on_postgres
def test_a_failed_unlock_discards_the_connection_so_the_lock_dies_with_it(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg_engine = engine
    held = lease(pg_engine, NAME)
    assert not _free(pg_engine)

    def broken(*_: Any) -> None:
        raise RuntimeError("network gone")

    monkeypatch.setattr(locks, "_autocommit", broken)
    with pytest.raises(RuntimeError):
        held.release()
    monkeypatch.undo()
    # Had the connection gone back to the pool, its session (and lock) would live on.
    assert _free(pg_engine)


def test_on_sqlite_a_lease_is_inert(tmp_path: Any) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    migrate(engine)
    store = Store(engine, KeyRing.generate())
    store.create_session("owner", {"n": 1}, now=T0, expires_at=T0 + timedelta(hours=1))
    held = lease(engine, NAME, lazy=True)
    assert held.connection is None and held.held
    _, record = _touch(store, "owner", held)
    assert record is not None
    assert store.active_session("owner", now=T0).state == {"n": 2}  # type: ignore[union-attr]
    held.release()
    engine.dispose()
