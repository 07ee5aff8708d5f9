"""Per-update cost: Waymark playing a screening against a bare python-telegram-bot bot.

Both run in this process against the same loopback fake Bot API (tests/fakes), through
real HTTP stacks; each update goes through ``Application.process_update``. The bare bot
answers every button press with the same inline keyboard (answerCallbackQuery +
editMessageText), which is the floor any PTB bot pays. The bots alternate in one invocation,
so machine noise hits all alike; compare the ratios, not the absolute numbers.

Three floors: **bare** is PTB as shipped, on its httpx transport, one call after the other
(PTB's examples); **bare-gather** sends both calls at once (Waymark sends its
answerCallbackQuery even earlier, while its write is in flight); **bare-aiohttp**
is bare-gather on Waymark's own transport (bot/http.py). Waymark against bare is what a
PTB bot costs and what the goal names; Waymark against bare-aiohttp is what Waymark's own
work costs, with the transport the same on both sides.

The fake runs in a child process (``python -m tests.fakes.telegram_api``): in this process
its request threads and spec checks would share the GIL with the bots and cap the bare bot
itself. The driver does not ask the fake what the bot showed either: it reads the bot's own
API responses (recorded raw by the bots' HTTP request object, parsed after each timed
press) and builds each update as Telegram would send it.

    .venv/bin/python bench/per_update.py [--db sqlite|postgres] [--users 1,50,500] [--rounds 2]
        [--bots bare,bare-gather,bare-aiohttp,bare-durable,waymark] [--presses N (per user,
        with one user)] [--think-ms T]

By default each simulated user presses again as soon as its press is answered: back to
back, the bot never idle, and what it does after a reply (Waymark releases the chat's lock
on a thread of its own) overlaps the next press. ``--think-ms`` makes each user wait that
long after each answer, untimed, as a person reads the next question before pressing: every
bot then takes each press from idle, as it does in use. (Updates per second then count the
waits too; read the medians.)

**bare-durable** is bare-aiohttp storing one row per press (bench/floor.py: an insert and its
COMMIT, one round trip, on the database of the run, on a worker thread), with the spinner
answered while the write is in flight and the edit sent once it is stored, as Waymark does:
not a floor for the ratio columns, but what a bot on Waymark's transport pays for storing
each press before it shows the next question, and nothing else.

``--bots`` may add **bare-content**: the bare-aiohttp bot replaying the questions and keyboards
Waymark sent in the same round, so that the content's own cost can be told apart from
Waymark's work. Each bot's row shows its round with the lowest median; the "rounds pooled"
row gives Waymark's median over every press of every round, against the bare bots' pooled
the same way, which one lucky round of either cannot move.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PTB_TIMEDELTA", "true")
for _name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
    os.environ.pop(_name, None)
os.environ["NO_PROXY"] = "127.0.0.1,localhost"

# bench/paired.py reaches them through this module, as well.
from floor import DurableWrite
from schemas import schema_for
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import Application, ApplicationBuilder, TypeHandler
from telegram.request import HTTPXRequest, RequestData

from bot.http import AiohttpRequest
from bot.runtime import open_runtime
from bot.settings import Settings
from bot.telegram_app import build_application
from storage.db import make_engine, migrate
from tests.fakes.telegram_api import CONTROL_PREFIX, BotApiSpec, utf16_len

TOKEN = "123456:BENCH"
PRESSES_PER_USER = {1: 240, 50: 6, 500: 2}
#: "think_s": seconds each simulated user waits after a press is answered before the next
#: one (``--think-ms``; 0: back to back). Untimed, and the same for every bot.
PACING = {"think_s": 0.0}
# ApplicationBuilder's default connection pool for bot calls: both bots get exactly it.
POOL_SIZE = 256
# User messages get ids from their own range: the fake numbers the bot's messages from 1 in
# each chat and never sees the messages the driver builds, so ids stay unique per chat.
USER_MESSAGE_IDS = 1_000_000_000
MENU_BUTTON = "Red-flag observation"
BOTS = ("bare", "bare-gather", "bare-aiohttp", "bare-durable", "waymark", "bare-content")
FLOORS = ("bare", "bare-gather", "bare-aiohttp")
ENDED = "does not identify"

JSON = dict[str, Any]
AnyApp = Application[Any, Any, Any, Any, Any, Any]


class FakeProcess:
    """The fake Bot API in a child process; it stops when this process closes its stdin."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.telegram_api", "--port", "0"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise SystemExit(f"fake Bot API did not start (exit {self._proc.wait()})")
        self.port = int(json.loads(line)["port"])
        self.base_url = f"http://127.0.0.1:{self.port}/bot"
        self.base_file_url = f"http://127.0.0.1:{self.port}/file/bot"
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def control(self, name: str, *, post: bool = False) -> Any:
        url = f"http://127.0.0.1:{self.port}{CONTROL_PREFIX}{name}"
        with self._opener.open(url, data=b"" if post else None, timeout=30) as response:
            return json.load(response)

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


