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

    The insert goes alone, committing itself (``storage.prepared.send_committing``), as a
    warm press's one statement does; in a tree without it, BEGIN, the insert and COMMIT
    travel together. On SQLite it is a write transaction of one insert. The statement is compiled
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
        values = {"key": key, "expires_at": T0}
        send_committing = getattr(p, "send_committing", None)
        with self._engine.connect() as conn, p.transaction(conn), p.batch(conn):
            if send_committing is not None:
                send_committing(self._claim, conn, values).close()
            else:
                self._claim.send(conn, values)
                p.queue_commit(conn)
