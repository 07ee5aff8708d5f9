"""The ``waymark`` command (also ``python -m bot``).

waymark                      run: the bot with WAYMARK_BOT_TOKEN, else the console player
waymark run [--webhook]      the Telegram bot (polling, or a webhook server)
waymark console FLOW [--lang L]
waymark flows check [PATH…]  validate flow files (exit 1 on any problem)
waymark flows list           the shipped flows as a Markdown table
waymark purge                delete expired data now
waymark keys rotate          new key-encryption key; rewrap every data key
waymark i18n status          per language: share translated, review status
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from bot.settings import Settings

log = logging.getLogger("waymark")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="waymark", description="Guided checklists on Telegram.")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the bot (or the console player without a token)")
    run.add_argument("--webhook", action="store_true", help="serve a webhook instead of polling")
    console = sub.add_parser("console", help="play a flow in the terminal")
    console.add_argument("flow", help="flow id, e.g. demo_screening")
    console.add_argument("--lang", default=None, help="language code, e.g. ar")
    flows = sub.add_parser("flows", help="flow files")
    flows_sub = flows.add_subparsers(dest="flows_command", required=True)
    check = flows_sub.add_parser("check", help="validate flow files")
    check.add_argument("paths", nargs="*", type=Path)
    flows_sub.add_parser("list", help="list the shipped flows")
    sub.add_parser("purge", help="delete expired data now")
    export = sub.add_parser("export", help="a team's aggregate counts, small counts suppressed")
    export.add_argument(
        "--team",
        required=True,
        help="team id, as --team=ID (an id may begin with -); admins see ids with /teams",
    )
    export.add_argument("--format", choices=["csv"], default="csv")
    export.add_argument("--since", default=None, help="first day, YYYY-MM-DD (default: all)")
    sub.add_parser("teams", help="list teams (id and name)")
    keys = sub.add_parser("keys", help="key management")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    keys_sub.add_parser("rotate", help="rotate the key-encryption key")
    i18n = sub.add_parser("i18n", help="translations")
    i18n_sub = i18n.add_subparsers(dest="i18n_command", required=True)
    i18n_sub.add_parser("status", help="per-language completeness and review status")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``waymark`` console script."""
    sys.exit(run_cli(argv))