class Recording:
    """Keeps every call's raw answer for the driver (mixed into either transport).

    Inside the timed section it only appends a tuple; the driver parses the JSON after the
    clock stops (:meth:`Chats.drain`).
    """

    calls: list[tuple[str, RequestData | None, int, bytes]]

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = HTTPXRequest.DEFAULT_NONE,
        write_timeout: Any = HTTPXRequest.DEFAULT_NONE,
        connect_timeout: Any = HTTPXRequest.DEFAULT_NONE,
        pool_timeout: Any = HTTPXRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        code, payload = await super().do_request(  # type: ignore[misc]
            url, method, request_data, read_timeout, write_timeout, connect_timeout, pool_timeout
        )
        self.calls.append((url, request_data, code, payload))
        return code, payload


class RecordingHttpx(Recording, HTTPXRequest):
    """PTB's own transport (httpx), with ApplicationBuilder's default pool."""

    def __init__(self) -> None:
        HTTPXRequest.__init__(self, connection_pool_size=POOL_SIZE)
        self.calls = []


class RecordingAiohttp(Recording, AiohttpRequest):
    """Waymark's transport (bot/http.py), with the same pool size."""

    def __init__(self) -> None:
        AiohttpRequest.__init__(self, connection_pool_size=POOL_SIZE)
        self.calls = []


RecordingRequest = RecordingHttpx | RecordingAiohttp


class Chats:
    """What the bot shows in each chat, learnt only from its own API responses."""

    def __init__(self, request: RecordingRequest, edits: list[JSON] | None = None) -> None:
        self.request = request
        self.messages: dict[int, dict[int, JSON]] = {}
        self.errors: list[str] = []
        #: When given: the parameters of every editMessageText the bot sent.
        self.edits = edits

    def drain(self) -> None:
        """Parse the calls recorded since the last drain (one event-loop step: no races)."""
        calls, self.request.calls = self.request.calls, []
        for url, request_data, code, payload in calls:
            method = url.rsplit("/", 1)[-1]
            if self.edits is not None and method == "editMessageText" and request_data:
                self.edits.append(request_data.parameters)
            answer = json.loads(payload)
            if not answer.get("ok"):
                self.errors.append(f"{method}: HTTP {code}: {answer.get('description')}")
                continue
            result = answer["result"]
            if isinstance(result, dict) and "message_id" in result and "chat" in result:
                # A sent or edited message, whole, as Telegram stores it: the next press carries it.
                chat = self.messages.setdefault(result["chat"]["id"], {})
                chat[result["message_id"]] = result
            elif method in ("deleteMessage", "deleteMessages") and request_data is not None:
                params = request_data.parameters
                ids = params.get("message_ids") or [params.get("message_id")]
                chat = self.messages.get(int(str(params["chat_id"])), {})
                for message_id in ids if isinstance(ids, list) else []:
                    chat.pop(message_id, None)

    def last(self, chat_id: int) -> JSON | None:
        """The bot's most recent live message in the chat, like FakeBotAPI.last_message."""
        chat = self.messages.get(chat_id)
        return chat[max(chat)] if chat else None

    def last_keyboard(self, chat_id: int) -> JSON | None:
        """The most recent message with an inline keyboard, like FakeBotAPI.press_button."""
        chat = self.messages.get(chat_id, {})
        return next((chat[i] for i in sorted(chat, reverse=True) if buttons(chat[i])), None)


