"""Hot-path statements: written and typed by SQLAlchemy once, run on the driver's cursor.

A button press runs a few statements in one transaction. Executed through SQLAlchemy
Core, the press's session read and state write took two and a half to four times as long
on SQLite as the same statements on the driver, and 1.2 to 1.7 times as long on PostgreSQL,
where the server's own work counts too (``bench/statements.py``, docs/benchmarks.md). The
difference is per-call machinery (cache-key lookup, execution context, event dispatch,
result set-up) that a statement built once does not need.

So SQLAlchemy still does everything that needs knowledge: it writes the SQL for the
dialect, converts every value with the column types' own bind and result processors,
manages the pool and the transaction, and its exception classes and disconnect handling
apply. Only the execution call is the driver's own. Nothing here sees plaintext: the
values are ciphertext, ids and timestamps.

On PostgreSQL the statements of a press also travel together (``batch``, psycopg's
pipeline mode), with the transaction's BEGIN and COMMIT among them (``transaction``,
``queue_commit``): a press's transaction is two round trips, or one when the worker holds
the session warm (``Store.step``). Its writes are one statement (the ``waymark_press``
function), which a warm press sends alone, as a transaction of its own
(``send_committing``).
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

Processor = Callable[[Any], Any] | None


class Prepared:
    """One Core statement, compiled for one dialect.

    Args:
        statement: A Core statement whose parameters are all named ``bindparam`` objects
            (or literals, which are fixed at compile time).
        dialect: The engine's dialect.
    """

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self.sql = compiled.string
        # Each parameter by the name the SQL uses for it (anonymous ones get one at compile).
        binds = {name: bind for bind, name in compiled.bind_names.items()}
        # Literals (``status == "active"``, ``LIMIT 1``) are fixed; the rest come per call.
        self._fixed = {name: bind.value for name, bind in binds.items() if not bind.required}
        procs = {n: b.type.dialect_impl(dialect).bind_processor(dialect) for n, b in binds.items()}
        self._procs = {name: proc for name, proc in procs.items() if proc is not None}
        self._order = list(compiled.positiontup or ()) if compiled.positional else None
        columns = list(getattr(statement, "selected_columns", ()))
        # Rows by column name, like SQLAlchemy's; an unnamed column (a function) gets one.
        names = [c.key or f"column_{i}" for i, c in enumerate(columns)]
        self._row = namedtuple("_Row", names, rename=True) if columns else None
        self._results: list[Processor] = [
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
        ]

    def _args(self, params: Mapping[str, Any]) -> Any:
        values = {**self._fixed, **params}
        for name, proc in self._procs.items():
            values[name] = proc(values[name])
        if self._order is None:
            return values
        return tuple(values[name] for name in self._order)

    def send(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """Execute (or, inside ``batch``, queue) the statement; read it with ``row``/``count``."""
        args = self._args(params)
        driver = conn.connection.driver_connection
        assert driver is not None
        cursor = driver.cursor()
        with translated(conn, self.sql, args):
            info = conn.info
            if info.pop(_BEGIN_PENDING, False):
                # The transaction's BEGIN goes ahead of its first statement (``transaction``).
                driver.execute("BEGIN")
            elif _COMMITTED in info:
                # The server would run it outside any transaction, in autocommit.
                raise RuntimeError("the transaction was committed with its last batch")
            try:
                cursor.execute(self.sql, args)
            except BaseException:
                cursor.close()
                raise
        return cursor

    def row(self, conn: Connection, cursor: Any) -> Any:
        """The first row of a sent SELECT (a named tuple, by column name), or None."""
        assert self._row is not None, "not a SELECT"
        with translated(conn, self.sql, None):
            try:
                raw = cursor.fetchone()
            finally:
                cursor.close()
        if raw is None:
            return None
        return self._row(
            *(
                value if proc is None else proc(value)
                for proc, value in zip(self._results, raw, strict=True)
            )
        )

    @staticmethod
    def count(cursor: Any) -> int:
        """How many rows a sent statement changed (after its batch, if any)."""
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def first(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """Run a SELECT now and return its first row, or None."""
        return self.row(conn, self.send(conn, params))

    def run(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Run a statement that returns no rows now; return how many rows it changed."""
        return self.count(self.send(conn, params))


@contextmanager
def translated(conn: Connection, sql: str | None, args: Any) -> Iterator[None]:
    """Driver errors as SQLAlchemy's own execution reports them.

    The exception becomes SQLAlchemy's class for it (IntegrityError, OperationalError…),
    and a connection the server has lost is invalidated, so the pool discards it.
    """
    dialect = conn.dialect
    try:
        yield
    except dialect.loaded_dbapi.Error as exc:
        lost = dialect.is_disconnect(exc, conn.connection.driver_connection, None)
        if lost and not conn.invalidated:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            sql,
            args,
            exc,
            dialect.loaded_dbapi.Error,
            connection_invalidated=lost,
            dialect=dialect,
        ) from exc


#: Set on a connection (``Connection.info``) whose explicit BEGIN is still to be sent.
_BEGIN_PENDING = "waymark_begin_pending"
#: Set on a connection inside ``transaction`` on PostgreSQL: BEGIN and COMMIT are ours.
_EXPLICIT = "waymark_explicit"
#: Set once ``queue_commit`` has sent COMMIT, or ``send_committing`` a lone statement: no
#: statement may follow in the transaction.
_COMMITTED = "waymark_committed"