def run_cli(argv: Sequence[str] | None = None) -> int:
    """Run a command and return its exit status (0 ok, 1 problems found, 2 cannot start)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx, PTB's default transport, logs every request URL, and Bot API URLs contain the
    # token. Waymark sends through aiohttp (bot/http.py), which logs none; this stays in case
    # anything in the process uses PTB's default.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.command == "flows":
        return _flows(args)
    try:
        settings = Settings()
    except ValidationError as exc:
        sys.stderr.write(f"waymark: error: the settings are not valid:\n{exc}\n")
        return 2
    if args.command == "i18n":
        from bot.i18n_status import print_status  # noqa: PLC0415 - only for this command

        return print_status(sys.stdout)
    from bot.runtime import StartupError, open_runtime  # noqa: PLC0415 - keeps --help fast

    try:
        runtime = open_runtime(settings)
    except StartupError as exc:
        sys.stderr.write(f"waymark: error: {exc}\n")
        return 2
    for notice in runtime.notices:
        sys.stderr.write(f"waymark: {notice}\n")
    try:
        return _dispatch(args, runtime)
    finally:
        runtime.close()


def _dispatch(args: argparse.Namespace, runtime: object) -> int:
    from bot.runtime import Runtime, utcnow  # noqa: PLC0415

    assert isinstance(runtime, Runtime)
    command = args.command or "run"
    if command == "purge":
        from storage.teams import Teams  # noqa: PLC0415

        team_rows = Teams(runtime.store).purge(now=utcnow())
        counts = runtime.store.purge(now=utcnow())
        sys.stdout.write(
            f"purged {counts.answers} answers, {counts.sessions} sessions, "
            f"{counts.data_keys} data keys, {team_rows} team rows\n"
        )
        return 0
    if command in ("export", "teams"):
        return _teams_cli(args, runtime)
    if command == "keys":
        return _rotate(runtime)
    if command == "console":
        return _console(runtime, args.flow, args.lang)
    webhook = bool(getattr(args, "webhook", False))
    if runtime.settings.bot_token is None:
        sys.stderr.write(
            "waymark: no WAYMARK_BOT_TOKEN is set, so Waymark starts the console player. "
            "See the README to create a bot with BotFather.\n"
        )
        return _console_menu(runtime)
    from bot.telegram_app import run_bot  # noqa: PLC0415 - PTB loads only for the bot

    return run_bot(runtime, webhook=webhook)


def _teams_cli(args: argparse.Namespace, runtime: object) -> int:
    from datetime import date  # noqa: PLC0415

    from bot.digest import to_csv  # noqa: PLC0415
    from bot.runtime import Runtime, utcnow  # noqa: PLC0415
    from storage.teams import Teams  # noqa: PLC0415

    assert isinstance(runtime, Runtime)
    teams = Teams(runtime.store)
    if args.command == "teams":
        for team_id, name in teams.teams(now=utcnow()):
            sys.stdout.write(f"{team_id}\t{name}\n")
        return 0
    known = {team_id for team_id, _ in teams.teams(now=utcnow())}
    if args.team not in known:
        sys.stderr.write(f"waymark: error: no team '{args.team}'; see `waymark teams`\n")
        return 2
    since = date.fromisoformat(args.since) if args.since else date(2000, 1, 1)
    sys.stdout.write(to_csv(teams.counts(args.team, since=since)))
    return 0


def _console(runtime: object, flow_id: str, lang: str | None) -> int:
    from bot.console import ConsolePlayer, console_owner  # noqa: PLC0415
    from bot.i18n import Translator, available_languages, resolve_language  # noqa: PLC0415
    from bot.runtime import Runtime  # noqa: PLC0415

    assert isinstance(runtime, Runtime)
    if flow_id not in runtime.flows:
        known = ", ".join(sorted(runtime.flows))
        sys.stderr.write(f"waymark: error: no flow '{flow_id}'; shipped flows: {known}\n")
        return 2
    language = resolve_language(
        lang, None, runtime.settings.default_language, available_languages()
    )
    player = ConsolePlayer(runtime.service, Translator(language), sys.stdout)
    return player.play(flow_id, sys.stdin, console_owner(runtime.service))


def _console_menu(runtime: object) -> int:
    from bot.runtime import Runtime  # noqa: PLC0415

    assert isinstance(runtime, Runtime)
    ids = sorted(runtime.flows)
    sys.stdout.write("Choose a flow:\n")
    for number, flow_id in enumerate(ids, start=1):
        sys.stdout.write(f"  {number}. {runtime.flows[flow_id].flow.title} ({flow_id})\n")
    sys.stdout.flush()
    line = sys.stdin.readline().strip()
    if not line.isdigit() or not 1 <= int(line) <= len(ids):
        sys.stdout.write("No flow chosen.\n")
        return 0
    return _console(runtime, ids[int(line) - 1], None)


def _rotate(runtime: object) -> int:
    from bot.runtime import Runtime  # noqa: PLC0415

    assert isinstance(runtime, Runtime)
    settings = runtime.settings
    if settings.key_ring is not None:
        sys.stderr.write(
            "waymark: error: the key ring comes from WAYMARK_KEY_RING; rotate it where it is "
            "kept, or use a key file.\n"
        )
        return 2
    keys = runtime.store.keys
    path = settings.resolved_key_file
    old = sorted(keys.keks)
    new_id = keys.add_kek()
    # 1. the file first holds old and new keys, so a crash at any point loses nothing;
    keys.save(path)
    # 2. every data key is rewrapped under the new key;
    count = runtime.store.rewrap_keys()
    # 3. only then are the old keys dropped from the file.
    for kek_id in old:
        del keys.keks[kek_id]
    keys.save(path)
    sys.stdout.write(f"rotated to key {new_id}; rewrapped {count} data keys; removed {old}\n")
    return 0


def _flows(args: argparse.Namespace) -> int:
    from flows.errors import FlowDefinitionError  # noqa: PLC0415
    from flows.loader import DEFS_DIR, load_directory, load_files  # noqa: PLC0415

    if args.flows_command == "list":
        from bot.flow_table import markdown_table  # noqa: PLC0415

        sys.stdout.write(markdown_table(load_directory()) + "\n")
        return 0
    try:
        if args.paths:
            files: list[Path] = []
            for path in args.paths:
                files.extend(sorted(path.rglob("*.yaml")) if path.is_dir() else [path])
            loaded = load_files(files)
        else:
            loaded = load_directory(DEFS_DIR)
    except FlowDefinitionError as exc:
        for problem in exc.problems:
            sys.stdout.write(f"{problem}\n")
        sys.stdout.write(f"{len(exc.problems)} problem(s) found\n")
        return 1
    except OSError as exc:
        sys.stdout.write(f"{exc}\n")
        return 1
    sys.stdout.write(f"{len(loaded)} flow(s) OK: {', '.join(sorted(loaded))}\n")
    return 0
