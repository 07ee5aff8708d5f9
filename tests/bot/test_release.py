"""The chat lock (PostgreSQL) is released after the reply, off its path, and order is kept.

A release made slow on purpose must not hold up the reply; the bot counts as busy until the
release has run; and the chat's next press, arriving while the release is still pending,
waits for it and is answered in turn.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from bot.telegram_app import WaymarkBot
from storage import locks
from storage.locks import try_exclusive
from tests.bot.conftest import Harness

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

SLOW = 0.4


@pytest.fixture
def settings_overrides(pg_url: str) -> dict[str, Any]:
    return {"database_url": pg_url}


async def test_release_is_off_the_reply_path_and_order_is_kept(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await harness.send("/screen")
    await harness.press("Red-flag observation")
    edits_before = len(harness.fake.calls_of("editMessageText"))
    seen: list[tuple[int, float]] = []
    original = locks.Lease.release

    def slow_release(self: locks.Lease) -> None:
        # What the person saw when the release began: the reply must already be there.
        seen.append((len(harness.fake.calls_of("editMessageText")), time.monotonic()))
        time.sleep(SLOW)
        original(self)
        released.append(time.monotonic())

    monkeypatch.setattr(locks.Lease, "release", slow_release)
    handled: list[float] = []
    released: list[float] = []
    original_handle = WaymarkBot._handle

    async def timed_handle(self: WaymarkBot, update: Any) -> None:
        await original_handle(self, update)
        handled.append(time.monotonic())

    monkeypatch.setattr(WaymarkBot, "_handle", timed_handle)
    started = time.monotonic()
    # Two presses of the same chat, the second while the first's release is pending.
    harness.fake.press_button(harness.chat, "Continue", user_id=harness.user)
    while len(harness.fake.calls_of("editMessageText")) == edits_before:
        assert time.monotonic() - started < 10, "no reply"
        await asyncio.sleep(0.005)  # the bot runs on this loop
    replied = time.monotonic()
    first = harness.last()
    assert "2/" in first["text"]
    harness.fake.press_button(harness.chat, "Observed", user_id=harness.user)
    while len(harness.fake.calls_of("editMessageText")) < edits_before + 2:
        assert time.monotonic() - started < 10, "no second reply"
        await asyncio.sleep(0.005)
    second_reply = time.monotonic()
    await harness.idle()
    done = time.monotonic()

    # The first reply did not wait for its release, and neither did its update's handling:
    # the handler was done well before its release.
    assert replied - started < SLOW
    assert handled[0] < released[0] - SLOW / 2
    # Each release began after its press's reply was sent.
    assert [count for count, _ in seen[:2]] == [edits_before + 1, edits_before + 2]
    # Order: the second press waited in the database for the first press's lock, which
    # only its release gave up.
    assert second_reply > released[0]
    # Idle means released: both slow releases had run before the bot counted as idle.
    assert len(released) >= 2 and done >= released[1]
    assert harness.bot.in_flight == 0
    assert "3/" in harness.last()["text"]
    state = harness.state()
    assert state is not None and state.seq >= 3
    # And no chat lock is left held, seen from another database session.
    other = create_engine(harness.runtime.store.engine.url, poolclass=NullPool)
    try:
        name = f"chat:{harness.bot.owner_of(harness.chat)}"
        with try_exclusive(other, name) as free:
            assert free
    finally:
        other.dispose()
