"""Fixtures for end-to-end tests: the real Application, polling a loopback fake Bot API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.runtime import Runtime, open_runtime
from bot.settings import Settings
from bot.telegram_app import WaymarkBot, build_application
from tests.fakes import telegram_api
from tests.fakes.telegram_api import FakeBotAPI

fake_bot_api = telegram_api.fake_bot_api
TOKEN = "123456:TEST-TOKEN"
USER = 4242
CHAT = 4242


@dataclass
class Harness:
    """A running bot and the fake it talks to, with helpers that act as a person would."""

    fake: FakeBotAPI
    runtime: Runtime
    bot: WaymarkBot
    app: Any
    chat: int = CHAT
    user: int = USER

    @property
    def owner(self) -> str:
        return self.runtime.store.keys.pseudonym("tg", self.user)

    async def idle(self) -> None:
        """Wait until the fake has no pending update, no call came for a moment, and the
        bot is handling nothing."""
        for _ in range(1000):
            await self.fake.wait_idle(quiet=0.1, timeout=10)
            # Always yield: the handlers run on this same event loop.
            await asyncio.sleep(0.02)
            if self.bot.in_flight == 0 and not self.fake.pending_updates():
                return
        raise AssertionError(
            f"the bot did not become idle: in_flight={self.bot.in_flight} pending={self.fake.pending_updates()}"
        )

    async def send(self, text: str, **kw: Any) -> int:
        update_id = self.fake.user_text(self.chat, text, user_id=self.user, **kw)
        await self.idle()
        return update_id

    async def press(self, label: str | tuple[int, int], **kw: Any) -> int:
        update_id = self.fake.press_button(self.chat, label, user_id=self.user, **kw)
        await self.idle()
        return update_id

    def last(self) -> dict[str, Any]:
        message = self.fake.last_message(self.chat)
        assert message is not None
        return message

    def texts(self) -> list[str]:
        return [m["text"] for m in self.fake.messages(self.chat)]

    def labels(self) -> list[str]:
        markup = self.last().get("reply_markup") or {}
        return [b["text"] for row in markup.get("inline_keyboard", []) for b in row]

    def state(self) -> Any:
        found = self.runtime.service.current(self.owner)
        return None if found is None else found[1]

    async def play(
        self, choose: Any = None, typed: str = "12", limit: int = 200, language: str = "en"
    ) -> None:
        """Answer until the flow ends: the first answer button, or ``choose(step, labels)``."""
        from bot.i18n import Translator

        tr = Translator(language)
        back, skip, done = tr.gettext("Back"), tr.gettext("Skip"), tr.gettext("Done")
        for _ in range(limit):
            state = self.state()
            if state is None:
                return
            labels = self.labels()
            answer = [
                lab
                for lab in labels
                if not lab.startswith((back, skip)) and lab not in (back, skip)
            ]
            pick = choose(state.current, answer) if choose else None
            done_label = next((lab for lab in answer if lab.startswith(done)), None)
            if pick is None and done_label is not None:
                # Multi choice: tick the first option once, then submit.
                ticked = any(label.startswith("✅") for label in answer)
                pick = done_label if ticked else answer[0]
            if pick is None and answer:
                pick = answer[0]
            if pick is None:
                await self.send(typed)
            else:
                await self.press(pick)
        raise AssertionError("the flow did not end")


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Extra settings for the harness; a test module overrides this fixture."""
    return {}


@pytest.fixture
async def harness(
    fake_bot_api: FakeBotAPI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings_overrides: dict[str, Any],
) -> AsyncIterator[Harness]:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    settings = Settings(
        bot_token=TOKEN,
        telegram_base_url=fake_bot_api.base_url,
        data_dir=tmp_path / "data",
        purge_interval=3600,
        **settings_overrides,
    )
    runtime = open_runtime(settings)
    app, bot = build_application(runtime)
    async with app:
        await bot.start_background(app)
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0.0, timeout=1)
        await app.start()
        try:
            yield Harness(fake_bot_api, runtime, bot, app)
        finally:
            await app.updater.stop()
            await app.stop()
            await bot.stop_background(app)
    runtime.close()
