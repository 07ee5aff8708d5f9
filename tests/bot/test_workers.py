"""Several `waymark run --webhook` workers on one PostgreSQL: nothing lost, doubled or
reordered, each alert sent once, one purge at a time."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from storage.locks import try_exclusive
from tests.bot.test_restart_and_webhook import fake, free_port, start_bot, stop  # noqa: F401
from tests.fakes.telegram_api import FakeBotAPI
from tests.helpers import seed_team

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]
SECRET = "worker-secret"
SUPERVISOR = 900
RESPONDERS = [901, 902, 903, 904, 905, 906]


def post(port: int, update: dict[str, Any]) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/hook",
        data=json.dumps(update).encode(),
        headers={"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": SECRET},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def quiet(api: FakeBotAPI, seconds: float = 0.6, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    count, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = len(api.calls)
        if now != count:
            count, since = now, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return
        time.sleep(0.05)
    raise AssertionError("the workers did not settle")


def test_two_workers_share_one_postgres(fake: FakeBotAPI, pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    data = tmp_path / "data"
    env = {"WAYMARK_DATABASE_URL": pg_url}
    seed_team(data, "Workers", SUPERVISOR, RESPONDERS, database_url=pg_url)
    ports = [free_port(), free_port()]
    workers = [
        start_bot(
            fake,
            data,
            "--webhook",
            WAYMARK_WEBHOOK_URL="https://example.invalid/hook",
            WAYMARK_WEBHOOK_SECRET=SECRET,
            WAYMARK_WEBHOOK_PORT=str(port),
            WAYMARK_OUTBOX_INTERVAL="0.3",
            **env,
        )
        for port in ports
    ]
    turn = 0
    try:
        fake.wait_for(lambda: len(fake.calls_of("setWebhook")) == 2, timeout=60)

        def deliver(updates: list[dict[str, Any]]) -> None:
            nonlocal turn
            jobs = []
            with ThreadPoolExecutor(max_workers=16) as pool:
                for update in updates:
                    # Spread like a load balancer: every other update to the other worker.
                    jobs.append(pool.submit(post, ports[turn % 2], update))
                    turn += 1
            assert all(j.result() == 200 for j in jobs)

        for chat in RESPONDERS:
            fake.user_text(chat, "/screen", user_id=chat)
        deliver(fake.take_updates())
        quiet(fake)
        for chat in RESPONDERS:
            fake.press_button(chat, "Red-flag observation", user_id=chat)
        deliver(fake.take_updates())
        quiet(fake)
        for round_number in range(30):
            active = [
                c
                for c in RESPONDERS
                if "does not identify anyone" not in (fake.last_message(c) or {}).get("text", "")
            ]
            if not active:
                break
            for chat in active:
                fake.press_button(chat, (0, 0), user_id=chat)
                if round_number % 3 == 0:
                    # A double tap, the two presses landing on different workers.
                    fake.press_button(chat, (0, 0), user_id=chat)
            deliver(fake.take_updates())
            quiet(fake)
        for chat in RESPONDERS:
            assert "does not identify anyone" in fake.last_message(chat)["text"], chat
        time.sleep(2)
        quiet(fake)
    finally:
        logs = [stop(w, tmp_path / "bot.log") for w in workers]
    alerts = [m for m in fake.messages(SUPERVISOR) if "Screening alert" in m["text"]]
    assert len(alerts) == len(RESPONDERS), [a["text"][:40] for a in alerts]
    # Every screening: exactly one session per responder, one kept answer per question.
    from bot.runtime import open_runtime
    from bot.settings import Settings

    runtime = open_runtime(Settings(data_dir=data, database_url=pg_url))
    now = datetime.now(UTC)
    flow = runtime.flows["screening_red_flags"]
    kept = [s for s in flow.flow.steps() if s.store.value != "none"]
    for chat in RESPONDERS:
        sessions = runtime.store.sessions_of(runtime.store.keys.pseudonym("tg", chat), now=now)
        assert len(sessions) == 1
        answers = runtime.store.answers(sessions[0].id, now=now)
        assert set(answers) <= {s.id for s in kept}
        assert len(answers) >= 9
    runtime.close()
    assert "Traceback" not in logs[-1]


def test_one_purge_at_a_time(pg_url: str) -> None:
    """While one worker holds the purge lock, another's try fails; then it succeeds."""
    engine = create_engine(pg_url)
    with try_exclusive(engine, "purge") as first:
        assert first
        with try_exclusive(engine, "purge") as second:
            assert not second
    with try_exclusive(engine, "purge") as again:
        assert again
    engine.dispose()