@contextmanager
def transaction(conn: Connection) -> Iterator[None]:
    """A transaction on ``conn`` whose BEGIN travels with its first statement.

    psycopg starts a transaction by sending BEGIN and waiting for the answer, in a round
    trip of its own, in pipeline mode too (it syncs the pipeline after it): one of the
    five round trips a button press made on PostgreSQL (tests/storage/test_round_trips.py
    counts them on the wire). Here the driver runs in autocommit mode for the
    transaction's length, so it starts none itself, and the first statement sent through
    ``Prepared.send`` is preceded by an explicit BEGIN, queued with it (inside ``batch``,
    with the whole first batch). The transaction ends as usual through SQLAlchemy, whose
    commit and rollback psycopg sends whenever a transaction is open, autocommit or not
    (or earlier, by ``queue_commit``; after ``send_committing``'s lone statement the server
    never opened one). Afterwards the connection is out of autocommit
    again, as the pool expects. Elsewhere (SQLite) this is ``conn.begin()``.

    The first statement must go through ``Prepared.send``: a statement run another way
    before it would run outside the transaction.
    """
    driver = conn.connection.driver_connection
    if not _may_begin_explicitly(driver):
        with conn.begin():
            yield
        return
    assert driver is not None
    # Kept from here on: once the connection is invalidated, ``conn.info`` would check out
    # a new one (and wait for the server, which may be the very thing that failed).
    info = conn.info
    driver.autocommit = True
    info[_BEGIN_PENDING] = info[_EXPLICIT] = True
    try:
        with conn.begin():
            yield
    finally:
        for key in (_BEGIN_PENDING, _EXPLICIT, _COMMITTED):
            info.pop(key, None)
        if not conn.invalidated and not driver.closed:
            try:
                driver.autocommit = False
            except _driver_error(conn):
                # Still in a transaction that neither committed nor rolled back: the
                # connection cannot be trusted with the next one.
                conn.invalidate()


def _may_begin_explicitly(driver: Any) -> bool:
    # psycopg 3 (pipeline mode), with the server's default transaction characteristics: a
    # plain BEGIN would drop an isolation level, read-only or deferrable setting that
    # psycopg itself would have put into its own BEGIN, so with one of those, psycopg
    # begins as usual (in a round trip of its own).
    return (
        getattr(driver, "pipeline", None) is not None
        and driver.isolation_level is None
        and driver.read_only is None
        and driver.deferrable is None
    )


def queue_commit(conn: Connection) -> bool:
    """Send the transaction's COMMIT with the statements of the current ``batch``.

    Inside ``transaction`` on PostgreSQL, COMMIT is then one more statement of the batch,
    in its one round trip, instead of a round trip of its own after it. The server runs it
    only if every statement before it succeeded: after an error it skips the rest of the
    batch, the error is raised when the batch ends, and the transaction is rolled back as
    usual. So whatever must stop the commit has to fail in SQL, not in a check made after
    the batch. The transaction's own commit then finds nothing left to do, and no statement
    may follow (``Prepared.send`` refuses one: it would run in autocommit).

    Returns:
        Whether COMMIT was sent; False elsewhere (SQLite), where the transaction commits
        as usual.
    """
    if not conn.info.get(_EXPLICIT):
        return False
    driver = conn.connection.driver_connection
    assert driver is not None
    with translated(conn, "COMMIT", None):
        driver.execute("COMMIT")
    conn.info[_COMMITTED] = True
    return True


def send_committing(statement: Prepared, conn: Connection, params: Mapping[str, Any]) -> Any:
    """Send ``statement`` as the last of its transaction, with the transaction's commit.

    Inside ``transaction`` on PostgreSQL, when nothing has been sent yet, the statement goes
    alone, without BEGIN or COMMIT: the server runs a statement sent outside a transaction
    as a transaction of its own, which commits if the statement succeeds and leaves nothing
    if it fails. Once something has been sent, COMMIT follows the statement
    (``queue_commit``). Either way no statement may follow it in the transaction, and the
    transaction's own commit finds nothing left to do. A lone statement sent inside
    ``batch`` commits at the batch's end, when psycopg sends the pipeline's Sync. Where
    ``transaction`` is a plain ``conn.begin()`` (SQLite, another driver, an engine with its
    own isolation level) the statement is sent as usual and the transaction commits as
    usual.

    Returns:
        The statement's cursor (``Prepared.send``).
    """
    info = conn.info
    if info.get(_EXPLICIT) and info.pop(_BEGIN_PENDING, False):
        # What BEGIN and COMMIT would add to a lone statement is two more statements to
        # send and run: all or nothing holds without them.
        cursor = statement.send(conn, params)
        info[_COMMITTED] = True
        return cursor
    cursor = statement.send(conn, params)
    queue_commit(conn)
    return cursor


def _driver_error(conn: Connection) -> type[Exception]:
    """The driver's base exception class."""
    return cast(type[Exception], conn.dialect.loaded_dbapi.Error)


@contextmanager
def batch(conn: Connection) -> Iterator[None]:
    """Statements sent inside go to the server together, and their results come back together.

    On PostgreSQL this is psycopg's pipeline mode: one round trip instead of one per
    statement. The server still runs them one after another, in order, each with its own
    snapshot, so a lock taken by the first is held before the next one reads. Read the
    results after the block. Elsewhere (SQLite, in-process) each statement simply runs.
    """
    driver = conn.connection.driver_connection
    pipeline = getattr(driver, "pipeline", None)
    if pipeline is None:
        yield
        return
    with translated(conn, None, None), pipeline():
        yield