def buttons(message: JSON | None) -> list[JSON]:
    rows = ((message or {}).get("reply_markup") or {}).get("inline_keyboard") or []
    return [button for row in rows for button in row]


def pressable(message: JSON | None) -> bool:
    """A flow goes on while its last message has buttons and is not the outcome."""
    return bool(buttons(message)) and ENDED not in (message or {}).get("text", "")


class Updates:
    """Builds updates in the shapes FakeBotAPI.user_text and FakeBotAPI.press inject."""

    # One sequence for the whole invocation: update ids never repeat, as with one fake.
    _update_ids = itertools.count(1)
    _user_message_ids = itertools.count(USER_MESSAGE_IDS)

    def __init__(self, fake: FakeProcess) -> None:
        self.fake = fake
        self._callback_ids: list[str] = []
        self.built: list[JSON] = []

    def reserve(self, count: int) -> None:
        """Have the fake accept ``count`` more callback query ids (before the clock starts)."""
        ids = self.fake.control(f"callback_ids?count={count}", post=True)["ids"]
        self._callback_ids.extend(reversed(ids))

    @staticmethod
    def _user(chat_id: int) -> JSON:
        return {"id": chat_id, "is_bot": False, "first_name": "Test", "language_code": "en"}

    def _update(self, body: JSON) -> JSON:
        update = {"update_id": next(self._update_ids), **body}
        self.built.append(update)
        return update

    def text(self, chat_id: int, text: str) -> JSON:
        message: JSON = {
            "message_id": next(self._user_message_ids),
            "from": self._user(chat_id),
            "chat": {"id": chat_id, "type": "private", "first_name": "Test"},
            "date": int(time.time()),
            "text": text,
        }
        if text.startswith("/"):
            command = text.split(maxsplit=1)[0]
            message["entities"] = [
                {"type": "bot_command", "offset": 0, "length": utf16_len(command)}
            ]
        return self._update({"message": message})

    def press(self, chat_id: int, message: JSON, data: str) -> JSON:
        if not self._callback_ids:
            self.reserve(1000)  # only if the estimate in press_loop fell short
        return self._update(
            {
                "callback_query": {
                    "id": self._callback_ids.pop(),
                    "from": self._user(chat_id),
                    # The message as it is now, with its keyboard and edit_date, like Telegram.
                    "message": message,
                    "chat_instance": str(-(abs(chat_id) * 7919 + 17)),
                    "data": data,
                }
            }
        )


class Harness:
    """One bot under test with the driver's view of its chats."""

    def __init__(
        self,
        app: AnyApp,
        request: RecordingRequest,
        updates: Updates,
        edits: list[JSON] | None = None,
    ) -> None:
        self.app = app
        self.chats = Chats(request, edits)
        self.updates = updates

    async def feed(self, update: JSON) -> None:
        """Untimed: process one update and learn what the bot answered."""
        await self.app.process_update(Update.de_json(update, self.app.bot))
        self.chats.drain()

    async def press_button(self, chat_id: int, text: str) -> None:
        message = self.chats.last_keyboard(chat_id)
        button = next((b for b in buttons(message) if b.get("text") == text), None)
        if message is None or button is None:
            raise SystemExit(f"chat {chat_id}: no button {text!r} on {message!r}")
        await self.feed(self.updates.press(chat_id, message, button["callback_data"]))


