"""Purge of one million expired answers, and the worst foreground latency meanwhile.

Expired rows (sessions with ten answers each, and their data keys) are bulk-inserted with
realistic ciphertext sizes; then ``Store.purge`` runs while a foreground thread keeps
answering a live session every 10 ms and records how long each of those writes took.

    .venv/bin/python bench/purge.py [--db sqlite|postgres] [--answers 1000000] [--no-settle]

The bulk insert writes about half a gigabyte of WAL on PostgreSQL, which starts a checkpoint
that would still be running, and syncing, while the purge runs: a stall of the benchmark's
own making, since a deployment's expired rows were written days before. So by default the
database is checkpointed after the insert (``CHECKPOINT``; on SQLite a WAL checkpoint), and
on PostgreSQL the checkpoints that ran during the purge are printed (``pg_stat_bgwriter``):
a checkpoint of the purge's own, by time or by WAL, still counts. ``--no-settle`` measures
as before, right after the insert.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, insert, text

from storage.crypto import KeyRing
from storage.db import make_engine, migrate
from storage.models import AnswerRow, DataKey, SessionRow
from storage.repository import AnswerChange, Store

PER_SESSION = 10


def fill(store: Store, answers: int) -> None:
    past = datetime.now(UTC) - timedelta(days=1)
    sessions = answers // PER_SESSION
    blob = secrets.token_bytes(60)
    chunk = 5000
    with store.engine.begin() as conn:
        for start in range(0, sessions, chunk):
            ids = [f"s{start + i:010d}" for i in range(min(chunk, sessions - start))]
            conn.execute(
                insert(DataKey),
                [
                    {
                        "id": f"k{sid[1:]}",
                        "kek_id": store.keys.active,
                        "wrapped": blob,
                        "expires_at": past,
                    }
                    for sid in ids
                ],
            )
            conn.execute(
                insert(SessionRow),
                [
                    {
                        "id": sid,
                        "owner": f"o{sid}",
                        "status": "ended",
                        "version": 3,
                        "key_id": f"k{sid[1:]}",
                        "state_ct": blob * 4,
                        "created_at": past,
                        "updated_at": past,
                        "expires_at": past,
                    }
                    for sid in ids
                ],
            )
            conn.execute(
                insert(AnswerRow),
                [
                    {
                        "session_id": sid,
                        "slot": f"slot{n:02d}",
                        "value_ct": blob,
                        "expires_at": past,
                    }
                    for sid in ids
                    for n in range(PER_SESSION)
                ],
            )


def settle(store: Store) -> None:
    """Write the bulk insert's pages out before the purge (see the module's docstring)."""
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect() as conn:
            conn.execute(text("CHECKPOINT"))
            conn.commit()
        return
    # On the driver's connection, outside any transaction (SQLite refuses it inside one).
    raw = store.engine.raw_connection()
    try:
        assert raw.driver_connection is not None
        raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        raw.close()


def checkpoint_stats(store: Store) -> dict[str, float]:
    """PostgreSQL's checkpoint counters so far (zeros elsewhere)."""
    if store.engine.dialect.name != "postgresql":
        return {"timed": 0, "requested": 0, "write_ms": 0.0, "sync_ms": 0.0}
    with store.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT checkpoints_timed, checkpoints_req, checkpoint_write_time, "
                "checkpoint_sync_time FROM pg_stat_bgwriter"
            )
        ).one()
        conn.rollback()
    return {"timed": row[0], "requested": row[1], "write_ms": row[2], "sync_ms": row[3]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--answers", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=500)  # the Store's own default
    parser.add_argument("--no-settle", action="store_true", help="no checkpoint after the insert")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "WAYMARK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.db == "sqlite":
            url = f"sqlite:///{tmp}/purge.db"
        else:
            schema = f"bench_{secrets.token_hex(4)}"
            admin = create_engine(args.pg_url)
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            url = f"{args.pg_url}?options=-csearch_path%3D{schema}"
        engine = make_engine(url)
        migrate(engine)
        store = Store(engine, KeyRing.generate())
        store.check_keys()
        started = time.perf_counter()
        fill(store, args.answers)
        print(
            f"# purge benchmark, db={args.db}, {args.answers} expired answers "
            f"(inserted in {time.perf_counter() - started:.0f} s)"
        )
        if not args.no_settle:
            settled = time.perf_counter()
            settle(store)
            print(f"settled: checkpoint after the insert in {time.perf_counter() - settled:.1f} s")
        now = datetime.now(UTC)
        live = store.create_session("live", {"n": 0}, now=now, expires_at=now + timedelta(days=1))
        latencies: list[float] = []
        done = threading.Event()

        def foreground() -> None:
            version = live.version
            n = 0
            while not done.is_set():
                t = time.perf_counter()
                version = store.save(
                    live.id,
                    {"n": n},
                    expected_version=version,
                    status="active",
                    now=datetime.now(UTC),
                    answers=[AnswerChange("q", n)],
                )
                latencies.append(time.perf_counter() - t)
                n += 1
                time.sleep(0.01)

        worker = threading.Thread(target=foreground)
        worker.start()
        time.sleep(0.5)
        baseline = list(latencies)
        checkpoints = checkpoint_stats(store)
        started = time.perf_counter()
        counts = store.purge(now=datetime.now(UTC), batch=args.batch)
        elapsed = time.perf_counter() - started
        checkpoints = {k: v - checkpoints[k] for k, v in checkpoint_stats(store).items()}
        done.set()
        worker.join()
        during = latencies[len(baseline) :]
        print(
            f"purged {counts.answers} answers, {counts.sessions} sessions, "
            f"{counts.data_keys} data keys in {elapsed:.1f} s (batch {args.batch})"
        )
        print(
            f"foreground writes during the purge: {len(during)}, median "
            f"{1000 * statistics.median(during):.1f} ms, worst {1000 * max(during):.1f} ms "
            f"(before the purge: worst {1000 * max(baseline):.1f} ms)"
        )
        if args.db == "postgres":
            print(
                f"checkpoints during the purge: {checkpoints['timed']} by time, "
                f"{checkpoints['requested']} requested (WAL); their writes "
                f"{checkpoints['write_ms'] / 1000:.1f} s, sync {checkpoints['sync_ms'] / 1000:.3f} s"
            )
        assert store.get_session(live.id, now=datetime.now(UTC)) is not None
        engine.dispose()
        if args.db == "postgres":
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


if __name__ == "__main__":
    main()
