"""The least a durable button press does: one row inserted and committed, nothing read.

A bot that stores each answer before it shows the next question pays at least this write
on every press. ``press_step.py --floor`` runs it alone, and ``per_update.py``'s
"bare-durable" bot runs it on each press, so that its cost shows next to the bare bots',
which store nothing.

It runs the ``storage`` package of whichever tree is first on the path
(``press_step.py --tree``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class DurableWrite:
    """Insert one update claim and commit it: one round trip on PostgreSQL.

    BEGIN, the insert and COMMIT travel together (``storage.prepared``), as a press's
    writes do; on SQLite it is a write transaction of one insert. The statement is compiled
    here, once, before any timing, as Waymark's own are.

    Args:
        engine: A migrated engine.
    """

    def __init__(self, engine: Any) -> None:
        from storage import prepared
        from storage.repository import _CLAIM

        self._engine = engine
        self._prepared = prepared
        self._claim = prepared.Prepared(_CLAIM, engine.dialect)

    def __call__(self, key: str) -> None:
        """Write and commit the claim ``key`` (unique per call)."""
        p = self._prepared
        with self._engine.connect() as conn, p.transaction(conn), p.batch(conn):
            self._claim.send(conn, {"key": key, "expires_at": T0})
            p.queue_commit(conn)
