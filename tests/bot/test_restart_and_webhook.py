"""A real `waymark run` process: killed with SIGKILL mid-flow and restarted; webhook mode."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storage.crypto import KeyRing
from storage.db import make_engine
from storage.repository import Store
from tests.bot.conftest import TOKEN
from tests.fakes.telegram_api import FakeBotAPI
from tests.helpers import seed_team

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
CHAT = 777


def start_bot(fake: FakeBotAPI, data: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("WAYMARK_")}
    full |= {
        "WAYMARK_BOT_TOKEN": TOKEN,
        "WAYMARK_TELEGRAM_BASE_URL": fake.base_url,
        "WAYMARK_DATA_DIR": str(data),
        "PTB_TIMEDELTA": "true",
        "NO_PROXY": "127.0.0.1,localhost",
        **env,
    }
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        full.pop(name, None)
    data.mkdir(parents=True, exist_ok=True)
    with (data.parent / "bot.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "bot", "run", *args],
            cwd=ROOT,
            env=full,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def settle(fake: FakeBotAPI, quiet: float = 0.4, timeout: float = 15) -> None:
    """Wait until no new call reached the fake for ``quiet`` seconds (getUpdates excluded)."""
    deadline = time.monotonic() + timeout
    seen = -1
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        count = len([c for c in fake.calls if c[0] != "getUpdates"]) + len(fake.pending_updates())
        if count != seen:
            seen, stable_since = count, time.monotonic()
        elif time.monotonic() - stable_since >= quiet and not fake.pending_updates():
            return
        time.sleep(0.05)
    raise AssertionError("the bot did not settle")


@pytest.fixture
def fake() -> Iterator[FakeBotAPI]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        os.environ.pop(name, None)
    api = FakeBotAPI().start()
    yield api
    api.stop()
    assert api.violations == []


def stop(proc: subprocess.Popen[bytes], log: Path) -> str:
    """SIGTERM (a graceful stop), then the process's log."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return log.read_text(errors="replace")


def answers_of(data: Path) -> dict[str, Any]:
    engine = make_engine(f"sqlite:///{data / 'waymark.db'}")
    store = Store(engine, KeyRing.load(data / "waymark.key"))
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    sessions = store.sessions_of(store.keys.pseudonym("tg", CHAT), now=now)
    result = {s.id: store.answers(s.id, now=now) for s in sessions}
    engine.dispose()
    assert len(result) == 1
    return next(iter(result.values()))


