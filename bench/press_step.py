"""A button press's database work alone, in a loop: lock, read, decide, write, commit, unlock.

No Telegram and no event loop: ``Store.step`` with a lazy chat lease, then the lease's
release, for ``--n`` presses spread over eight sessions, on one thread (see ``--thread``).
Prints the median wall time per press and the process's CPU time per press. With ``--tree``
it runs another checkout's code (say, a ``git worktree`` of the commit before a change), so
that runs of the two, taken by turns, compare the change alone.

    .venv/bin/python bench/press_step.py [--db-url postgresql+psycopg://…] [--n 1500]
        [--tree ../wt-before] [--delay-ms 1] [--thread] [--idle-ms 2] [--floor] [--workers 2]

``--delay-ms`` puts the database behind ``bench/delay_relay.py``, which delays every byte by
that much each way: a database on another machine, where each round trip costs more. The
printed line then also gives a ``SELECT 1``'s median time through the relay.

``--thread`` runs each press on a worker thread that the main thread waits for, as the bot
runs its database work (the bot's event loop waits differently: this is the hop alone).
``--idle-ms`` leaves the process idle that long after each press, as a bot is between
updates; a back-to-back loop keeps both cores busy. ``--floor`` runs, instead of a press,
the least any durable press must do (``floor.py``): one transaction that inserts one row
and commits (BEGIN, the insert and COMMIT in one round trip on PostgreSQL).

``--workers N`` gives each of N stores on the same database (N workers, each with its own warm
sessions) the presses in turn: each session's successive presses go to the next worker, as a
round-robin proxy in front of N webhook workers would spread a chat's updates.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SESSIONS = 8


@dataclasses.dataclass(frozen=True)
class How:
    """How each press runs: ``--thread``, ``--idle-ms``, ``--floor`` and ``--workers``."""

    thread: bool = False
    idle_ms: float = 0.0
    floor: bool = False
    workers: int = 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--db-url", default=None, help="a PostgreSQL URL; SQLite if not given")
    parser.add_argument("--n", type=int, default=1500)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="PostgreSQL only")
    parser.add_argument("--thread", action="store_true")
    parser.add_argument("--idle-ms", type=float, default=0.0)
    parser.add_argument("--floor", action="store_true")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    how = How(args.thread, args.idle_ms, args.floor, args.workers)
    tree = Path(args.tree).resolve()
    sys.path.insert(0, str(tree))  # that tree's storage package
    with tempfile.TemporaryDirectory() as tmp:
        if args.db_url is None:
            run(tree, f"sqlite:///{Path(tmp) / 'bench.db'}", args.n, how)
        elif args.delay_ms > 0:
            with delayed(args.db_url, args.delay_ms) as url:
                run_on_schema(tree, url, args.n, how)
        else:
            run_on_schema(tree, args.db_url, args.n, how)


@contextlib.contextmanager
def delayed(url: str, delay_ms: float) -> Iterator[str]:
    """``url`` through a relay that delays every byte by ``delay_ms`` each way."""
    parts = urlsplit(url)
    relay = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("delay_relay.py")),
            f"--target={parts.hostname or '127.0.0.1'}:{parts.port or 5432}",
            f"--delay-ms={delay_ms}",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert relay.stdin is not None and relay.stdout is not None
    try:
        port = json.loads(relay.stdout.readline())["port"]
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
        yield urlunsplit(parts._replace(netloc=netloc))
    finally:
        relay.stdin.close()
        relay.wait(timeout=10)


def run_on_schema(tree: Path, base_url: str, n: int, how: How) -> None:
    from schemas import schema_for  # this bench folder's, not the tree's

    with schema_for(base_url) as url:
        assert url is not None
        run(tree, url, n, how)


def run(tree: Path, url: str, n: int, how: How) -> None:
    from floor import DurableWrite  # this bench folder's; it runs the tree's storage

    from storage.crypto import KeyRing
    from storage.db import make_engine, migrate
    from storage.errors import Conflict
    from storage.locks import lease
    from storage.repository import AnswerChange, SessionRecord, StepPlan, Store

    engine = make_engine(url)
    migrate(engine)
    keys = KeyRing.generate()
    stores = [Store(engine, keys) for _ in range(how.workers)]
    store = stores[0]
    owners = [f"owner{i}" for i in range(SESSIONS)]
    for owner in owners:
        store.create_session(owner, {"n": 0}, now=T0, expires_at=T0 + timedelta(hours=1))

    def decide(k: int) -> Any:
        def plan(_profile: dict[str, Any], _record: SessionRecord | None) -> tuple[None, StepPlan]:
            # A state and an answer of about a screening's size, and the update's claim.
            state = {"n": k, "pending": "x" * 200}
            return None, StepPlan(state, "active", [AnswerChange(f"q{k % 10}", "yes")], f"u{k}")

        return plan

    with engine.connect() as conn:
        pings = []
        for _ in range(50):
            started = time.perf_counter()
            conn.exec_driver_sql("SELECT 1").all()
            pings.append(time.perf_counter() - started)
        conn.rollback()

    def press(k: int) -> None:
        owner = owners[k % SESSIONS]
        held = lease(engine, f"chat:{owner}", lazy=True)
        # Each session's next press goes to the next worker.
        worker = stores[(k // SESSIONS) % len(stores)]
        for _ in range(5):  # as Service.step retries
            try:
                worker.step(owner, now=T0, decide=decide(k), lease=held)
                break
            except Conflict:
                continue
        else:
            raise SystemExit(f"press {k}: five conflicts in a row")
        held.release()

    def floor(k: int) -> None:
        durable(f"floor{k}")

    durable = DurableWrite(engine)
    work = floor if how.floor else press
    walls: list[float] = []
    cpu = time.process_time()
    with ThreadPoolExecutor(1) as thread:
        for k in range(n):
            started = time.perf_counter()
            if how.thread:
                thread.submit(work, k).result()
            else:
                work(k)
            walls.append(time.perf_counter() - started)
            if how.idle_ms:
                time.sleep(how.idle_ms / 1000)
    cpu = time.process_time() - cpu
    engine.dispose()
    what = f"{'floor' if how.floor else 'press'}{', on a thread' if how.thread else ''}"
    if how.workers > 1:
        what += f", {how.workers} workers in turn"
    print(
        f"{tree.name} ({engine.dialect.name}, {what}, idle {how.idle_ms:g} ms): median "
        f"{1000 * statistics.median(walls):.3f} ms per press, CPU {1000 * cpu / n:.3f} ms per press ({n} presses; SELECT 1: "
        f"{1000 * statistics.median(pings):.3f} ms)"
    )


if __name__ == "__main__":
    main()
