"""The statements of ``Store.purge``, built once.

Building statements anew for every batch, and binding hundreds of ids through the ORM, kept
the purging thread busy in Python, time taken from the conversations served by the same
process (one GIL); and the garbage it left set off the interpreter's full collections,
which stop every thread: purging a million answers that way ran 12 of them, of 60-85 ms
each, on PostgreSQL. Built once and run on the connection, the same purge sets off one
collection on PostgreSQL and about a dozen on SQLite, none of them full.

On PostgreSQL each batch is one statement that picks the batch, deletes it and counts what
went, so the ids never travel to Python and back. ``= ANY(ARRAY(SELECT …))`` rather than
``IN (SELECT …)``: the array form is always planned as index lookups, while ``IN`` can be
planned as a hash join over the whole table when the statistics are stale, as they are
right after a bulk load.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BindParameter, bindparam, delete, select, text

from storage.models import AnswerRow, DataKey, SessionRow

_NOW: BindParameter[datetime] = bindparam("now")
_N: BindParameter[int] = bindparam("n")

#: Settings of each purge transaction (``set_config(…, true)`` is ``SET LOCAL``: they end
#: with it), both for the conversations' commits, which wait for WAL flushes:
#:
#: * ``synchronous_commit`` off: a purge transaction need not wait for its commit to reach
#:   the disk, since a purge lost in a crash is simply redone (it is idempotent); the
#:   conversations' commits stay synchronous and no longer queue behind the purge's flush
#:   of every batch (measured: foreground commits up to 60-70 ms, against under 20 ms).
#: * ``backend_flush_after``: the purge dirties every page it deletes from and, with shared
#:   buffers smaller than the tables, writes many of them out itself; left to the kernel,
#:   they went to disk in bursts of 100-200 MB, and a WAL flush behind one waits (measured:
#:   foreground commits of 20-110 ms). Asking for write-back every 256 kB keeps that traffic
#:   steady (foreground commits under 10 ms).
PG_BATCH_SETTINGS = text(
    "SELECT set_config('synchronous_commit', 'off', true),"
    " set_config('backend_flush_after', '256kB', true)"
)

#: The oldest ``:n`` expired sessions with their answers and data keys. Answers are deleted
#: explicitly (not left to ON DELETE CASCADE) so that they are counted; the cascade then
#: finds nothing left. Result: sessions picked, answers, sessions and data keys deleted.
PG_SESSIONS = text(
    """
    WITH batch AS MATERIALIZED (
        SELECT id, key_id FROM sessions
        WHERE expires_at <= :now ORDER BY expires_at LIMIT :n
    ),
    gone_answers AS (
        DELETE FROM answers WHERE session_id = ANY(ARRAY(SELECT id FROM batch)) RETURNING 1
    ),
    gone_sessions AS (
        DELETE FROM sessions WHERE id = ANY(ARRAY(SELECT id FROM batch)) RETURNING key_id
    ),
    gone_keys AS (
        DELETE FROM data_keys WHERE id = ANY(ARRAY(SELECT key_id FROM gone_sessions))
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM gone_answers),
           (SELECT count(*) FROM gone_sessions), (SELECT count(*) FROM gone_keys)
    """
)

#: The oldest ``:n`` expired answers. Result: answers picked, answers deleted.
PG_ANSWERS = text(
    """
    WITH batch AS MATERIALIZED (
        SELECT id FROM answers WHERE expires_at <= :now ORDER BY expires_at LIMIT :n
    ),
    gone AS (
        DELETE FROM answers WHERE id = ANY(ARRAY(SELECT id FROM batch)) RETURNING 1
    )
    SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM gone)
    """
)

# Elsewhere (SQLite): the batch's ids are read, then its rows deleted children first, which
# works with or without ON DELETE CASCADE.
EXPIRED_SESSIONS = (
    select(SessionRow.id, SessionRow.key_id)
    .where(SessionRow.expires_at <= _NOW)
    .order_by(SessionRow.expires_at)
    .limit(_N)
)
DELETE_ANSWERS_OF = delete(AnswerRow).where(
    AnswerRow.session_id.in_(bindparam("ids", expanding=True))
)
DELETE_SESSIONS = delete(SessionRow).where(SessionRow.id.in_(bindparam("ids", expanding=True)))
DELETE_KEYS = delete(DataKey).where(DataKey.id.in_(bindparam("ids", expanding=True)))
DELETE_EXPIRED_ANSWERS = delete(AnswerRow).where(
    AnswerRow.id.in_(
        select(AnswerRow.id)
        .where(AnswerRow.expires_at <= _NOW)
        .order_by(AnswerRow.expires_at)
        .limit(_N)
        .scalar_subquery()
    )
)