def bare_app(
    fake: FakeProcess,
    request: RecordingRequest,
    *,
    gather: bool = False,
    content: list[JSON] | None = None,
    durable: Callable[[str], None] | None = None,
) -> AnyApp:
    keyboard = InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("Observed", callback_data="a.1.0.xxxxxxxxxx"),
                InlineKeyboardButton("Not observed", callback_data="a.1.1.xxxxxxxxxx"),
            ]
        ]
    )
    # "bare-content": Waymark's own questions, replayed in turn (HTML text and keyboard, as
    # Waymark sent them in its round), built before the clock starts.
    replies = [
        (e["text"], InlineKeyboardMarkup.de_json(e["reply_markup"], None))
        for e in content or []
        if isinstance(e.get("reply_markup"), dict)
    ]
    counter = {"n": 0}

    async def handle(update: Update, _: Any) -> None:
        counter["n"] += 1
        if update.callback_query is not None:
            query = update.callback_query
            if replies:
                text, markup = replies[counter["n"] % len(replies)]
                edit = query.edit_message_text(text, parse_mode="HTML", reply_markup=markup)
            else:
                edit = query.edit_message_text(f"Question {counter['n']}", reply_markup=keyboard)
            if durable is not None:
                # "bare-durable", as Waymark does it at best: the spinner answered while the
                # write is in flight, the edit once it is stored.
                await asyncio.gather(
                    query.answer(), asyncio.to_thread(durable, f"{update.update_id}")
                )
                await edit
            elif gather:
                # Both calls at once (Waymark answers the press while its write is in flight,
                # and edits once it is stored).
                await asyncio.gather(query.answer(), edit)
            else:
                # As python-telegram-bot's own examples do: one call after the other.
                await query.answer()
                await edit
        elif update.effective_message is not None:
            await update.effective_message.reply_text("Question 0", reply_markup=keyboard)

    app = (
        ApplicationBuilder()
        .token(TOKEN)
        .base_url(fake.base_url)
        .base_file_url(fake.base_file_url)
        .request(request)
        .concurrent_updates(True)
        .updater(None)
        .build()
    )
    app.add_handler(TypeHandler(Update, handle))
    return app


Result = tuple[list[float], float, dict[str, float]]


async def run_waymark(
    fake: FakeProcess,
    updates: Updates,
    users: int,
    db_url: str | None,
    tmp: Path,
    edits: list[JSON] | None = None,
) -> Result:
    settings = Settings(
        bot_token=TOKEN,
        telegram_base_url=fake.base_url,
        data_dir=tmp,
        database_url=db_url,
        purge_interval=36000,
        outbox_interval=3600,
    )
    runtime = open_runtime(settings)
    # Like the bare bot, without the rate limiter: it caps a deployed bot at Telegram's own
    # ~30 messages a second, which would hide what the update costs.
    app, bot = build_application(runtime, rate_limit=False)
    # build_application takes no request object, so the recording one replaces the one the
    # builder made (the same class and pool size) before the bot opens any connection.
    request = RecordingAiohttp()
    with app.bot._unfrozen():
        app.bot._request = (app.bot._request[0], request)
    async with app:
        bot.runtime_bot = app.bot
        harness = Harness(app, request, updates, edits)
        harness.chats.drain()
        ids = list(range(10_000 + users * 1000, 10_000 + users * 1000 + users))

        async def start(user: int) -> None:
            # Untimed: /screen, then the menu button.
            await harness.feed(updates.text(user, "/screen"))
            await harness.press_button(user, MENU_BUTTON)

        for user in ids:
            await start(user)
        result = await press_loop(harness, fake, ids, PRESSES_PER_USER[users], start)
    runtime.close()
    return result


async def run_bare(
    fake: FakeProcess,
    updates: Updates,
    users: int,
    *,
    gather: bool = False,
    content: list[JSON] | None = None,
    aiohttp: bool = False,
    durable_url: str | None = None,
) -> Result:
    request: RecordingRequest = RecordingAiohttp() if aiohttp else RecordingHttpx()
    with contextlib.ExitStack() as stack:
        durable = None
        if durable_url is not None:
            engine = make_engine(durable_url)
            stack.callback(engine.dispose)
            migrate(engine)
            durable = DurableWrite(engine)
        app = bare_app(fake, request, gather=gather, content=content, durable=durable)
        async with app:
            harness = Harness(app, request, updates)
            harness.chats.drain()
            ids = list(range(900_000 + users * 1000, 900_000 + users * 1000 + users))

            async def start(user: int) -> None:
                await harness.feed(updates.text(user, "/start"))

            for user in ids:
                await start(user)
            return await press_loop(harness, fake, ids, PRESSES_PER_USER[users], start)


