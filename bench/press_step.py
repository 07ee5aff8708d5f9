"""A button press's database work alone, in a loop: lock, read, decide, write, commit, unlock.

No Telegram and no event loop: ``Store.step`` with a lazy chat lease, then the lease's
release, for ``--n`` presses spread over eight sessions, on one thread. Prints the median
wall time per press and the process's CPU time per press. With ``--tree`` it runs another
checkout's code (say, a ``git worktree`` of the commit before a change), so that runs of the
two, taken by turns, compare the change alone.

    .venv/bin/python bench/press_step.py [--db-url postgresql+psycopg://…] [--n 1500]
        [--tree ../wt-before]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SESSIONS = 8


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--db-url", default=None, help="a PostgreSQL URL; SQLite if not given")
    parser.add_argument("--n", type=int, default=1500)
    args = parser.parse_args()
    tree = Path(args.tree).resolve()
    sys.path.insert(0, str(tree))  # that tree's storage package
    with tempfile.TemporaryDirectory() as tmp:
        if args.db_url is None:
            run(tree, f"sqlite:///{Path(tmp) / 'bench.db'}", args.n)
        else:
            run_on_schema(tree, args.db_url, args.n)


def run_on_schema(tree: Path, base_url: str, n: int) -> None:
    from sqlalchemy import create_engine, text

    schema = f"bench_{secrets.token_hex(4)}"
    admin = create_engine(base_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        sep = "&" if "?" in base_url else "?"
        run(tree, f"{base_url}{sep}options=-csearch_path%3D{schema}", n)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def run(tree: Path, url: str, n: int) -> None:
    from storage.crypto import KeyRing
    from storage.db import make_engine, migrate
    from storage.locks import lease
    from storage.repository import AnswerChange, SessionRecord, StepPlan, Store

    engine = make_engine(url)
    migrate(engine)
    store = Store(engine, KeyRing.generate())
    owners = [f"owner{i}" for i in range(SESSIONS)]
    for owner in owners:
        store.create_session(owner, {"n": 0}, now=T0, expires_at=T0 + timedelta(hours=1))

    def decide(k: int) -> Any:
        def plan(_profile: dict[str, Any], _record: SessionRecord | None) -> tuple[None, StepPlan]:
            # A state and an answer of about a screening's size, and the update's claim.
            state = {"n": k, "pending": "x" * 200}
            return None, StepPlan(state, "active", [AnswerChange(f"q{k % 10}", "yes")], f"u{k}")

        return plan

    walls: list[float] = []
    cpu = time.process_time()
    for k in range(n):
        owner = owners[k % SESSIONS]
        started = time.perf_counter()
        held = lease(engine, f"chat:{owner}", lazy=True)
        store.step(owner, now=T0, decide=decide(k), lease=held)
        held.release()
        walls.append(time.perf_counter() - started)
    cpu = time.process_time() - cpu
    engine.dispose()
    print(
        f"{tree.name} ({engine.dialect.name}): median {1000 * statistics.median(walls):.3f} ms "
        f"per press, CPU {1000 * cpu / n:.3f} ms per press ({n} presses)"
    )


if __name__ == "__main__":
    main()
