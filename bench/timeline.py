"""Where one press's time goes: Waymark's answer press, end to end, one user, cut in parts.

Runs bench/per_update.py's harness (the fake Bot API in a child process, the real
Application and HTTP stack) with timestamps at the joints of the press's path: the update
handed to the application, the database thread's start and end, the decision inside the
transaction, each ``prepared.batch`` (statements sent, results back), the rendering, and
each Bot API request and its response. Prints the median of every part over the presses,
with the process's CPU time over the same part (all threads: where the database thread
and the event loop overlap, both count), and the two bare bots' medians from the same run;
then the main spans, separately for warm presses (decided on the worker's copy, one batch)
and cold ones (two batches).

    .venv/bin/python bench/timeline.py [--db-url postgresql+psycopg://…] [--presses 300]

The joints are wrappers set on the code's own functions for this run only; they cost a few
microseconds each, so the parts add up to slightly more than an unwrapped press.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import per_update as pu
from schemas import schema_for

from bot import http, telegram_app
from storage import repository

Mark = tuple[str, float, float]
marks: list[Mark] = []


def mark(name: str) -> None:
    marks.append((name, time.perf_counter(), time.process_time()))


def instrument() -> None:
    async def db(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        def on_thread() -> Any:
            mark("database thread starts")
            try:
                return fn(*args, **kwargs)
            finally:
                mark("database thread ends")

        mark("hop to the database thread")
        result = await asyncio.to_thread(on_thread)
        mark("back on the event loop")
        return result

    telegram_app.WaymarkBot.db = db  # type: ignore[method-assign]

    step = repository.Store.step

    def timed_step(
        self: Any, owner: str, *, now: Any, decide: Any, lease: Any = None, sent: Any = None
    ) -> Any:
        def timed_decide(profile: Any, record: Any) -> Any:
            mark("decide starts")
            try:
                return decide(profile, record)
            finally:
                mark("decide ends")

        return step(self, owner, now=now, decide=timed_decide, lease=lease, sent=sent)

    repository.Store.step = timed_step  # type: ignore[method-assign]

    batch = repository.batch

    @contextlib.contextmanager
    def timed_batch(conn: Any) -> Iterator[None]:
        # Numbered within the press: on a cold press the first carries the lock and the
        # reads, the second the writes and COMMIT; a warm press has one, the writes alone.
        number = 1 + sum(1 for m in marks if m[0].endswith("sending"))
        mark(f"batch {number}: sending")
        with batch(conn):
            yield
            mark(f"batch {number}: sent, waiting")
        mark(f"batch {number}: results in")

    repository.batch = timed_batch  # type: ignore[assignment]
    render = telegram_app.WaymarkBot._render

    async def timed_render(self: Any, *args: Any, **kwargs: Any) -> None:
        mark("render starts")
        try:
            await render(self, *args, **kwargs)
        finally:
            mark("render ends")

    telegram_app.WaymarkBot._render = timed_render  # type: ignore[method-assign]
    do_request = http.AiohttpRequest.do_request

    async def timed_request(self: Any, url: str, *args: Any, **kwargs: Any) -> Any:
        method = url.rsplit("/", 1)[-1]
        mark(f"{method} sent")
        try:
            return await do_request(self, url, *args, **kwargs)
        finally:
            mark(f"{method} answered")

    http.AiohttpRequest.do_request = timed_request  # type: ignore[method-assign]


async def run(db_url_base: str | None, presses: int) -> None:
    pu.PRESSES_PER_USER[1] = presses
    presses_seen: list[list[Mark]] = []
    press_loop = pu.press_loop

    async def recorded_loop(harness: Any, *args: Any) -> Any:
        processor = harness.app.update_processor
        process = processor.process_update

        async def timed(update: Any, coroutine: Any) -> Any:
            marks.clear()
            mark("update in")
            try:
                return await process(update, coroutine)
            finally:
                mark("update done")
                presses_seen.append(list(marks))

        processor.process_update = timed
        return await press_loop(harness, *args)

    fake = pu.FakeProcess()
    try:
        updates = pu.Updates(fake)
        bare = pu.summary(await pu.run_bare(fake, updates, 1))["median_ms"]
        bare_aiohttp = pu.summary(await pu.run_bare(fake, updates, 1, aiohttp=True, gather=True))
        instrument()
        pu.press_loop = recorded_loop  # type: ignore[assignment]
        with tempfile.TemporaryDirectory() as tmp, schema_for(db_url_base) as db_url:
            waymark = pu.summary(await pu.run_waymark(fake, updates, 1, db_url, Path(tmp)))
        pu.check_violations(fake)
    finally:
        fake.close()
    # Answer presses that showed a next question by one edit, with one trip to the database
    # thread and nothing else sent (a flow's last press, with its outcome and the deletion
    # it schedules, has more parts and is left out).
    plain = [p for p in presses_seen if plain_press([m[0] for m in p])]
    parts: dict[tuple[str, str], list[tuple[float, float]]] = collections.defaultdict(list)
    offsets: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for press in plain:
        for (a, wall_a, cpu_a), (b, wall_b, cpu_b) in itertools.pairwise(press):
            parts[(a, b)].append((wall_b - wall_a, cpu_b - cpu_a))
            offsets[(a, b)].append(wall_a - press[0][1])
    whole = [p[-1][1] - p[0][1] for p in plain]
    print(
        f"# press timeline, db={'postgres' if db_url_base else 'sqlite'}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {len(plain)} presses; "
        f"median press {1000 * statistics.median(whole):.2f} ms (per_update's own timing: "
        f"{waymark['median_ms']:.2f} ms); bare {bare:.2f} ms, bare-aiohttp "
        f"{bare_aiohttp['median_ms']:.2f} ms"
    )
    print("| from | to | presses | median ms | CPU ms (process) |")
    print("|---|---|---|---|---|")
    # Parts seen in at least a fifth of the presses, in the order they usually come.
    common = [k for k in parts if len(parts[k]) >= len(plain) / 5]
    for key in sorted(common, key=lambda k: statistics.median(offsets[k])):
        values = parts[key]
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        print(f"| {key[0]} | {key[1]} | {len(values)} | {1000 * wall:.3f} | {1000 * cpu:.3f} |")
    print()
    spans(plain)


def plain_press(names: list[str]) -> bool:
    """One edit, one trip to the database thread, and no other message sent."""
    others = [
        n
        for n in names
        if n.endswith(" sent") and not n.startswith(("editMessageText", "answerCallbackQuery"))
    ]
    return (
        names.count("editMessageText sent") == 1
        and names.count("database thread starts") == 1
        and not others
    )


#: Spans every press has, before and after its database step.
_HOPS_IN = [
    ("update in", "hop to the database thread", "update to the handler"),
    ("hop to the database thread", "database thread starts", "thread hop in"),
]
_BACK = [
    ("database thread starts", "database thread ends", "the whole database step"),
    ("database thread ends", "back on the event loop", "thread hop back"),
    ("render starts", "editMessageText sent", "render the next question, build the edit"),
    ("editMessageText sent", "editMessageText answered", "editMessageText there and back"),
    ("editMessageText answered", "render ends", "the edit's reply (not parsed)"),
    ("render ends", "update done", "release scheduled, done"),
    ("update in", "update done", "the whole press"),
]
#: Spans of a cold press (two batches: BEGIN, the lock and the reads, then the writes and
#: COMMIT), whatever happens inside them (the early answerCallbackQuery's request and reply
#: interleave with the writes, so consecutive marks alone split it up).
SPANS = [
    *_HOPS_IN,
    ("database thread starts", "batch 1: sending", "checkout, lease, transaction set-up"),
    ("batch 1: sending", "batch 1: results in", "batch 1: BEGIN, lock, two reads"),
    ("batch 1: results in", "decide starts", "rows to records (decryption)"),
    ("decide starts", "decide ends", "decide (checks, engine)"),
    ("decide ends", "batch 2: sending", "encryption, statement values"),
    ("batch 2: sending", "batch 2: results in", "batch 2: waymark_press, COMMIT"),
    *_BACK,
]
#: Spans of a warm press (``Store.step`` on the worker's copy: decided first, then one batch
#: of one statement, ``waymark_press``, with the lock and the writes, a transaction of its
#: own; the answer starts once it is sent).
WARM_SPANS = [
    *_HOPS_IN,
    ("database thread starts", "decide starts", "checkout, lease, the copy"),
    ("decide starts", "decide ends", "decide (checks, engine)"),
    ("decide ends", "batch 1: sending", "encryption, statement values"),
    (
        "batch 1: sending",
        "batch 1: sent, waiting",
        "sending waymark_press (lock, claim, state, answer)",
    ),
    (
        "batch 1: sent, waiting",
        "batch 1: results in",
        "the server's answer (GIL shared with the answer)",
    ),
    ("batch 1: sent, waiting", "answerCallbackQuery sent", "the answer's request built"),
    ("batch 1: results in", "database thread ends", "results to the caller"),
    *_BACK,
]


def _warm(names: list[str]) -> bool:
    return "batch 2: sending" not in names and names.index("decide starts") < names.index(
        "batch 1: sending"
    )


def spans(plain: list[list[Mark]]) -> None:
    """Print the median of each span, for the warm presses and for the cold ones."""
    for kind, table in (("warm", WARM_SPANS), ("cold", SPANS)):
        presses = [p for p in plain if _warm([m[0] for m in p]) == (kind == "warm")]
        if presses:
            print(f"{kind} presses: {len(presses)}")
            _span_table(presses, table)
            print()


def _span_table(plain: list[list[Mark]], table: list[tuple[str, str, str]]) -> None:
    print("| span | from | to | median ms | CPU ms (process) |")
    print("|---|---|---|---|---|")
    for start, end, label in table:
        walls, cpus = [], []
        for press in plain:
            names = [m[0] for m in press]
            if start in names and end in names:
                a, b = press[names.index(start)], press[names.index(end)]
                walls.append(b[1] - a[1])
                cpus.append(b[2] - a[2])
        if walls:
            wall, cpu = statistics.median(walls), statistics.median(cpus)
            print(f"| {label} | {start} | {end} | {1000 * wall:.3f} | {1000 * cpu:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db-url", default=None, help="a PostgreSQL URL; SQLite if not given")
    parser.add_argument("--presses", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(run(args.db_url, args.presses))


if __name__ == "__main__":
    main()
