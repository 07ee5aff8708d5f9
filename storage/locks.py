"""Locks across processes: several workers on one PostgreSQL.

PostgreSQL advisory locks, held on a connection of their own for as long as a chat's update
is handled (so two workers never handle one chat at the same time) or while one worker
purges. SQLite deployments run one process, and every SQLite write transaction is already
exclusive (``BEGIN IMMEDIATE``), so these are no-ops there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from sqlalchemy import Connection, Engine, bindparam, func, select, text
from sqlalchemy.engine import Dialect

from storage.prepared import Prepared


def _key(name: str) -> int:
    # A stable signed 64-bit key from a name.
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def try_exclusive(engine: Engine, name: str) -> Iterator[bool]:
    """Try to take the lock without waiting; yields whether this process holds it."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    with engine.connect() as conn:
        got = bool(
            conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _key(name)}).scalar()
        )
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _key(name)})
                conn.commit()


class Lease:
    """A chat's cross-worker lock, and the connection that holds it.

    On PostgreSQL the lock is a session-level advisory lock, so it lives as long as its
    connection, across transactions: the same connection then carries the update's own
    transaction (``Store.step(lease=…)``), which saves a pool checkout per update. A lazy
    lease takes the lock as the first statement of that transaction (or, on a warm step,
    inside its one statement, ``waymark_press``: see ``key_to_take``), and the release runs
    in autocommit mode: a press then pays at most one extra statement for its lock and one
    for its release, not two transactions. On SQLite a lease is inert (one process; writes are
    already exclusive).

    Attributes:
        connection: The connection holding (or about to hold) the lock, or None when there
            is no lock.
    """

    def __init__(self, connection: Connection | None, key: int | None) -> None:
        self.connection = connection
        self._key = key
        self.held = connection is None

    def hold(self) -> None:
        """Take the lock inside the connection's open transaction (lazy leases).

        Inside ``prepared.batch`` the lock statement is sent with the statements after it
        and the server runs it first. The lock is session-level: it outlives the
        transaction, until ``release``. Under PostgreSQL's default READ COMMITTED each later
        statement sees what the previous holder committed, even though this transaction
        began before the lock was granted.
        """
        if self.held or self.connection is None:
            return
        # On the press's hot path: sent on the driver, like the step's own statements.
        _lock_statement(self.connection.dialect).send(self.connection, {"k": self._key})
        self.held = True

    def key_to_take(self) -> int | None:
        """The key of a lazy lease's lock not yet held, for a statement that takes it itself.

        The lock then counts as held (``release`` unlocks it): the statement that takes it
        (``waymark_press``, see ``Store.step``) is on its way. None when there is nothing to
        take: held already, or no lock (SQLite).
        """
        if self.held or self.connection is None:
            return None
        self.held = True
        return self._key

    def release(self) -> None:
        """Unlock and give the connection back to the pool (idempotent)."""
        conn, self.connection = self.connection, None
        if conn is None:
            return
        if conn.invalidated:
            # Its database session has ended, and the lock with it. (Going on would check
            # out a new connection, and unlock there a lock it never held.)
            conn.close()
            return
        try:
            if conn.in_transaction():
                conn.rollback()
            if self.held:
                _autocommit(conn, "SELECT pg_advisory_unlock(%s)", self._key)
        except BaseException:
            # The pool would keep a session-level lock alive on a pooled connection:
            # discard the connection instead, which ends the database session and its lock.
            conn.invalidate()
            raise
        finally:
            conn.close()


def lease(engine: Engine, name: str, *, lazy: bool = False) -> Lease:
    """The lock named ``name`` on a connection of its own; see ``Lease``.

    Args:
        engine: The engine.
        name: The lock's name.
        lazy: Take the lock with the first transaction on the connection (``Lease.hold``)
            instead of now.
    """
    if engine.dialect.name != "postgresql":
        return Lease(None, None)
    key = _key(name)
    conn = engine.connect()
    held = Lease(conn, key)
    if lazy:
        return held
    try:
        _autocommit(conn, "SELECT pg_advisory_lock(%s)", key)
    except BaseException:
        conn.invalidate()
        conn.close()
        raise
    held.held = True
    return held


@cache
def _lock_statement(dialect: Dialect) -> Prepared:
    return Prepared(select(func.pg_advisory_lock(bindparam("k"))), dialect)


def _autocommit(conn: Connection, sql: str, key: int | None) -> None:
    # One statement outside any transaction, straight on the driver's connection: no BEGIN
    # and COMMIT round trips around a lock call. The connection is idle here, which is
    # when psycopg allows switching autocommit.
    driver = conn.connection.driver_connection
    assert driver is not None
    driver.autocommit = True
    try:
        driver.execute(sql, (key,))
    finally:
        driver.autocommit = False
