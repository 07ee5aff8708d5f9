"""Roles, permissions and the side effects of finished flows (alerts, counts). No Telegram.

Roles: ``admin`` (a Telegram id in WAYMARK_ADMINS, never stored), ``supervisor``,
``responder`` and ``trainee`` (team members, by invitation), ``guest`` (no team, allowed
when WAYMARK_OPEN_ACCESS is on) and ``none``. Every check is made on the server, for every
command and every button press, from the stored membership, never from the button.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from bot.service import Service
from bot.settings import Settings
from flows.events import AlertWorthy, Event, OutcomeReached
from flows.loader import LoadedFlow
from flows.model import Kind
from storage.teams import MemberInfo, Teams

#: Counts of people outside any team are kept under this team id.
NO_TEAM = "_none"
#: Which flow kinds each role may run.
MAY_RUN: dict[str, frozenset[Kind]] = {
    "admin": frozenset(Kind),
    "supervisor": frozenset(Kind),
    "responder": frozenset(Kind),
    "guest": frozenset(Kind),
    "trainee": frozenset({Kind.QUIZ, Kind.CHECKLIST, Kind.INFO}),
    "none": frozenset(),
}


class TeamDesk:
    """Answers "who may do what" and turns finished flows into alerts and counts.

    Args:
        settings: The settings (admins, open access, alert timings).
        service: The flow service (its clock and keys).
        teams: Team storage.
    """

    def __init__(self, settings: Settings, service: Service, teams: Teams) -> None:
        self.settings = settings
        self.service = service
        self.teams = teams
        self.admins = frozenset(settings.admins)

    def now(self) -> datetime:
        """The service clock."""
        return self.service.clock()

    def admin_owners(self) -> dict[str, int]:
        """Admins' pseudonyms and chat ids (a private chat's id is the user's id)."""
        return {self.service.store.keys.pseudonym("tg", uid): uid for uid in self.admins}

    def role(self, user_id: int, owner: str) -> tuple[str, MemberInfo | None]:
        """The person's role and membership."""
        member = self.teams.member(owner, now=self.now())
        if user_id in self.admins:
            return "admin", member
        if member is not None:
            return member.role, member
        return ("guest" if self.settings.open_access else "none"), None

    @staticmethod
    def may_run(role: str | None, flow: LoadedFlow) -> bool:
        """Whether this role may run this flow (an unknown role, None, may run none)."""
        return role is not None and flow.flow.kind in MAY_RUN.get(role, frozenset())

    def member_expiry(self) -> datetime:
        """When a membership made now expires (a year, capped by the deployment)."""
        seconds = 365 * 24 * 3600
        if self.service.max_retention_seconds is not None:
            seconds = min(seconds, self.service.max_retention_seconds)
        return self.now() + timedelta(seconds=seconds)

    def alert_id(self, session_id: str) -> str:
        """A stable alert id for a session: one screening can never raise two alerts."""
        return self.service.store.keys.pseudonym("case", session_id)[:16]

    def side_writes(
        self, owner: str, flow: LoadedFlow, session_id: str, events: list[Event]
    ) -> list[Callable[[Any], None]]:
        """Counts and (for an alert-worthy screening) the alert, written with the last answer."""
        outcome = next((e for e in events if isinstance(e, OutcomeReached)), None)
        if outcome is None:
            return []
        now = self.now()
        member = self.teams.member(owner, now=now)
        team = member.team_id if member is not None else NO_TEAM
        writes: list[Callable[[Any], None]] = [
            self.teams.count_writes(team, now.date(), _metrics(flow, outcome))
        ]
        alert = next((e for e in events if isinstance(e, AlertWorthy)), None)
        if alert is not None and member is not None and flow.flow.kind is Kind.SCREENING:
            recipients = [
                (m.owner, m.chat_id)
                for m in self.teams.members(team, now=now, role="supervisor")
                if m.owner != owner
            ]
            payload = {
                "flow": flow.id,
                "tier": alert.outcome_id,
                "categories": list(alert.categories),
                "child": alert.child,
                "time": now.isoformat(timespec="minutes"),
                "responder": member.handle,
            }
            expires = now + timedelta(days=7)
            writes.append(
                self.teams.alert_writes(
                    team,
                    self.alert_id(session_id),
                    payload,
                    recipients,
                    now=now,
                    expires_at=expires,
                )
            )
        return writes


def _metrics(flow: LoadedFlow, outcome: OutcomeReached) -> dict[str, int]:
    kind = flow.flow.kind
    metrics: dict[str, int] = {}
    if kind is Kind.SCREENING:
        metrics["screening.tier." + outcome.outcome_id] = 1
        for category in outcome.categories:
            metrics[f"category.{category}"] = 1
    elif kind is Kind.CONSENT:
        metrics["consent." + ("declined" if outcome.outcome_id == "declined" else "given")] = 1
    elif kind is Kind.QUIZ and outcome.quiz is not None:
        metrics["quiz.completed"] = 1
        for topic, (right, asked) in outcome.quiz.by_topic.items():
            metrics[f"quiz.topic.{topic}.correct"] = right
            metrics[f"quiz.topic.{topic}.asked"] = asked
    elif kind is Kind.CHECKLIST:
        metrics[f"checklist.{flow.id}.completed"] = 1
    return metrics
