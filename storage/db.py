"""Engines and schema migrations, for SQLite (the default) and PostgreSQL.

SQLite is set up for a bot that reads then writes: WAL (readers never block the writer),
``BEGIN IMMEDIATE`` for every write transaction (the write lock is taken up front, so two
read-then-write transactions cannot deadlock on lock upgrade), ``secure_delete=FAST``
(deleted rows are zeroed in their pages) and foreign keys.
"""

from __future__ import annotations

import select
import time
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from psycopg.pq import ConnStatus
from sqlalchemy import Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.exc import (
    DisconnectionError,
    InvalidatePoolError,
    OperationalError,
    SQLAlchemyError,
)

from storage.errors import DatabaseUnavailable

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: A pooled connection idle for longer than this is pinged at checkout (``make_engine``).
PING_IDLE_AFTER = 30.0
_IDLE_SINCE = "waymark_idle_since"


def make_engine(url: str, *, ping_idle_after: float = PING_IDLE_AFTER, **kwargs: Any) -> Engine:
    """Create an engine with Waymark's connection settings.

    Args:
        url: A SQLAlchemy URL (``sqlite:///path`` or ``postgresql+psycopg://…``).
        ping_idle_after: PostgreSQL (psycopg): seconds a pooled connection may have been
            idle before a checkout pings it (one round trip); below that, a check without
            a round trip (``idle_and_open``).
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
    if make_url(url).get_driver_name() != "psycopg":
        # Another driver (psycopg2, pg8000): SQLAlchemy's pre-ping, as before.
        return create_engine(url, pool_pre_ping=True, **kwargs)
    engine = create_engine(url, **kwargs)
    _postgres_setup(engine, ping_idle_after)
    return engine


def _postgres_setup(engine: Engine, ping_idle_after: float) -> None:
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        # Instead of SQLAlchemy's pre-ping, which spends a round trip to the server on every
        # checkout (one of the five a button press used to make): a pooled connection is
        # idle, so the server has nothing to say on it unless it ended the session (a
        # restart, an administrator's pg_terminate_backend, a crash). Then its socket is
        # readable (the termination notice, or end of file) and the connection is
        # discarded; SQLAlchemy's pool opens a fresh one in its place (its documented
        # "pessimistic" disconnect handling by a checkout event).
        if not idle_and_open(dbapi_connection):
            raise DisconnectionError("the server ended this pooled connection")
        # A connection can also die without a word: the server's host rebooted, or a NAT or
        # load balancer forgot the idle flow (the client learns it only when it sends). That
        # takes time, so a connection idle for long is pinged, as pre-ping would; a busy
        # bot's connections are back in use within milliseconds and are not.
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is not None and time.monotonic() - idle_since > ping_idle_after:
            try:
                engine.dialect.do_ping(dbapi_connection)
            except psycopg.Error as exc:
                # As pre-ping does: the others that waited as long are suspect too.
                raise InvalidatePoolError(f"a ping failed: {type(exc).__name__}") from None


def idle_and_open(dbapi_connection: Any) -> bool:
    """Whether a pooled psycopg connection is open and the server has sent nothing on it.

    No round trip: it looks at libpq's status and polls the socket without waiting. A
    connection that cannot be checked counts as not open.
    """
    pgconn = dbapi_connection.pgconn
    if dbapi_connection.closed or pgconn.status != ConnStatus.OK:
        return False
    try:
        return not readable(pgconn.socket)
    except (OSError, ValueError, psycopg.OperationalError):
        return False


def readable(fd: int) -> bool:
    """Whether a socket has something to read (or has been closed), without waiting.

    ``poll`` where the platform has it: ``select`` cannot take a descriptor numbered 1024
    or more, which a busy worker's database sockets can be (httpcore checks its pooled
    connections the same way, for the same reason).
    """
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    ready, _, _ = select.select([fd], [], [], 0)  # platforms without poll
    return bool(ready)


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
