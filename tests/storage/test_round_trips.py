"""PostgreSQL round trips on a button press's path, counted on the wire.

A loopback relay sits between the driver and the server and counts the times the client
sends after having last received: each is a round trip the client waited for. A press's
transaction is one when the worker has the session warm (one statement, ``waymark_press``,
with the lock and the writes, alone) and two when it reads first (BEGIN, the lock and the
reads; then the writes and COMMIT), a checkout
from the pool none (no pre-ping), and a pooled connection the server has ended is replaced
at checkout without an error reaching the caller.
"""

from __future__ import annotations

import os
import resource
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import Engine, create_engine, event, func, text
from sqlalchemy import select as sql_select
from sqlalchemy.pool import NullPool

from storage.crypto import KeyRing
from storage.db import make_engine, migrate, readable
from storage.errors import DatabaseUnavailable
from storage.locks import lease
from storage.prepared import Prepared, batch, queue_commit, send_committing, transaction
from storage.repository import AnswerChange, SessionRecord, StepPlan, Store
from tests.conftest import T0


class Relay:
    """A TCP relay on loopback to one server, counting each connection's round trips."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._last: dict[int, str] = {}
        self._trips = 0
        self._closing = False
        self._generation = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def forget(self) -> None:
        """Forget every open flow, as a NAT or load balancer does after an idle timeout:
        nothing is said to either side, and the client's next send is answered with a
        reset."""
        self._generation += 1

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._target)
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        key = client.fileno()
        generation = self._generation
        with client, server:
            while True:
                ready, _, _ = select.select([client, server], [], [], 0.05)
                for side in ready:
                    if side is client and generation != self._generation:
                        # A forgotten flow: reset the client, drop the server's side.
                        client.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        return
                    data = side.recv(65536)
                    if not data:
                        return
                    (server if side is client else client).sendall(data)
                    direction = "client" if side is client else "server"
                    with self._lock:
                        if direction == "client" and self._last.get(key) != "client":
                            self._trips += 1
                        self._last[key] = direction

    def trips(self) -> int:
        """Round trips since the last call (after letting bytes in flight arrive)."""
        time.sleep(0.05)
        with self._lock:
            trips, self._trips = self._trips, 0
        return trips

    def close(self) -> None:
        self._closing = True
        self._listener.close()


def _through(relay: Relay, pg_url: str) -> str:
    parts = urlsplit(pg_url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{relay.port}" if userinfo else f"127.0.0.1:{relay.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
def relay(pg_url: str) -> Iterator[Relay]:
    """A relay to the test server."""
    parts = urlsplit(pg_url)
    relay = Relay(parts.hostname or "127.0.0.1", parts.port or 5432)
    yield relay
    relay.close()


@pytest.fixture
def relayed(pg_url: str, relay: Relay) -> Iterator[tuple[Engine, Relay]]:
    """A migrated engine on the test schema whose every connection goes through a relay."""
    engine = make_engine(_through(relay, pg_url))
    migrate(engine)
    yield engine, relay
    engine.dispose()


def _plan(n: int) -> Any:
    def decide(_profile: dict[str, Any], record: SessionRecord | None) -> tuple[None, StepPlan]:
        assert record is not None
        return None, StepPlan({"n": n}, "active", [AnswerChange("q1", f"a{n}")], claim=f"u{n}")

    return decide


def _after_one_press(engine: Engine) -> Store:
    """A store with one session, answered once (version 2) through a lease."""
    store = Store(engine, KeyRing.generate())
    store.create_session("owner", {"n": 1}, now=T0, expires_at=T0 + timedelta(hours=1))
    held = lease(engine, "chat:1", lazy=True)
    store.step("owner", now=T0, decide=_plan(2), lease=held)
    held.release()
    return store


@pytest.mark.postgres
def test_a_press_is_one_round_trip_on_a_warm_session_two_on_a_cold_one_a_checkout_none(
    relayed: tuple[Engine, Relay],
) -> None:
    engine, relay = relayed
    # Warm the pool: one connection that has been used (a fresh one is never pinged).
    store = _after_one_press(engine)
    relay.trips()
    for n in range(3, 6):
        held = lease(engine, "chat:1", lazy=True)
        assert relay.trips() == 0, "a checkout went to the server"
        store.step("owner", now=T0, decide=_plan(n), lease=held)
        assert relay.trips() == 1, "a press on the warm session is not one round trip"
        held.release()
        relay.trips()
    # Another worker's store has no warm copy: it reads first.
    other = Store(engine, store.keys)
    held = lease(engine, "chat:1", lazy=True)
    other.step("owner", now=T0, decide=_plan(6), lease=held)
    assert relay.trips() == 2, "a press on a cold session is not two round trips"
    held.release()
    record = store.active_session("owner", now=T0)
    assert record is not None and (record.state, record.version) == ({"n": 6}, 6)
    assert store.answers(record.id, now=T0) == {"q1": "a6"}


@pytest.mark.postgres
def test_a_pooled_connection_the_server_ended_is_replaced_at_checkout(pg_url: str) -> None:
    engine = make_engine(pg_url)
    killer = create_engine(pg_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            first = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        # Back in the pool, idle; the server ends its session (as a restart would) and
        # waits until the backend has gone.
        with killer.begin() as other:
            assert other.execute(
                text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": first}
            ).scalar_one()
        with engine.connect() as conn:
            second = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert second != first
    finally:
        engine.dispose()
        killer.dispose()


def test_the_liveness_check_takes_sockets_numbered_past_select_s_limit() -> None:
    """A busy worker's database sockets can be numbered 1024 or more, which ``select``
    refuses: the check must still tell an idle socket from one the peer wrote to or
    closed (else every checkout would discard a healthy connection)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2100:
        pytest.skip(f"the file limit ({hard}) does not reach past 1024")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2100), hard))
    ours, peer = socket.socketpair()
    high = os.dup2(ours.fileno(), 2050)
    try:
        assert not readable(high)
        peer.send(b"E")  # the server's termination notice, say
        assert readable(high)
        ours.recv(1)
        peer.close()  # end of file
        assert readable(high)
    finally:
        os.close(high)
        ours.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.postgres
