"""Helpers shared by tests and the bench scripts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.runtime import open_runtime
from bot.settings import Settings
from storage.teams import Teams


def seed_team(
    data: Path,
    name: str,
    supervisor: int,
    responders: list[int],
    *,
    database_url: str | None = None,
) -> str:
    """Write a team with one supervisor and some responders through the storage API.

    Each person joins by a real single-use invitation, with the handle ``u<id>``.

    Returns:
        The team id.
    """
    runtime = open_runtime(Settings(data_dir=data, database_url=database_url))
    teams = Teams(runtime.store)
    now = datetime.now(UTC)
    team = teams.create_team(name, now=now)
    members = [(supervisor, "supervisor")] + [(r, "responder") for r in responders]
    for user, role in members:
        code = teams.invite(team, role, created_by="seed", now=now, ttl=timedelta(days=1))
        teams.join(
            code,
            runtime.store.keys.pseudonym("tg", user),
            f"u{user}",
            user,
            now=now,
            expires_at=now + timedelta(days=30),
        )
    runtime.close()
    return team
