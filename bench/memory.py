"""Memory per active conversation, with 10,000 in flight.

Waymark keeps conversation state in the database, not in the process; this measures both:
Python heap (tracemalloc) and resident memory per conversation in the process, and database
bytes per conversation.

    .venv/bin/python bench/memory.py [--conversations 10000]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.runtime import open_runtime
from bot.settings import Settings
from flows.events import Choice


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runtime = open_runtime(Settings(data_dir=Path(tmp)))
        service = runtime.service
        service.current("warm-up")
        gc.collect()
        tracemalloc.start()
        heap0, rss0 = tracemalloc.get_traced_memory()[0], rss()
        started = time.perf_counter()
        for i in range(args.conversations):
            owner = f"owner{i:06d}"
            service.begin(owner, "screening_red_flags")
            service.answer(owner, Choice(("continue",)))  # in flight, past the intro
        elapsed = time.perf_counter() - started
        gc.collect()
        heap1, rss1 = tracemalloc.get_traced_memory()[0], rss()
        db_bytes = sum(p.stat().st_size for p in Path(tmp).glob("waymark.db*"))
        n = args.conversations
        print(f"conversations in flight: {n} (created in {elapsed:.1f} s, {n / elapsed:.0f}/s)")
        print(f"python heap per conversation: {(heap1 - heap0) / n:.0f} bytes")
        print(f"resident memory per conversation: {(rss1 - rss0) / n:.0f} bytes")
        print(f"database bytes per conversation: {db_bytes / n:.0f} bytes")
        active = service.current(f"owner{n - 1:06d}")
        assert active is not None and active[1].seq == 2
        runtime.close()


if __name__ == "__main__":
    main()
