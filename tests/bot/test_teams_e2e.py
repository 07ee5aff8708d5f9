"""Teams end to end: invitations, an alert and its acknowledgement, reminders, revocation,
role checks and a digest, through the real Application and the loopback fake Bot API."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from tests.bot.conftest import Harness

pytestmark = pytest.mark.e2e
ADMIN, SUP, SUP2, RESP, TRAINEE, OTHER = 1001, 2002, 2003, 3003, 4004, 5005


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "admins": (ADMIN,),
        "alert_remind_after": "2s",
        "alert_escalate_after": "4s",
        "outbox_interval": 0.2,
    }


async def as_user(h: Harness, user: int, text: str) -> None:
    h.fake.user_text(user, text, user_id=user)
    await h.idle()


async def press(h: Harness, user: int, label: str | tuple[int, int]) -> None:
    h.fake.press_button(user, label, user_id=user)
    await h.idle()


def last(h: Harness, user: int) -> str:
    message = h.fake.last_message(user)
    return "" if message is None else str(message["text"])


def recent(h: Harness, user: int, needle: str, count: int = 3) -> bool:
    """Whether one of the user's last few messages says ``needle`` (alerts, reminders and
    escalations arrive on their own schedule, so "last" can race with them)."""
    return any(needle in m["text"] for m in h.fake.messages(user)[-count:])


def link_code(text: str) -> str:
    match = re.search(r"\?start=([A-Za-z0-9_-]+)", text)
    assert match, text
    return match.group(1)


async def join(h: Harness, inviter: int, role_label: str, user: int, handle: str) -> None:
    await as_user(h, inviter, "/invite")
    await press(h, inviter, role_label)
    code = link_code(last(h, inviter))
    await as_user(h, user, f"/start {code}")
    assert "display handle" in last(h, user)
    await as_user(h, user, handle)
    assert "You joined the team" in last(h, user)


async def team(h: Harness) -> None:
    """Admin creates a team, invites a supervisor, who invites a responder."""
    await as_user(h, ADMIN, "/newteam Harbour outreach")
    assert "Team created" in last(h, ADMIN)
    await join(h, ADMIN, "Supervisor", SUP, "sup-ana")
    await join(h, SUP, "Responder", RESP, "resp-bo")


async def strong_screening(h: Harness, user: int = RESP) -> None:
    await as_user(h, user, "/screen")
    await press(h, user, "Red-flag observation")
    for _ in range(40):
        owner = h.runtime.store.keys.pseudonym("tg", user)
        if h.runtime.service.current(owner) is None:
            return
        await press(h, user, (0, 0))  # "Observed" everywhere: strong indicators
    raise AssertionError("screening did not end")


async def wait_for_text(h: Harness, user: int, needle: str, timeout: float = 10) -> list[str]:
    for _ in range(int(timeout / 0.1)):
        texts = [m["text"] for m in h.fake.messages(user)]
        if any(needle in t for t in texts):
            return texts
        await asyncio.sleep(0.1)
    raise AssertionError(
        f"{needle!r} never reached {user}: {[m['text'][:60] for m in h.fake.messages(user)]}"
    )


async def test_invitations_alert_and_acknowledgement(harness: Harness) -> None:
    """admin → supervisor invitation → responder invitation → strong screening → alert → ack."""
    h = harness
    await team(h)
    await strong_screening(h)
    texts = await wait_for_text(h, SUP, "Screening alert")
    alert = next(t for t in texts if "Screening alert" in t)
    # "Observed" on every red flag includes the age item: the child outcome, always alerted.
    assert "resp-bo" in alert and "May be a child" in alert and "Possible child: Yes" in alert
    assert "Observed" not in alert  # no answers verbatim
    await press(h, SUP, "Acknowledge")
    assert recent(h, SUP, "Acknowledged")
    await asyncio.sleep(2.5)  # past the reminder time: an acknowledged alert is not repeated
    assert not any("Reminder" in m["text"] for m in h.fake.messages(SUP))


async def test_single_use_and_expired_invitations(harness: Harness) -> None:
    """An invitation works once."""
    h = harness
    await as_user(h, ADMIN, "/newteam T")
    await as_user(h, ADMIN, "/invite")
    await press(h, ADMIN, "Supervisor")
    code = link_code(last(h, ADMIN))
    await as_user(h, SUP, f"/start {code}")
    await as_user(h, SUP, "first")
    await as_user(h, SUP2, f"/start {code}")
    assert "unknown, already used or expired" in last(h, SUP2)


async def test_reminder_then_escalation_when_nobody_acknowledges(harness: Harness) -> None:
    """No acknowledgement: a reminder to the supervisors, then an escalation to the admins."""
    h = harness
    await team(h)
    await strong_screening(h)
    await wait_for_text(h, SUP, "Screening alert")
    await wait_for_text(h, SUP, "Reminder", timeout=15)
    await wait_for_text(h, ADMIN, "Escalation", timeout=15)
    await press(h, ADMIN, "Acknowledge")
    assert recent(h, ADMIN, "Acknowledged")


async def test_revoked_supervisor_receives_nothing(harness: Harness) -> None:
    """A revoked supervisor gets no alert; the remaining supervisor does."""
    h = harness
    await team(h)
    await join(h, ADMIN, "Supervisor", SUP2, "sup-two")
    await as_user(h, ADMIN, "/members")
    await press(h, ADMIN, "Revoke sup-two (Supervisor)")
    assert "can no longer use the team" in last(h, ADMIN)
    before = len(h.fake.messages(SUP2))
    await strong_screening(h)
    await wait_for_text(h, SUP, "Screening alert")
    await asyncio.sleep(1)
    assert len(h.fake.messages(SUP2)) == before


async def test_role_checks_refuse_what_a_role_may_not_do(harness: Harness) -> None:
    """A responder cannot use supervisor commands; a trainee cannot screen; a foreign team's
    supervisor cannot acknowledge another team's alert, even with a well-formed button."""
    h = harness
    await team(h)
    for command in ("/members", "/digest", "/invite", "/newteam X"):
        await as_user(h, RESP, command)
        assert "not allowed" in last(h, RESP), command
    await join(h, SUP, "Trainee", TRAINEE, "trainee-c")
    await as_user(h, TRAINEE, "/screen")
    assert "nothing here for your role" in last(h, TRAINEE)
    await as_user(h, TRAINEE, "/quiz")
    assert "Trainee self-quiz" in str(h.fake.last_message(TRAINEE))
    # A second team with its own supervisor.
    await as_user(h, ADMIN, "/newteam Other team")
    await join(h, ADMIN, "Supervisor", OTHER, "other-sup")
    await strong_screening(h)
    await wait_for_text(h, SUP, "Screening alert")
    alert_id = next(
        iter(
            h.bot.teams.unacked(
                now=h.bot.desk.now(),
                older_than=__import__("datetime").timedelta(0),
                field="reminded_at",
            )
        ),
        None,
    )
    assert alert_id is not None
    other_owner = h.runtime.store.keys.pseudonym("tg", OTHER)
    crafted = h.bot.codec.pack(other_owner, "", "c", alert_id)  # a valid MAC for OTHER
    h.fake.user_text(OTHER, "/help", user_id=OTHER)
    await h.idle()
    message = h.fake.last_message(OTHER)
    assert message is not None
    h.fake.press(OTHER, message["message_id"], crafted, user_id=OTHER)
    await h.idle()
    assert "not allowed" in last(h, OTHER)
    assert h.bot.teams.alert(alert_id, now=h.bot.desk.now()).acked_at is None


async def test_digest_counts_only_with_small_counts_suppressed(harness: Harness) -> None:
    """/digest shows counts; anything from 1 to 10 is 'fewer than 11'; no trend."""
    h = harness
    await team(h)
    await strong_screening(h)
    await strong_screening(h)
    await as_user(h, SUP, "/digest")
    # Alerts of the two screenings may arrive around the digest: pick the digest itself.
    text = next(m["text"] for m in reversed(h.fake.messages(SUP)) if "Team digest" in m["text"])
    assert "Screenings: fewer than 11" in text
    assert "child: fewer than 11" in text
    assert "Too few screenings to speak of a trend" in text
    assert not re.search(r": [1-9]\b(?!\d)", text.replace("11", "")), text
