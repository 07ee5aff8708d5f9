"""Per-update cost: Waymark playing a screening against a bare python-telegram-bot bot.

Both run in this process against the same loopback fake Bot API (tests/fakes), through
PTB's real HTTP stack; each update goes through ``Application.process_update``. The bare
bot answers every button press with the same inline keyboard (answerCallbackQuery +
editMessageText), which is the floor any PTB bot pays. The two alternate in one invocation,
so machine noise hits both alike; compare the ratio, not the absolute numbers.

    .venv/bin/python bench/per_update.py [--db sqlite|postgres] [--users 1,50,500] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PTB_TIMEDELTA", "true")
for _name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
    os.environ.pop(_name, None)
os.environ["NO_PROXY"] = "127.0.0.1,localhost"

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import Application, ApplicationBuilder, TypeHandler

from bot.runtime import open_runtime
from bot.settings import Settings
from bot.telegram_app import build_application
from tests.fakes.telegram_api import FakeBotAPI

TOKEN = "123456:BENCH"
PRESSES_PER_USER = {1: 60, 50: 6, 500: 2}


def bare_app(fake: FakeBotAPI) -> Application[Any, Any, Any, Any, Any, Any]:
    keyboard = InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("Observed", callback_data="a.1.0.xxxxxxxxxx"),
                InlineKeyboardButton("Not observed", callback_data="a.1.1.xxxxxxxxxx"),
            ]
        ]
    )
    counter = {"n": 0}

    async def handle(update: Update, _: Any) -> None:
        counter["n"] += 1
        if update.callback_query is not None:
            await update.callback_query.answer()
            await update.callback_query.edit_message_text(
                f"Question {counter['n']}", reply_markup=keyboard
            )
        elif update.effective_message is not None:
            await update.effective_message.reply_text("Question 0", reply_markup=keyboard)

    app = (
        ApplicationBuilder()
        .token(TOKEN)
        .base_url(fake.base_url)
        .base_file_url(fake.base_file_url)
        .concurrent_updates(True)
        .updater(None)
        .build()
    )
    app.add_handler(TypeHandler(Update, handle))
    return app


async def run_waymark(
    fake: FakeBotAPI, users: int, db_url: str | None, tmp: Path
) -> tuple[list[float], float]:
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
    async with app:
        bot.runtime_bot = app.bot
        ids = list(range(10_000 + users * 1000, 10_000 + users * 1000 + users))

        # Start each user's screening (untimed): /screen, then the menu button.
        async def start(user: int) -> None:
            # Untimed: /screen, then the menu button.
            fake.user_text(user, "/screen", user_id=user)
            await app.process_update(Update.de_json(fake.take_updates()[-1], app.bot))
            fake.press_button(user, "Red-flag observation", user_id=user)
            await app.process_update(Update.de_json(fake.take_updates()[-1], app.bot))

        for user in ids:
            await start(user)
        result = await press_loop(app, fake, ids, PRESSES_PER_USER[users], start)
    runtime.close()
    return result


async def run_bare(fake: FakeBotAPI, users: int) -> tuple[list[float], float]:
    app = bare_app(fake)
    async with app:
        ids = list(range(900_000 + users * 1000, 900_000 + users * 1000 + users))

        async def start(user: int) -> None:
            fake.user_text(user, "/start", user_id=user)
            await app.process_update(Update.de_json(fake.take_updates()[-1], app.bot))

        for user in ids:
            await start(user)
        return await press_loop(app, fake, ids, PRESSES_PER_USER[users], start)


async def press_loop(
    app: Any, fake: FakeBotAPI, ids: list[int], presses: int, restart: Any
) -> tuple[list[float], float]:
    """All users at once, each pressing the first button of its latest message ``presses``
    times; only ``process_update`` of the press is timed. A finished flow restarts untimed."""
    latencies: list[float] = []

    async def user_loop(user: int) -> None:
        for _ in range(presses):
            last = fake.last_message(user)
            if last is None or not last.get("reply_markup") or "does not identify" in last["text"]:
                await restart(user)
                last = fake.last_message(user)
            assert last is not None
            data = last["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
            fake.press(user, last["message_id"], data, user_id=user)
            update = fake.take_updates()[-1]
            started = time.perf_counter()
            # Through the application's own update processor, as its update fetcher does:
            # its concurrency limit applies, and waiting for a slot counts as latency.
            parsed = Update.de_json(update, app.bot)
            await app.update_processor.process_update(parsed, app.process_update(parsed))
            latencies.append(time.perf_counter() - started)

    wall = time.perf_counter()
    await asyncio.gather(*(user_loop(u) for u in ids))
    return latencies, time.perf_counter() - wall


def summary(latencies: list[float], wall: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "updates": len(ordered),
        "per_s": len(ordered) / wall,
        "median_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--users", default="1,50,500")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "WAYMARK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    print(
        f"# per-update benchmark, db={args.db}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    print("| users | bot | updates | updates/s | median ms | p99 ms | ratio (median) |")
    print("|---|---|---|---|---|---|---|")
    with FakeBotAPI.running() as fake:
        for users in [int(u) for u in args.users.split(",")]:
            results: dict[str, list[dict[str, float]]] = {"bare": [], "waymark": []}
            for _ in range(args.rounds):
                lat, wall = await run_bare(fake, users)
                results["bare"].append(summary(lat, wall))
                with tempfile.TemporaryDirectory() as tmp:
                    db_url = None
                    if args.db == "postgres":
                        db_url = fresh_schema(args.pg_url)
                    lat, wall = await run_waymark(fake, users, db_url, Path(tmp))
                    results["waymark"].append(summary(lat, wall))
            best = {k: min(v, key=lambda r: r["median_ms"]) for k, v in results.items()}
            for name in ("bare", "waymark"):
                r = best[name]
                ratio = r["median_ms"] / best["bare"]["median_ms"]
                print(
                    f"| {users} | {name} | {int(r['updates'])} | {r['per_s']:.0f} | "
                    f"{r['median_ms']:.1f} | {r['p99_ms']:.1f} | {ratio:.2f}× |"
                )
            fake.violations.clear()


def fresh_schema(base: str) -> str:
    import secrets

    from sqlalchemy import create_engine, text

    schema = f"bench_{secrets.token_hex(4)}"
    engine = create_engine(base)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


if __name__ == "__main__":
    asyncio.run(main())
