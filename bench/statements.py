"""One hot-path statement: SQLAlchemy Core execution against storage.prepared (the driver).

Times the press's session read (SELECT … FOR UPDATE on PostgreSQL) and its state write
(UPDATE … WHERE version), each executed many times inside one transaction, both ways,
alternating in one run. Reports microseconds per execution.

    .venv/bin/python bench/statements.py [--db sqlite|postgres] [--n 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import Connection, create_engine, text

from storage.crypto import KeyRing
from storage.db import make_engine, migrate
from storage.prepared import Prepared
from storage.repository import _ACTIVE_FOR_UPDATE, _SESSION_WRITE, Store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "WAYMARK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    schema = None
    if args.db == "postgres":
        schema = f"bench_{secrets.token_hex(4)}"
        with create_engine(args.pg_url).begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = f"{args.pg_url}?options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{tempfile.mkdtemp()}/statements.db"
    engine = make_engine(url)
    try:
        migrate(engine)
        now = datetime.now(UTC)
        store = Store(engine, KeyRing.generate())
        record = store.create_session("owner", {}, now=now, expires_at=now + timedelta(hours=1))
        read = {"owner": "owner", "now": now}
        # A version that never matches: the statement runs in full and changes nothing.
        write = {
            "sid": record.id,
            "expected": -1,
            "now": now,
            "state_ct": b"x" * 200,
            "new_status": "active",
            "new_version": 0,
        }
        prepared_read = Prepared(_ACTIVE_FOR_UPDATE, engine.dialect)
        prepared_write = Prepared(_SESSION_WRITE, engine.dialect)
        ways: dict[str, Callable[[Connection], Any]] = {
            "read, Core": lambda c: c.execute(_ACTIVE_FOR_UPDATE, read).first(),
            "read, prepared": lambda c: prepared_read.first(c, read),
            "write, Core": lambda c: c.execute(_SESSION_WRITE, write).rowcount,
            "write, prepared": lambda c: prepared_write.run(c, write),
        }
        results: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.rounds):
            for name, way in ways.items():
                with engine.begin() as conn:
                    way(conn)  # warm: the driver prepares, the cache fills
                    started = time.perf_counter()
                    for _ in range(args.n):
                        way(conn)
                    results[name].append((time.perf_counter() - started) / args.n)
        print(
            f"# hot statements, db={args.db}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        )
        print("| statement | µs per execution (best of rounds) | median of rounds |")
        print("|---|---|---|")
        for name, times in results.items():
            print(f"| {name} | {1e6 * min(times):.1f} | {1e6 * statistics.median(times):.1f} |")
    finally:
        engine.dispose()
        if schema is not None:
            with create_engine(args.pg_url).begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


if __name__ == "__main__":
    main()
