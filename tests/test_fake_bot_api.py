"""Self-test of the loopback fake Bot API, driving the real python-telegram-bot stack."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest, NetworkError, RetryAfter, TimedOut
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
)

from tests.fakes import telegram_api
from tests.fakes.telegram_api import (
    CONTROL_PREFIX,
    MEDIA_KINDS,
    FakeBotAPI,
    clear_proxy_env,
    parse_formatted,
)

# Re-exported so pytest finds the fixture (an import would trip ruff's F811 on the parameters).
fake_bot_api = telegram_api.fake_bot_api
pytestmark = pytest.mark.e2e

AnyApp = Application[Any, Any, Any, Any, Any, Any]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def app(fake_bot_api: FakeBotAPI, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AnyApp]:
    clear_proxy_env(monkeypatch)
    # PTB 22 warns (an error under filterwarnings=error) when RetryAfter is built without it.
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    application: AnyApp = (
        ApplicationBuilder()
        .token("123456:TEST")
        .base_url(fake_bot_api.base_url)
        .base_file_url(fake_bot_api.base_file_url)
        .build()
    )
    await application.initialize()
    try:
        yield application
    finally:
        if application.updater is not None and application.updater.running:
            await application.updater.stop()
        if application.running:
            await application.stop()
        await application.shutdown()


async def test_start_keyboard_then_button_press_edits(
    fake_bot_api: FakeBotAPI, app: AnyApp
) -> None:
    fake = fake_bot_api

    async def start(update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        keyboard = InlineKeyboardMarkup(
            [
                [
                    InlineKeyboardButton("Yes", callback_data="pick:yes"),
                    InlineKeyboardButton("No", callback_data="pick:no"),
                ]
            ]
        )
        await update.effective_message.reply_text("Welcome! Pick one:", reply_markup=keyboard)

    async def on_pick(update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None and query.data is not None
        await query.answer("Saved")
        await query.edit_message_text(
            f"You chose <b>{query.data.split(':')[1]}</b>", parse_mode="HTML"
        )

    app.add_handler(CommandHandler("start", start))
    app.add_handler(CallbackQueryHandler(on_pick, pattern=r"^pick:"))
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(poll_interval=0.0, timeout=1)

    fake.user_text(1001, "/start")
    sent = await fake.await_for(lambda: fake.calls_of("sendMessage"))
    assert sent[0]["chat_id"] == 1001
    assert sent[0]["reply_markup"] == {
        "inline_keyboard": [
            [
                {"text": "Yes", "callback_data": "pick:yes"},
                {"text": "No", "callback_data": "pick:no"},
            ]
        ]
    }
    welcome = fake.last_message(1001)
    assert welcome is not None
    assert welcome["text"] == "Welcome! Pick one:"
    assert welcome["buttons"] == [["Yes", "No"]]

    with pytest.raises(AssertionError, match=r"buttons: \[\['Yes', 'No'\]\]"):
        fake.press_button(1001, "Maybe")
    fake.press_button(1001, "No")
    await fake.await_for(lambda: fake.calls_of("editMessageText"))
    await fake.wait_idle()

    assert [c["text"] for c in fake.calls_of("answerCallbackQuery")] == ["Saved"]
    edited = fake.last_message(1001)
    assert edited is not None
    assert edited["message_id"] == welcome["message_id"]
    assert edited["text"] == "You chose no"
    assert edited["entities"] == [{"type": "bold", "offset": 10, "length": 2}]
    assert edited["edited"] is True
    assert edited["reply_markup"] is None  # editing text without reply_markup drops the keyboard
    # getMe, deleteWebhook and getUpdates went through the validator too.
    assert {"getMe", "deleteWebhook", "getUpdates"} <= {name for name, _ in fake.calls}
    assert fake.violations == []


async def test_validator_flags_spec_violations(fake_bot_api: FakeBotAPI, app: AnyApp) -> None:
    fake = fake_bot_api

    async def rejected(call: Awaitable[object]) -> str:
        """Await a call the fake must reject; return the violations it recorded."""
        before = len(fake.violations)
        with pytest.raises(BadRequest):
            await call
        recorded = fake.violations[before:]
        assert recorded, "the fake accepted an invalid request"
        return "\n".join(recorded)

    assert await rejected(app.bot.send_message(1, "x", api_kwargs={"bogus": 1})) == (
        "sendMessage: bogus: unknown field (not a parameter of sendMessage)"
    )

    # 33 characters but 65 UTF-8 bytes: the limit is in bytes.
    too_long = "a" + "é" * 32
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("Go", callback_data=too_long)]])
    assert await rejected(app.bot.send_message(1, "pick", reply_markup=markup)) == (
        "sendMessage: reply_markup.inline_keyboard[0][0].callback_data: must be 1-64 bytes, got 65"
    )

    assert await rejected(app.bot.send_message(1, "a" * 4097)) == (
        "sendMessage: text: must be 1-4096 characters after entities parsing, got 4097"
    )
    # Counted in UTF-16 units: 2049 emoji are 4098 units; markup does not count.
    assert (await rejected(app.bot.send_message(1, "😀" * 2049))).endswith("got 4098")
    await app.bot.send_message(1, "<b>" + "a" * 4096 + "</b>", parse_mode="HTML")

    # Method names are case-insensitive; lowercase also avoids PTB's do_api_request warning.
    assert await rejected(app.bot.do_api_request("sendmessage", api_kwargs={"chat_id": 1})) == (
        "sendMessage: text: missing required field"
    )

    with pytest.raises(BadRequest, match=r"(?i)unknown method"):
        await app.bot.do_api_request("sendTeleport", api_kwargs={"chat_id": 1})
    assert fake.violations[-1].startswith("sendTeleport: unknown method")

    html_problems = await rejected(app.bot.send_message(1, "<b>bold</i> & <br>", parse_mode="HTML"))
    assert "unmatched end tag </i>" in html_problems
    assert "unescaped '&'" in html_problems
    assert "unsupported start tag <br>" in html_problems

    assert "character '.' at offset 4 is reserved" in await rejected(
        app.bot.send_message(1, "Done.", parse_mode="MarkdownV2")
    )
    assert "unsupported parse mode 'html'" in await rejected(
        app.bot.send_message(1, "x", parse_mode="html")
    )

    commands = await rejected(app.bot.set_my_commands([("Start", "Begin"), ("help", "")]))
    assert "commands[0].command: may contain only lowercase" in commands
    assert "commands[1].description: must be 1-256 characters, got 0" in commands

    assert "message_ids: must be 1-100 items, got 101" in await rejected(
        app.bot.delete_messages(1, list(range(1, 102)))
    )
    assert "reply_markup" in await rejected(
        app.bot.send_message(1, "x", api_kwargs={"reply_markup": {"inline_keyboard": "no"}})
    )
    assert "exactly one action field" in await rejected(
        app.bot.send_message(
            1, "x", api_kwargs={"reply_markup": {"inline_keyboard": [[{"text": "bare"}]]}}
        )
    )
    assert await rejected(app.bot.answer_callback_query("123", text="x" * 201)) == (
        "answerCallbackQuery: text: must be 0-200 characters, got 201"
    )

    fake.violations.clear()  # all expected; keeps the fixture's teardown check green

    # Valid requests leave no trace, and HTML is rendered like Telegram renders it.
    await app.bot.send_message(
        1,
        "  <b>ok</b> &amp; <a href='https://example.org'>link</a> &lt;3\n",
        parse_mode="HTML",
    )
    await app.bot.set_my_commands([("start", "Begin"), ("help_me", "Help")])
    # An unknown callback query id is a normal Telegram error, not a violation.
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await app.bot.answer_callback_query("nope", text="x" * 200)
    assert [c.command for c in await app.bot.get_my_commands()] == ["start", "help_me"]
    stored = fake.last_message(1)
    assert stored is not None
    assert stored["text"] == "ok & link <3"
    assert stored["entities"] == [
        {"type": "bold", "offset": 0, "length": 2},
        {"type": "text_link", "offset": 5, "length": 4, "url": "https://example.org"},
    ]
    assert fake.violations == []


async def test_faults_retry_after_500_and_unreachable(
    fake_bot_api: FakeBotAPI, app: AnyApp
) -> None:
    fake = fake_bot_api
    fake.fail_next("sendMessage", retry_after=7)
    with pytest.raises(RetryAfter) as info:
        await app.bot.send_message(5, "hi")
    assert info.value.retry_after == dt.timedelta(seconds=7)
    assert (await app.bot.send_message(5, "hi")).text == "hi"

    fake.fail_next("sendMessage", status=500, count=2)
    for _ in range(2):
        with pytest.raises(NetworkError, match="Internal Server Error"):
            await app.bot.send_message(5, "boom")
    await app.bot.send_message(5, "fine again")

    fake.set_unreachable(True)
    with pytest.raises((NetworkError, TimedOut)):
        await app.bot.send_message(5, "into the void")
    fake.set_unreachable(False)
    await app.bot.send_message(5, "back")

    fake.set_unreachable(0.2)
    with pytest.raises(NetworkError):
        await app.bot.get_me()
    await asyncio.sleep(0.25)
    assert (await app.bot.get_me()).username == "waymark_test_bot"

    assert [m["text"] for m in fake.messages(5)] == ["hi", "fine again", "back"]
    assert fake.violations == []


async def test_delete_edit_and_not_modified(fake_bot_api: FakeBotAPI, app: AnyApp) -> None:
    fake = fake_bot_api
    temp = await app.bot.send_message(7, "temp", protect_content=True)
    listed = fake.messages(7)
    assert [(m["message_id"], m["protect_content"]) for m in listed] == [(temp.message_id, True)]

    assert await app.bot.delete_message(7, temp.message_id) is True
    assert fake.messages(7) == []
    with pytest.raises(BadRequest, match=r"(?i)message to delete not found"):
        await app.bot.delete_message(7, temp.message_id)
    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await app.bot.edit_message_text("x", chat_id=7, message_id=temp.message_id)

    same = await app.bot.send_message(7, "same")
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await app.bot.edit_message_text("same", chat_id=7, message_id=same.message_id)

    # The bot may delete what users sent; deleteMessages skips ids that do not exist.
    fake.user_text(7, "my secret")
    user_message = fake.messages(7, include_user=True)[-1]
    assert user_message["from_bot"] is False
    assert await app.bot.delete_messages(7, [user_message["message_id"], 999]) is True
    assert [m["text"] for m in fake.messages(7, include_user=True)] == ["same"]
    assert fake.violations == []


async def test_update_offsets_and_duplicates(fake_bot_api: FakeBotAPI, app: AnyApp) -> None:
    fake = fake_bot_api
    first = fake.user_text(9, "one")
    second = fake.user_text(9, "two")

    # Unconfirmed updates are returned again; limit is honoured.
    assert [u.update_id for u in await app.bot.get_updates(timeout=0)] == [first, second]
    assert [u.update_id for u in await app.bot.get_updates(timeout=0, limit=1)] == [first]

    # Confirming (offset = last + 1) drops them for good.
    assert await app.bot.get_updates(offset=second + 1, timeout=0) == ()
    third = fake.user_text(9, "three")
    updates = await app.bot.get_updates(offset=second + 1, timeout=0)
    assert [(u.update_id, u.message and u.message.text) for u in updates] == [(third, "three")]

    # An explicitly re-injected id is delivered once more (a duplicate), then confirmed away.
    assert fake.user_text(9, "one (again)", update_id=first) == first
    assert [u.update_id for u in await app.bot.get_updates(offset=third, timeout=0)] == [
        third,
        first,
    ]
    assert await app.bot.get_updates(offset=third + 1, timeout=0) == ()
    assert fake.pending_updates() == []

    # Long polls block at most ~0.5 s when empty.
    started = time.monotonic()
    assert await app.bot.get_updates(offset=third + 1, timeout=5) == ()
    assert 0.3 < time.monotonic() - started < 2.0

    # allowed_updates filters types.
    fake.user_text(9, "text")
    fake.press(9, fake.messages(9, include_user=True)[-1]["message_id"], "data")
    updates = await app.bot.get_updates(timeout=0, allowed_updates=["callback_query"])
    assert [u.callback_query is not None for u in updates] == [True]
    assert fake.violations == []


async def test_media_and_commands_parse_in_ptb(fake_bot_api: FakeBotAPI, app: AnyApp) -> None:
    fake = fake_bot_api
    fake.register_chat(-100123, "supergroup", title="Practitioners")
    for kind in MEDIA_KINDS:
        fake.user_media(55, kind)
    fake.user_text(-100123, "/help extra", chat_type="supergroup", user_id=77)
    updates = await app.bot.get_updates(timeout=0)
    messages = [u.message for u in updates]
    assert all(m is not None for m in messages)
    media = messages[: len(MEDIA_KINDS)]
    assert all(getattr(m, kind) for m, kind in zip(media, MEDIA_KINDS, strict=True))
    group = messages[-1]
    assert group is not None
    assert group.chat.type == "supergroup" and group.chat.title == "Practitioners"
    assert group.entities[0].type == "bot_command" and group.entities[0].length == 5
    assert group.from_user is not None and group.from_user.id == 77

    photo = messages[0]
    assert photo is not None
    file = await photo.photo[-1].get_file()
    data = await file.download_as_bytearray()
    assert len(data) == photo.photo[-1].file_size
    assert fake.violations == []


def test_running_context_manager_and_token_check() -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with FakeBotAPI.running() as fake:
        with opener.open(f"{fake.base_url}123456:ABC/getMe", data=b"") as response:
            payload = json.load(response)
        assert payload["ok"] is True
        assert payload["result"]["username"] == "waymark_test_bot"
        with pytest.raises(urllib.error.HTTPError) as info:
            opener.open(f"{fake.base_url}999:XYZ/getMe", data=b"")
        info.value.close()
        assert info.value.code == 401
        assert fake.violations == ["getMe: bad bot token '999:XYZ' (expected '123456:...')"]


def test_control_endpoints_answer_only_when_enabled() -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with FakeBotAPI.running() as fake:
        # Off by default: an unknown path, answered and recorded like any other.
        with pytest.raises(urllib.error.HTTPError) as info:
            opener.open(f"http://127.0.0.1:{fake.port}{CONTROL_PREFIX}violations")
        info.value.close()
        assert info.value.code == 404
        assert fake.violations == [
            "GET /_fake/violations: not a Bot API path (expected /bot<token>/<method>)"
        ]
    fake = FakeBotAPI(control=True).start()
    try:
        control = f"http://127.0.0.1:{fake.port}{CONTROL_PREFIX}"
        with opener.open(f"{control}callback_ids?count=2", data=b"") as response:
            ids = json.load(response)["ids"]
        assert len(ids) == 2
        for query_id in ids:  # accepted although no press() created them
            request = urllib.request.Request(
                f"{fake.base_url}123456:ABC/answerCallbackQuery",
                data=json.dumps({"callback_query_id": query_id}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with opener.open(request) as response:
                assert json.load(response)["result"] is True
        with pytest.raises(urllib.error.HTTPError) as info:
            opener.open(f"{control}nothing-here")
        info.value.close()
        assert info.value.code == 404
        with opener.open(f"{control}violations") as response:
            assert json.load(response)["violations"] == [
                "GET /_fake/nothing-here: not a Bot API path (expected /bot<token>/<method>)"
            ]
        with opener.open(f"{control}stats") as response:
            stats = json.load(response)
        assert stats["calls"] == 2
        assert stats["cpu_s"] > 0
    finally:
        fake.stop()


def test_serve_runs_the_fake_in_a_child_process_until_stdin_closes() -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.telegram_api", "--port", "0"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        port = json.loads(child.stdout.readline())["port"]
        with opener.open(f"http://127.0.0.1:{port}/bot123456:ABC/getMe", data=b"") as response:
            assert json.load(response)["result"]["username"] == "waymark_test_bot"
        with opener.open(f"http://127.0.0.1:{port}{CONTROL_PREFIX}violations") as response:
            assert json.load(response) == {"violations": []}
        child.stdin.close()
        assert child.wait(timeout=10) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_parse_formatted_html_offsets_are_utf16() -> None:
    parsed = parse_formatted("😀 <i>hi</i> <tg-spoiler>x</tg-spoiler>", "HTML")
    assert parsed.text == "😀 hi x"
    assert parsed.entities == [
        {"type": "italic", "offset": 3, "length": 2},
        {"type": "spoiler", "offset": 6, "length": 1},
    ]
    assert parsed.errors == []
    assert parse_formatted("*bold* and \\. escaped", "MarkdownV2").errors == []
