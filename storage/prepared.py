"""Hot-path statements: written and typed by SQLAlchemy once, run on the driver's cursor.

A button press runs five or six statements in one transaction. Through SQLAlchemy Core's
execution, the press's session read and state write took 70 and 51 µs each on SQLite, and
the same statements on the driver 22 and 12 µs; on PostgreSQL 185 and 143 µs against 117
and 90 µs (``bench/statements.py``, docs/benchmarks.md). The difference is per-call
machinery (cache-key lookup, execution context, event dispatch, result set-up) that a
statement built once does not need.

So SQLAlchemy still does everything that needs knowledge: it writes the SQL for the
dialect, converts every value with the column types' own bind and result processors,
manages the pool and the transaction, and its exception classes and disconnect handling
apply. Only the execution call is the driver's own. Nothing here sees plaintext: the
values are ciphertext, ids and timestamps.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping
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
        self._dialect = dialect
        self._error: type[Any] = dialect.loaded_dbapi.Error
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

    def _run(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        args = self._args(params)
        driver = conn.connection.driver_connection
        assert driver is not None
        cursor = driver.cursor()
        try:
            cursor.execute(self.sql, args)
        except self._error as exc:
            cursor.close()
            # As SQLAlchemy's own execution would: a lost connection is discarded, and
            # the error arrives as SQLAlchemy's exception class (IntegrityError, …).
            lost = self._dialect.is_disconnect(exc, driver, cursor)
            if lost:
                conn.invalidate(exc)
            raise DBAPIError.instance(
                self.sql,
                args,
                exc,
                self._error,
                connection_invalidated=lost,
                dialect=self._dialect,
            ) from exc
        return cursor

    def first(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """Run a SELECT and return its first row (a named tuple), or None."""
        assert self._row is not None, "not a SELECT"
        cursor = self._run(conn, params)
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

    def run(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Run a statement that returns no rows; return how many rows it changed."""
        cursor = self._run(conn, params)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()
