"""The Telegram front end (python-telegram-bot v22). Built in the front-end issue."""

from __future__ import annotations

from bot.runtime import Runtime


def run_bot(runtime: Runtime, *, webhook: bool) -> int:
    """Run the bot until stopped; return the exit status."""
    raise NotImplementedError("the Telegram front end is built in the next issue")
