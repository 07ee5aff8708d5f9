"""Scripted faults, each ending with a check: answers lost, answers doubled, alerts doubled.

A real `waymark run` process polls the loopback fake Bot API while responders of one team
play the red-flag screening by buttons. Each scenario injects one fault, lets the people
carry on (pressing again when a press went unanswered, as a person would), and then reads
the database: every screening must hold one kept answer per question, and the supervisor
must have received exactly one alert per screening.

    .venv/bin/python bench/faults.py [--only NAME]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for _name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
    os.environ.pop(_name, None)

from sqlalchemy import create_engine, text

from bot.runtime import open_runtime
from bot.settings import Settings
from tests.fakes.telegram_api import FakeBotAPI
from tests.helpers import seed_team

TOKEN = "123456:FAULTS"
#: The token's secret part: it must appear nowhere in a bot's log.
SECRET = TOKEN.split(":")[1]
SUPERVISOR = 700
PG = os.environ.get(
    "WAYMARK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
DONE = "does not identify anyone"


class Scenario:
    def __init__(
        self, name: str, fake: FakeBotAPI, responders: int, db_url: str | None, data: Path
    ) -> None:
        self.name = name
        self.fake = fake
        self.chats = [800 + i for i in range(responders)]
        self.data = data
        self.env = {"WAYMARK_DATABASE_URL": db_url} if db_url else {}
        self.log = data.parent / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def seed(self) -> None:
        seed_team(
            self.data,
            self.name,
            SUPERVISOR,
            self.chats,
            database_url=self.env.get("WAYMARK_DATABASE_URL"),
        )

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WAYMARK_")}
        env |= {
            "WAYMARK_BOT_TOKEN": TOKEN,
            "WAYMARK_TELEGRAM_BASE_URL": self.fake.base_url,
            "WAYMARK_DATA_DIR": str(self.data),
            "WAYMARK_OUTBOX_INTERVAL": "0.3",
            "PTB_TIMEDELTA": "true",
            "NO_PROXY": "127.0.0.1,localhost",
            **self.env,
        }
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bot", "run"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def settle(self, quiet: float = 0.5, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        seen, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            n = len([c for c in self.fake.calls if c[0] != "getUpdates"])
            if n != seen:
                seen, since = n, time.monotonic()
            elif time.monotonic() - since >= quiet and not self.fake.pending_updates():
                return
            time.sleep(0.05)

    def step(self) -> bool:
        """Every unfinished person presses the first button of their latest message."""
        busy = False
        for chat in self.chats:
            last = self.fake.last_message(chat)
            if last is not None and DONE in last["text"]:
                continue
            busy = True
            try:
                if last is None or not last.get("reply_markup"):
                    self.fake.user_text(chat, "/screen", user_id=chat)
                elif "Red-flag observation" in str(last["reply_markup"]):
                    self.fake.press_button(chat, "Red-flag observation", user_id=chat)
                else:
                    self.fake.press_button(chat, (0, 0), user_id=chat)
            except AssertionError:
                self.fake.user_text(chat, "/screen", user_id=chat)
        return busy

    def play(self, rounds: int = 60, during: object = None) -> None:
        for n in range(rounds):
            if not self.step():
                return
            if callable(during):
                during(n)
            self.settle()

    def verify(self) -> str:
        runtime = open_runtime(
            Settings(data_dir=self.data, database_url=self.env.get("WAYMARK_DATABASE_URL"))
        )
        now = datetime.now(UTC)
        flow = runtime.flows["screening_red_flags"]
        kept = {s.id for s in flow.flow.steps() if s.store.value != "none"}
        complete = doubled = 0
        for chat in self.chats:
            sessions = runtime.store.sessions_of(runtime.store.keys.pseudonym("tg", chat), now=now)
            finished = [s for s in sessions if s.status == "ended"]
            for s in finished:
                answers = runtime.store.answers(s.id, now=now)
                # Answers are keyed by question: a double is impossible by construction;
                # an unknown key would be a corruption.
                doubled += len(set(answers) - kept)
                complete += len(answers) >= 9
        runtime.close()
        alerts = [m for m in self.fake.messages(SUPERVISOR) if "Screening alert" in m["text"]]
        screenings = sum(
            1 for c in self.chats if DONE in (self.fake.last_message(c) or {}).get("text", "")
        )
        log = self.log.read_text(errors="replace") if self.log.exists() else ""
        errors = sorted(
            {
                line.split(": ", 2)[-1][:90]
                for line in log.splitlines()
                if " ERROR " in line or " WARNING " in line
            }
        )[:4]
        lost = len(self.chats) - complete
        # The whole log, tracebacks included: the bot token must not appear anywhere in it.
        leaked = SECRET in log
        ok = (
            lost == 0
            and doubled == 0
            and len(alerts) == screenings == len(self.chats)
            and not leaked
        )
        return (
            f"| {self.name} | {'pass' if ok else 'FAIL'} | {screenings}/{len(self.chats)} | "
            f"{lost} | {doubled} | {len(alerts)} | {'yes' if leaked else 'no'} | "
            f"{'; '.join(errors) or '—'} |"
        )


def run(name: str, responders: int, db: str, fault: object, tiny_disk: bool = False) -> str:
    with tempfile.TemporaryDirectory() as tmp, FakeBotAPI.running() as fake:
        if tiny_disk:
            # A real filesystem that fills up: an 8 MB tmpfs for the data directory.
            (Path(tmp) / "data").mkdir()
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(Path(tmp) / "data")],
                check=True,
            )
        db_url = None
        if db == "postgres":
            import secrets

            schema = f"faults_{secrets.token_hex(4)}"
            admin = create_engine(PG)
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            db_url = f"{PG}?options=-csearch_path%3D{schema}"
        scenario = Scenario(name, fake, responders, db_url, Path(tmp) / "data")
        scenario.seed()
        scenario.start()
        try:
            fake.wait_for(lambda: fake.calls_of("getUpdates"), timeout=60)
            fault(scenario)  # type: ignore[operator]
            scenario.play()
            time.sleep(2)
            scenario.settle()
        finally:
            scenario.stop()
        fake.violations.clear()
        try:
            return scenario.verify()
        finally:
            if tiny_disk:
                subprocess.run(["umount", str(Path(tmp) / "data")], check=False)


def kill_under_load(s: Scenario) -> None:
    def during(n: int) -> None:
        if n == 4:
            s.step()  # presses in flight when the kill lands
            time.sleep(0.05)
            s.kill()
            s.start()

    s.play(rounds=6, during=during)


def postgres_restart(s: Scenario) -> None:
    def during(n: int) -> None:
        if n == 4:
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "restart"],
                check=True,
                capture_output=True,
            )

    s.play(rounds=6, during=during)


def too_many_requests(s: Scenario, seconds: float = 60) -> None:
    stop = time.monotonic() + seconds

    def hammer() -> None:
        while time.monotonic() < stop:
            s.fake.fail_next("*", status=429, retry_after=1, count=3)
            time.sleep(1)

    thread = threading.Thread(target=hammer)
    thread.start()
    while time.monotonic() < stop:
        s.step()
        s.settle(quiet=1.0, timeout=10)
    thread.join()


def unreachable(s: Scenario) -> None:
    s.play(rounds=3)
    s.fake.set_unreachable(30)
    for _ in range(3):
        s.step()
        time.sleep(2)
    time.sleep(26)
    s.fake.set_unreachable(False)


def full_disk(s: Scenario) -> None:
    s.play(rounds=3)
    filler = s.data / "filler"
    free = shutil.disk_usage(s.data).free
    filler.write_bytes(b"\0" * max(0, free - 64 * 1024))
    for _ in range(4):  # people keep pressing while the disk is full
        s.step()
        s.settle(quiet=1.0, timeout=20)
    filler.unlink()


def key_file_missing() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        open_runtime(Settings(data_dir=data)).close()
        (data / "waymark.key").unlink()
        env = {k: v for k, v in os.environ.items() if not k.startswith("WAYMARK_")}
        env |= {"WAYMARK_DATA_DIR": str(data), "WAYMARK_BOT_TOKEN": TOKEN}
        before = (data / "waymark.db").read_bytes()
        result = subprocess.run(
            [sys.executable, "-m", "bot", "run"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        unchanged = (data / "waymark.db").read_bytes() == before
        message = result.stderr.strip().splitlines()[-1][:120]
        leaked = SECRET in result.stderr + result.stdout
        ok = result.returncode == 2 and unchanged and "is missing" in message and not leaked
        return (
            f"| key file missing at start | {'pass' if ok else 'FAIL'} | — | 0 | 0 | — | "
            f"{'yes' if leaked else 'no'} | exit {result.returncode}, database unchanged: "
            f'{unchanged}; "{message}" |'
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default=None)
    args = parser.parse_args()
    scenarios = {
        "kill -9 under load (SQLite)": lambda: run("kill9", 8, "sqlite", kill_under_load),
        "PostgreSQL restarted under load": lambda: run(
            "pgrestart", 8, "postgres", postgres_restart
        ),
        "Bot API answers 429 for a minute": lambda: run("429", 4, "sqlite", too_many_requests),
        "Bot API unreachable for 30 s": lambda: run("unreachable", 4, "sqlite", unreachable),
        "full disk on SQLite": lambda: run("fulldisk", 4, "sqlite", full_disk, tiny_disk=True),
        "key file missing at start": key_file_missing,
    }
    print(f"# fault runs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(
        "| scenario | result | screenings finished | answers lost | answers doubled "
        "| alerts sent | token in log | log (first lines) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, scenario in scenarios.items():
        if args.only and args.only not in name:
            continue
        print(
            scenario()
            .replace("| kill9 |", f"| {name} |")
            .replace("| pgrestart |", f"| {name} |")
            .replace("| 429 |", f"| {name} |")
            .replace("| unreachable |", f"| {name} |"),
            flush=True,
        )


if __name__ == "__main__":
    main()
