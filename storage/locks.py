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

from sqlalchemy import Engine, text


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
