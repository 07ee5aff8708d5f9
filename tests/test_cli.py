"""The `waymark` command end to end, as a person runs it: real processes, real files."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WAYMARK = [sys.executable, "-m", "bot"]

# demo_screening answered through every kind, with a typed free-text remark.
SECRET = "Mr Tanaka keeps her at the karaoke bar"
ANSWERS = ["1", "1", "2", "s", "1", "3", "1,2", SECRET, "2", "3", "2", "Move tonight"]


def run(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("WAYMARK_")} | env
    return subprocess.run(
        [*WAYMARK, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def data_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"WAYMARK_DATA_DIR": str(tmp_path / "data"), **extra}


def all_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file())


def test_console_screening_leaves_no_plaintext(tmp_path: Path) -> None:
    """A console screening stores answers only as ciphertext: no text, label or id in any file."""
    env = data_env(tmp_path)
    result = run(["console", "demo_screening"], env, "\n".join(ANSWERS) + "\n")
    assert result.returncode == 0, result.stderr
    assert "Strong indicators" in result.stdout
    assert "does not identify anyone as a victim" in result.stdout
    assert "Created a new key file" in result.stderr
    blob = all_bytes(tmp_path / "data")  # the database, its WAL and SHM files, the key file
    user = os.environ.get("USER", "root")
    for needle in (
        SECRET,
        "Tanaka",
        "karaoke",
        "Move tonight",
        "Only with permission",
        "Signs of physical abuse",
        "never",
        "long_hours",
        "may_be_child",
        "documents",
        f"console\x00{user}",
    ):
        assert needle.encode() not in blob, needle
    db = sqlite3.connect(tmp_path / "data" / "waymark.db")
    sessions, answers, keys = (
        db.execute(f"select count(*) from {t}").fetchone()[0]
        for t in ("sessions", "answers", "data_keys")
    )
    db.close()
    assert (sessions, keys) == (1, 1) and answers >= 6


def test_retention_cap_then_purge_removes_answers_and_keys(tmp_path: Path) -> None:
    """With WAYMARK_MAX_RETENTION=2s, after expiry and `waymark purge` nothing of it remains."""
    env = data_env(tmp_path, WAYMARK_MAX_RETENTION="2s")
    assert run(["console", "demo_screening"], env, "\n".join(ANSWERS) + "\n").returncode == 0
    time.sleep(2.5)
    result = run(["purge"], env)
    assert result.returncode == 0, result.stderr
    assert "purged" in result.stdout and "1 sessions, 1 data keys" in result.stdout
    db = sqlite3.connect(tmp_path / "data" / "waymark.db")
    remaining = [
        db.execute(f"select count(*) from {t}").fetchone()[0]
        for t in ("sessions", "answers", "data_keys")
    ]
    db.close()
    assert remaining == [0, 0, 0]
    again = run(["purge"], env)
    assert "purged 0 answers, 0 sessions, 0 data keys, 0 team rows" in again.stdout


def test_console_resumes_after_end_of_input(tmp_path: Path) -> None:
    """Input that stops mid-flow pauses it; the next run resumes at the same question."""
    env = data_env(tmp_path)
    first = run(["console", "demo_screening"], env, "1\n1\n")
    assert "Paused" in first.stdout
    second = run(["console", "demo_screening"], env, "")
    assert "Resuming where you left off" in second.stdout
    assert "Could the person be under 18" in second.stdout.split("Resuming")[1]


def test_bad_console_input_loses_nothing(tmp_path: Path) -> None:
    """A wrong answer gets a clear message and the same question again."""
    env = data_env(tmp_path)
    out = run(["console", "demo_screening"], env, "1\n1\n9\n2\n200\n").stdout
    assert "Please type the number of an option" in out
    assert "Please give a value from 0 to 120" in out


def _hash(directory: Path) -> str:
    return hashlib.sha256(all_bytes(directory)).hexdigest()


def test_missing_key_file_stops_with_a_clear_error_and_changes_nothing(tmp_path: Path) -> None:
    """An existing database without its key: exit 2, a message naming the file, no change."""
    env = data_env(tmp_path)
    run(["console", "demo_screening"], env, "1\n1\n")
    (tmp_path / "data" / "waymark.key").rename(tmp_path / "elsewhere.key")
    before = _hash(tmp_path / "data")
    result = run(["console", "demo_screening"], env, "1\n")
    assert result.returncode == 2
    assert "key file" in result.stderr and "is missing" in result.stderr
    assert "Nothing was changed" in result.stderr
    assert _hash(tmp_path / "data") == before
    assert not (tmp_path / "data" / "waymark.key").exists()


def test_wrong_key_file_is_refused(tmp_path: Path) -> None:
    """A key file from another deployment is refused."""
    env = data_env(tmp_path)
    run(["console", "demo_screening"], env, "1\n")
    other = tmp_path / "other"
    run(["purge"], {"WAYMARK_DATA_DIR": str(other)})
    result = run(["purge"], env | {"WAYMARK_KEY_FILE": str(other / "waymark.key")})
    assert result.returncode == 2
    assert "does not belong to this database" in result.stderr


def test_insecure_key_file_is_refused(tmp_path: Path) -> None:
    """A key file others can read stops Waymark with the chmod to run."""
    env = data_env(tmp_path)
    run(["purge"], env)
    (tmp_path / "data" / "waymark.key").chmod(0o644)
    result = run(["purge"], env)
    assert result.returncode == 2 and "chmod 600" in result.stderr


def test_missing_database_server_is_a_clear_error(tmp_path: Path) -> None:
    """An unreachable database stops Waymark with a message, not a traceback."""
    env = data_env(tmp_path, WAYMARK_DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none")
    result = run(["purge"], env)
    assert result.returncode == 2
    assert "cannot open the database" in result.stderr
    assert "Traceback" not in result.stderr


def test_key_rotation_keeps_data_readable(tmp_path: Path) -> None:
    """`waymark keys rotate` rewraps every data key; the session still resumes after it."""
    env = data_env(tmp_path)
    run(["console", "demo_screening"], env, "1\n1\n")
    before = (tmp_path / "data" / "waymark.key").read_text()
    result = run(["keys", "rotate"], env)
    assert result.returncode == 0, result.stderr
    assert "rewrapped 1 data keys" in result.stdout
    assert (tmp_path / "data" / "waymark.key").read_text() != before
    assert oct((tmp_path / "data" / "waymark.key").stat().st_mode & 0o777) == "0o600"
    assert "Resuming" in run(["console", "demo_screening"], env, "").stdout


def test_flows_check_passes_on_shipped_flows() -> None:
    """The shipped flows pass `waymark flows check`."""
    result = run(["flows", "check"], {})
    assert result.returncode == 0, result.stdout
    assert "flow(s) OK" in result.stdout


def test_flows_check_rejects_a_broken_flow_with_file_line_code(tmp_path: Path) -> None:
    """A broken flow: exit 1 and file:line: [CODE] for each problem."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "spec_version: 1\nid: broken\nversion: 1\nkind: info\ntitle: B\n"
        "sections:\n  - id: s\n    title: S\n    steps:\n"
        "      - {id: a, type: info, text: A, next: nowhere}\n"
        "outcomes:\n  - {id: done, title: D, text: T}\n"
    )
    result = run(["flows", "check", str(broken)], {})
    assert result.returncode == 1
    assert f"{broken}:10: sections[0].steps[0].next: [REF_001]" in result.stdout
    assert f"{broken}:10: sections[0].steps[0].id: [SOURCE_001]" in result.stdout


