"""Engines and schema migrations, for SQLite (the default) and PostgreSQL.

SQLite is set up for a bot that reads then writes: WAL (readers never block the writer),
``BEGIN IMMEDIATE`` for every write transaction (the write lock is taken up front, so two
read-then-write transactions cannot deadlock on lock upgrade), ``secure_delete=FAST``
(deleted rows are zeroed in their pages) and foreign keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from storage.errors import DatabaseUnavailable

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine with Waymark's connection settings.

    Args:
        url: A SQLAlchemy URL (``sqlite:///path`` or ``postgresql+psycopg://…``).
        **kwargs: Passed to ``create_engine``.

    Returns:
        The engine.
    """
    if url.startswith("sqlite"):
        # LIFO: the connection used last is used next, so its page cache (which SQLite
        # keeps per connection, valid until another connection writes) is usually warm.
        kwargs.setdefault("pool_use_lifo", True)
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs
        )
        _sqlite_setup(engine)
        return engine
    # A worker handles many chats at once, each holding a connection for its chat lock.
    kwargs.setdefault("pool_size", 20)
    # LIFO keeps the fewest connections busy, so they stay warm (psycopg prepares a
    # statement on a connection after a few uses) and the idle rest can time out.
    kwargs.setdefault("pool_use_lifo", True)
    kwargs.setdefault("max_overflow", 40)
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL is safe against corruption and against a crash of the process
        # (a commit is in the OS before the call returns); only a power cut can lose the
        # last commits. FULL would fsync every answer and triple its cost.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # FAST zeroes deleted content within pages without extra I/O; together with
        # crypto-shredding (the data key row is deleted) purged ciphertext is unreadable.
        cursor.execute("PRAGMA secure_delete=FAST")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the lock up front; read-only transactions do not block writers.
        readonly = conn.get_execution_options().get("waymark_readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision.

    Raises:
        DatabaseUnavailable: The database cannot be reached or migrated.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                # Several workers may start at once: one migrates, the others wait and
                # then find nothing left to do.
                connection.execute(text("SELECT pg_advisory_xact_lock(7215560371)"))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except OperationalError as exc:
        raise DatabaseUnavailable(f"cannot open the database: {exc.orig}") from None


def has_schema(engine: Engine) -> bool:
    """Whether the database already holds Waymark's tables (i.e. is not fresh).

    Raises:
        DatabaseUnavailable: The database cannot be reached.
    """
    try:
        with engine.connect() as connection:
            return inspect(connection).has_table("meta")
    except SQLAlchemyError as exc:
        raise DatabaseUnavailable(f"cannot open the database: {exc}") from None