async def press_loop(
    harness: Harness,
    fake: FakeProcess,
    ids: list[int],
    presses: int,
    restart: Callable[[int], Awaitable[None]],
) -> Result:
    """All users at once, each pressing the first button of its latest message ``presses``
    times; only parsing and processing the press are timed. A finished flow restarts untimed."""
    app, chats, updates = harness.app, harness.chats, harness.updates
    # Enough ids for every press and a menu press per restart, so that no call to the fake
    # for more falls inside the wall-clock window.
    updates.reserve(2 * len(ids) * presses + len(ids))
    latencies: list[float] = []

    async def user_loop(user: int) -> None:
        for _ in range(presses):
            last = chats.last(user)
            if not pressable(last):
                await restart(user)
                last = chats.last(user)
            if last is None or not pressable(last):
                raise SystemExit(f"chat {user}: nothing to press after a restart: {last!r}")
            update = updates.press(user, last, buttons(last)[0]["callback_data"])
            started = time.perf_counter()
            # Through the application's own update processor, as its update fetcher does:
            # its concurrency limit applies, and waiting for a slot counts as latency.
            parsed = Update.de_json(update, app.bot)
            await app.update_processor.process_update(parsed, app.process_update(parsed))
            latencies.append(time.perf_counter() - started)
            chats.drain()
            if PACING["think_s"]:
                # A person reads the next question before pressing: the bot is idle (or
                # finishing what it does after a reply) meanwhile.
                await asyncio.sleep(PACING["think_s"])

    fake_before = fake.control("stats")
    cpu = time.process_time()
    wall = time.perf_counter()
    await asyncio.gather(*(user_loop(u) for u in ids))
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    fake_after = fake.control("stats")
    if chats.errors:
        raise SystemExit(
            f"the Bot API answered {len(chats.errors)} calls with an error, e.g. {chats.errors[:3]}"
        )
    load = {
        "cpu": 100 * cpu / wall,
        "fake_cpu": 100 * (fake_after["cpu_s"] - fake_before["cpu_s"]) / wall,
        "fake_threads": fake_after["threads"],
    }
    return latencies, wall, load


def summary(result: Result) -> dict[str, float]:
    latencies, wall, load = result
    ordered = sorted(latencies)
    return {
        "updates": len(ordered),
        "per_s": len(ordered) / wall,
        "median_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        **load,
    }


def ratio_cells(value: float, floors: list[float]) -> str:
    """The table cells of ``value`` against each floor, in the floors' order."""
    return "".join(f"{value / floor:.2f}× | " for floor in floors)


def check_updates(spec: BotApiSpec, updates: Updates) -> None:
    """The updates the driver built must be ones Telegram could send (as FakeBotAPI.inject
    checks them); checked after the clock stops."""
    for update in updates.built:
        problems = spec.check_value(update, ["Update"], "update")
        if problems:
            raise SystemExit(f"the driver built an update against the spec: {problems}")
    updates.built.clear()