@pytest.mark.parametrize("ping_idle_after", [0.2, 3600.0])
def test_a_connection_idle_for_long_is_pinged_so_a_silently_dead_one_is_replaced(
    pg_url: str, relay: Relay, ping_idle_after: float
) -> None:
    """A flow a NAT or load balancer forgot says nothing until the client sends: only a
    ping finds it. A connection idle for longer than ``ping_idle_after`` gets one."""
    engine = make_engine(_through(relay, pg_url), ping_idle_after=ping_idle_after)
    try:
        migrate(engine)
        store = _after_one_press(engine)
        relay.forget()
        time.sleep(0.4)
        held = lease(engine, "chat:1", lazy=True)
        try:
            if ping_idle_after < 0.4:
                store.step("owner", now=T0, decide=_plan(3), lease=held)
            else:
                # Without the ping (not idle long enough), the press meets the dead flow.
                with pytest.raises(DatabaseUnavailable):
                    store.step("owner", now=T0, decide=_plan(3), lease=held)
        finally:
            held.release()
        record = store.active_session("owner", now=T0)
        assert record is not None
        assert record.version == (3 if ping_idle_after < 0.4 else 2)
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("when", ["before the press", "between its two batches"])
def test_a_press_whose_connection_died_opens_no_other_one(pg_url: str, when: str) -> None:
    """The server ends the press's connection: the press fails as unavailable, and neither
    its transaction's clean-up nor the lease's release checks out a new connection (which
    would wait for a server that may be the very thing that failed, and unlock there a
    lock it never held)."""
    engine = make_engine(pg_url)
    killer = create_engine(pg_url, poolclass=NullPool)
    opened: list[int] = []
    event.listen(engine, "connect", lambda *_: opened.append(1))
    try:
        migrate(engine)
        store = Store(engine, KeyRing.generate())
        store.create_session("owner", {"n": 1}, now=T0, expires_at=T0 + timedelta(hours=1))
        held = lease(engine, "chat:1", lazy=True)
        assert held.connection is not None
        pid = held.connection.connection.driver_connection.info.backend_pid  # type: ignore[union-attr]

        def kill() -> None:
            with killer.begin() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})

        def decide(profile: dict[str, Any], record: SessionRecord | None) -> Any:
            if when == "between its two batches":
                kill()  # the lock is held by now; the writes meet the dead connection
            return _plan(2)(profile, record)

        if when == "before the press":
            kill()
        before = len(opened)
        with pytest.raises(DatabaseUnavailable):
            store.step("owner", now=T0, decide=decide, lease=held)
        held.release()
        assert len(opened) == before
        # The pool then serves a live connection, and the session is as it was.
        record = store.active_session("owner", now=T0)
        assert record is not None and record.version == 1
    finally:
        engine.dispose()
        killer.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("isolation", "expected"), [(None, "read committed"), ("SERIALIZABLE", "serializable")]
)
def test_the_explicit_begin_keeps_the_engine_s_isolation_level(
    pg_url: str, isolation: str | None, expected: str
) -> None:
    engine = make_engine(pg_url, **({"isolation_level": isolation} if isolation else {}))
    setting = Prepared(sql_select(func.current_setting("transaction_isolation")), engine.dialect)
    try:
        with engine.connect() as conn, transaction(conn):
            assert setting.first(conn, {})[0] == expected
            assert conn.connection.driver_connection.pgconn.transaction_status != 0  # type: ignore[union-attr]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_nothing_may_follow_a_queued_commit(pg_url: str) -> None:
    """After ``queue_commit`` the server is out of the transaction: a later statement would
    run in autocommit, so it is refused."""
    engine = make_engine(pg_url)
    one = Prepared(sql_select(func.now()), engine.dialect)
    try:
        with engine.connect() as conn, transaction(conn):
            with batch(conn):
                one.send(conn, {}).close()
                assert queue_commit(conn)
            with pytest.raises(RuntimeError, match="committed"):
                one.send(conn, {})
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("first", [False, True], ids=["alone", "after another"])
def test_the_last_statement_goes_alone_or_with_commit(
    pg_url: str, tmp_path: Path, first: bool
) -> None:
    """``send_committing``: a transaction's only statement goes without BEGIN and COMMIT (the
    server runs it as a transaction of its own); after another one, with COMMIT. Either way
    the transaction is over and nothing may follow. Read off libpq's protocol trace."""
    engine = make_engine(pg_url)
    one = Prepared(sql_select(func.now()), engine.dialect)
    trace = tmp_path / "trace"
    try:
        with engine.connect() as conn:
            pgconn = conn.connection.driver_connection.pgconn  # type: ignore[union-attr]
            with trace.open("w") as out:
                pgconn.trace(out.fileno())
                with transaction(conn):
                    with batch(conn):
                        if first:
                            one.send(conn, {}).close()
                        send_committing(one, conn, {}).close()
                    assert pgconn.transaction_status == 0  # idle: committed
                    with pytest.raises(RuntimeError, match="committed"):
                        one.send(conn, {})
                pgconn.untrace()
    finally:
        engine.dispose()
    sent = [line for line in trace.read_text().splitlines() if "\tF\t" in line]
    words = " ".join(sent)
    assert "now()" in words
    assert ("BEGIN" in words) is first
    assert ("COMMIT" in words) is first
