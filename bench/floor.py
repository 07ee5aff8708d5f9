"""The least a durable button press does: one row inserted and committed, nothing read.

A bot that stores each answer before it shows the next question pays at least this on
every press, whatever else it does. ``press_step.py --floor`` runs it alone, and
``per_update.py``'s "bare-durable" bot runs it before each answer, so that its cost shows
next to the bare bot's, which stores nothing.

Imported lazily: it runs the ``storage`` package of whichever tree is first on the path
(``press_step.py --tree``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def durable_write(engine: Any, key: str) -> None:
    """Insert one update claim and commit it: one round trip on PostgreSQL.

    BEGIN, the insert and COMMIT travel together (``storage.prepared``), as a press's
    writes do; on SQLite it is a write transaction of one insert.
    """
    from storage.prepared import batch, queue_commit, transaction

    with engine.connect() as conn, transaction(conn), batch(conn):
        _claim(engine.dialect).send(conn, {"key": key, "expires_at": T0})
        queue_commit(conn)


@cache
def _claim(dialect: Any) -> Any:
    # Compiled once, as Waymark's own statements are.
    from storage.prepared import Prepared
    from storage.repository import _CLAIM

    return Prepared(_CLAIM, dialect)