def check_violations(fake: FakeProcess) -> None:
    violations = fake.control("violations")["violations"]
    if violations:
        listing = "\n".join(f"  - {v}" for v in violations[:20])
        raise SystemExit(f"the fake Bot API recorded {len(violations)} violations:\n{listing}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--users", default="1,50,500")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bots", default="bare,bare-gather,bare-aiohttp,bare-durable,waymark")
    parser.add_argument("--presses", type=int, default=PRESSES_PER_USER[1])
    parser.add_argument("--think-ms", type=float, default=0.0)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "WAYMARK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    PRESSES_PER_USER[1] = args.presses
    PACING["think_s"] = args.think_ms / 1000
    bots = [b for b in BOTS if b in args.bots.split(",")]
    if "bare" not in bots:
        raise SystemExit("--bots must include bare: every ratio is to it")
    spec = BotApiSpec.load()
    print(
        f"# per-update benchmark, db={args.db}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        + (f", {args.think_ms:g} ms between a user's presses" if args.think_ms else "")
    )
    # CPU columns: percent of one core over the press loop's wall time, for this process
    # (bots, driver, database threads) and for the fake's; near 100% here means this process,
    # not the fake, is what limits the rate.
    # Three floors, each a ratio column: "bare" is PTB as shipped (its httpx transport),
    # sending answerCallbackQuery, then editMessageText, as PTB's examples do; "bare-gather"
    # sends both at once (Waymark answers even earlier, while its write is in flight);
    # "bare-aiohttp" is bare-gather on Waymark's own transport (bot/http.py), so that a
    # faster transport cannot hide what Waymark's own work costs.
    floors = [b for b in FLOORS if b in bots]
    print(
        "| users | bot | updates | updates/s | median ms | p99 ms | "
        + "".join(f"ratio to {f} | " for f in floors)
        + "bench CPU | fake CPU |"
    )
    print("|---|---|---|---|---|---|" + "---|" * len(floors) + "---|---|")
    fake = FakeProcess()
    base = args.pg_url if args.db == "postgres" else None
    try:
        updates = Updates(fake)
        for users in [int(u) for u in args.users.split(",")]:
            # bare-durable answers the one-user question (what a durable write per press
            # costs); with many users it would measure its own naive design, a default
            # executor's threads each committing alone.
            here = [b for b in bots if users == 1 or b != "bare-durable"]
            results: dict[str, list[Result]] = {b: [] for b in here}
            for _ in range(args.rounds):
                edits: list[JSON] = []
                for name in here:
                    if name == "waymark":
                        with tempfile.TemporaryDirectory() as tmp, schema_for(base) as db_url:
                            result = await run_waymark(
                                fake, updates, users, db_url, Path(tmp), edits
                            )
                    elif name == "bare-content":
                        if not edits:
                            raise SystemExit("bare-content replays Waymark's round: add waymark")
                        result = await run_bare(
                            fake, updates, users, gather=True, content=edits, aiohttp=True
                        )
                    elif name == "bare-durable":
                        # bare-aiohttp storing one row per press (see bare_app).
                        with tempfile.TemporaryDirectory() as tmp, schema_for(base) as db_url:
                            url = db_url or f"sqlite:///{Path(tmp) / 'durable.db'}"
                            result = await run_bare(
                                fake, updates, users, aiohttp=True, durable_url=url
                            )
                    elif name == "bare-aiohttp":
                        result = await run_bare(fake, updates, users, gather=True, aiohttp=True)
                    else:
                        result = await run_bare(fake, updates, users, gather=name == "bare-gather")
                    results[name].append(result)
                check_updates(spec, updates)
            summaries = {k: [summary(r) for r in v] for k, v in results.items()}
            best = {k: min(v, key=lambda r: r["median_ms"]) for k, v in summaries.items()}
            for name in here:
                r = best[name]
                ratios = ratio_cells(r["median_ms"], [best[f]["median_ms"] for f in floors])
                print(
                    f"| {users} | {name} | {int(r['updates'])} | {r['per_s']:.0f} | "
                    f"{r['median_ms']:.1f} | {r['p99_ms']:.1f} | {ratios}"
                    f"{r['cpu']:.0f}% | {r['fake_cpu']:.0f}% |",
                    flush=True,
                )
                print(
                    f"  {users} {name}: fake threads after the loop {int(r['fake_threads'])}",
                    file=sys.stderr,
                )
            # The rounds pooled: each bot's median over every press of every round.
            pooled = {
                k: sorted(x for latencies, _, _ in v for x in latencies) for k, v in results.items()
            }
            if "waymark" in pooled:
                mine = pooled["waymark"]
                median = statistics.median(mine)
                ratios = ratio_cells(median, [statistics.median(pooled[f]) for f in floors])
                print(
                    f"| {users} | waymark, {args.rounds} rounds pooled | {len(mine)} | — | "
                    f"{1000 * median:.1f} | {1000 * mine[int(0.99 * (len(mine) - 1))]:.1f} | "
                    f"{ratios}— | — |",
                    flush=True,
                )
            if "bare-content" in pooled and "waymark" in pooled:
                # Waymark against a bare bot sending the very same questions and keyboards:
                # what Waymark itself adds, with the content's own cost taken out.
                own = statistics.median(pooled["waymark"]) / statistics.median(
                    pooled["bare-content"]
                )
                print(
                    f"| {users} | waymark ÷ bare-content, {args.rounds} rounds pooled | — | — | — "
                    f"| — | {own:.2f}× | " + "— | " * (len(floors) - 1) + "— | — |",
                    flush=True,
                )
            # Loudly: a rejected request means the bot ran an error path, not the measured one.
            check_violations(fake)
    finally:
        fake.close()


if __name__ == "__main__":
    asyncio.run(main())
