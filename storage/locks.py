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

from sqlalchemy import Connection, Engine, text


def _key(name: str) -> int:
    # A stable signed 64-bit key from a name.
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def exclusive(engine: Engine, name: str) -> Iterator[None]:
    """Hold a cross-process lock named ``name`` (blocking) for the duration of the block."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _key(name)})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _key(name)})
            conn.commit()


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
    transaction (``Store.step(lease=…)``), which saves a pool checkout and a round trip per
    update. On SQLite a lease is inert (one process; writes are already exclusive).

    Attributes:
        connection: The connection holding the lock, or None when there is no lock.
    """

    def __init__(self, connection: Connection | None, key: int | None) -> None:
        self.connection = connection
        self._key = key

    def release(self) -> None:
        """Unlock and give the connection back to the pool (idempotent)."""
        conn, self.connection = self.connection, None
        if conn is None:
            return
        try:
            if conn.in_transaction():
                conn.rollback()
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            conn.commit()
        except BaseException:
            # The pool would keep a session-level lock alive on a pooled connection:
            # discard the connection instead, which ends the database session and its lock.
            conn.invalidate()
            raise
        finally:
            conn.close()


def lease(engine: Engine, name: str) -> Lease:
    """Take the lock named ``name`` (blocking) on a connection of its own; see ``Lease``."""
    if engine.dialect.name != "postgresql":
        return Lease(None, None)
    key = _key(name)
    conn = engine.connect()
    try:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        conn.commit()
    except BaseException:
        conn.close()
        raise
    return Lease(conn, key)
