"""PostgreSQL round trips on a button press's path, counted on the wire.

A loopback relay sits between the driver and the server and counts the times the client
sends after having last received: each is a round trip the client waited for. A press's
transaction is two (BEGIN, the lock and the reads; then the writes and COMMIT), a checkout
from the pool none (no pre-ping), and a pooled connection the server has ended is replaced
at checkout without an error reaching the caller.
"""

from __future__ import annotations

import os
import resource
import select
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from storage.crypto import KeyRing
from storage.db import make_engine, migrate, readable
from storage.locks import lease
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
        threading.Thread(target=self._accept, daemon=True).start()

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
        with client, server:
            while True:
                ready, _, _ = select.select([client, server], [], [])
                for side in ready:
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


@pytest.fixture
def relayed(pg_url: str) -> Iterator[tuple[Engine, Relay]]:
    """A migrated engine on the test schema whose every connection goes through a relay."""
    parts = urlsplit(pg_url)
    relay = Relay(parts.hostname or "127.0.0.1", parts.port or 5432)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{relay.port}" if userinfo else f"127.0.0.1:{relay.port}"
    engine = make_engine(urlunsplit(parts._replace(netloc=netloc)))
    migrate(engine)
    yield engine, relay
    engine.dispose()
    relay.close()


def _plan(n: int) -> Any:
    def decide(_profile: dict[str, Any], record: SessionRecord | None) -> tuple[None, StepPlan]:
        assert record is not None
        return None, StepPlan({"n": n}, "active", [AnswerChange("q1", f"a{n}")], claim=f"u{n}")

    return decide


@pytest.mark.postgres
def test_a_press_is_two_round_trips_and_a_checkout_none(relayed: tuple[Engine, Relay]) -> None:
    engine, relay = relayed
    store = Store(engine, KeyRing.generate())
    store.create_session("owner", {"n": 1}, now=T0, expires_at=T0 + timedelta(hours=1))
    # Warm the pool: one connection that has been used (a fresh one is never pinged).
    held = lease(engine, "chat:1", lazy=True)
    store.step("owner", now=T0, decide=_plan(2), lease=held)
    held.release()
    relay.trips()
    for n in range(3, 6):
        held = lease(engine, "chat:1", lazy=True)
        assert relay.trips() == 0, "a checkout went to the server"
        store.step("owner", now=T0, decide=_plan(n), lease=held)
        assert relay.trips() == 2, "a press's transaction is not two round trips"
        held.release()
        relay.trips()
    record = store.active_session("owner", now=T0)
    assert record is not None and (record.state, record.version) == ({"n": 5}, 5)
    assert store.answers(record.id, now=T0) == {"q1": "a5"}


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