def test_unknown_flow_is_a_clear_error(tmp_path: Path) -> None:
    """Asking for a flow that does not exist lists the ones that do."""
    result = run(["console", "nope"], data_env(tmp_path))
    assert result.returncode == 2 and "demo_screening" in result.stderr


def test_no_token_starts_the_console_with_a_notice(tmp_path: Path) -> None:
    """`waymark` without a bot token plays in the console and says so."""
    result = run([], data_env(tmp_path), "1\n")
    assert result.returncode == 0
    assert "no WAYMARK_BOT_TOKEN is set" in result.stderr
    assert "Choose a flow" in result.stdout


@pytest.mark.parametrize("args", [["--help"], ["flows", "--help"]])
def test_help(args: list[str]) -> None:
    """The command documents itself."""
    assert run(args, {}).returncode == 0


def test_export_writes_suppressed_csv(tmp_path: Path) -> None:
    """`waymark export --team T --format csv` writes the suppressed aggregates."""
    from datetime import UTC, datetime

    from bot.runtime import open_runtime
    from bot.settings import Settings
    from storage.teams import Teams

    runtime = open_runtime(Settings(data_dir=tmp_path / "data"))
    teams = Teams(runtime.store)
    team = teams.create_team("North", now=datetime.now(UTC))
    today = datetime.now(UTC).date()
    teams.add_counts(
        team, today, {"screening.tier.none": 14, "screening.tier.strong": 3, "consent.given": 12}
    )
    runtime.close()
    env = data_env(tmp_path)
    assert team in run(["teams"], env).stdout
    # "=": a team id may begin with "-", which argparse would take for an option.
    result = run(["export", f"--team={team}", "--format", "csv"], env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "metric,value"
    assert "screenings.strong,<11" in lines and "screenings.none,<11" in lines  # complementary
    assert "consent.given,12" in lines
    assert run(["export", "--team", "nope", "--format", "csv"], env).returncode == 2