def test_sigkill_mid_flow_then_restart_loses_and_doubles_nothing(
    fake: FakeBotAPI, tmp_path: Path
) -> None:
    """Kill -9 between (and during) answers; after a restart the flow goes on where it was."""
    data = tmp_path / "data"
    proc = start_bot(fake, data)
    try:
        fake.wait_for(lambda: fake.calls_of("getUpdates"), timeout=30)
        fake.user_text(CHAT, "/screen", user_id=CHAT)
        settle(fake)
        fake.press_button(CHAT, "Red-flag observation", user_id=CHAT)
        settle(fake)
        for _ in range(4):  # intro, then three red flags: "Observed"
            fake.press_button(CHAT, (0, 0), user_id=CHAT)
            settle(fake)
        # One more press, and the kill right behind it: it may or may not have been applied.
        fake.press_button(CHAT, (0, 0), user_id=CHAT)
        time.sleep(0.05)
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    before = answers_of(data)
    assert len(before) in (3, 4)
    proc = start_bot(fake, data)
    try:
        settle(fake, timeout=30)
        for _ in range(40):
            last = fake.last_message(CHAT)
            if last is None or "does not identify anyone" in last["text"]:
                break
            fake.press_button(CHAT, (0, 0), user_id=CHAT)
            settle(fake)
        texts = "\n".join(m["text"] for m in fake.messages(CHAT))
        assert "does not identify anyone as a victim" in texts
    finally:
        log = stop(proc, tmp_path / "bot.log")
    after = answers_of(data)
    # Every red flag answered exactly once (answers are keyed by question: no doubles).
    flags = {k for k in after if k not in ("danger_now",)}
    assert len(flags) >= 9
    assert all(after[k] == before[k] for k in before)
    assert TOKEN not in log and str(CHAT) not in log


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_webhook_checks_the_secret(fake: FakeBotAPI, tmp_path: Path) -> None:
    """Webhook mode sets the webhook with a secret, refuses a wrong one, serves a right one."""
    port = free_port()
    proc = start_bot(
        fake,
        tmp_path / "data",
        "--webhook",
        WAYMARK_WEBHOOK_URL="https://example.invalid/tg/hook",
        WAYMARK_WEBHOOK_SECRET="s3cret-token",
        WAYMARK_WEBHOOK_PORT=str(port),
    )
    try:
        fake.wait_for(lambda: fake.calls_of("setWebhook"), timeout=30)
        call = fake.calls_of("setWebhook")[0]
        assert call["secret_token"] == "s3cret-token"
        # post_init ran in webhook mode too: commands registered, background loops started.
        fake.wait_for(lambda: fake.calls_of("setMyCommands"), timeout=15)
        update = {
            "update_id": 1,
            "message": {
                "message_id": 1,
                "date": int(time.time()),
                "chat": {"id": CHAT, "type": "private"},
                "from": {"id": CHAT, "is_bot": False, "first_name": "T"},
                "text": "/help",
                "entities": [{"type": "bot_command", "offset": 0, "length": 5}],
            },
        }
        import json

        def post(secret: str | None) -> int:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/tg/hook",
                data=json.dumps(update).encode(),
                headers={"Content-Type": "application/json"}
                | ({"X-Telegram-Bot-Api-Secret-Token": secret} if secret else {}),
            )
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            try:
                with opener.open(request, timeout=10) as response:
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                return int(exc.code)

        assert post("wrong") == 403
        assert post(None) == 403
        time.sleep(0.5)
        assert fake.messages(CHAT) == []
        assert post("s3cret-token") == 200
        fake.wait_for(lambda: fake.messages(CHAT), timeout=15)
        assert "/forget" in fake.messages(CHAT)[-1]["text"]
    finally:
        log = stop(proc, tmp_path / "bot.log")
    assert proc.returncode == 0, log
    assert "s3cret-token" not in log and TOKEN not in log


SUPERVISOR = 888


def test_alert_survives_sigkill_before_send_and_is_sent_once(
    fake: FakeBotAPI, tmp_path: Path
) -> None:
    """The alert is written with the screening's last answer; a kill -9 before the send
    delays it, and after the restart it is sent exactly once."""
    data = tmp_path / "data"
    seed_team(data, "Night shift", SUPERVISOR, [CHAT])
    # The first process never reaches its sender (it runs once at start, then every hour).
    proc = start_bot(fake, data, WAYMARK_OUTBOX_INTERVAL="3600")
    try:
        fake.wait_for(lambda: fake.calls_of("getUpdates"), timeout=30)
        fake.user_text(CHAT, "/screen", user_id=CHAT)
        settle(fake)
        fake.press_button(CHAT, "Red-flag observation", user_id=CHAT)
        settle(fake)
        for _ in range(40):
            last = fake.last_message(CHAT)
            if last is not None and "does not identify anyone" in last["text"]:
                break
            fake.press_button(CHAT, (0, 0), user_id=CHAT)
            settle(fake)
        assert fake.messages(SUPERVISOR) == []
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    proc = start_bot(fake, data, WAYMARK_OUTBOX_INTERVAL="0.2")
    try:
        fake.wait_for(lambda: fake.messages(SUPERVISOR), timeout=30)
        time.sleep(2)
        alerts = [m for m in fake.messages(SUPERVISOR) if "Screening alert" in m["text"]]
        assert len(alerts) == 1
    finally:
        stop(proc, tmp_path / "bot.log")
