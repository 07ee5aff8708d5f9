"""The bot end to end: real Application and HTTP stack against the loopback fake Bot API.

The fake checks every request against the official Bot API 10.1 method list and fails the
test on any violation (unknown field, missing field, text or callback data over the limits).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from datetime import timedelta
from typing import Any

import pytest
from telegram import CallbackQuery

from flows.errors import InputRejected, Reason
from storage.errors import Conflict, DatabaseUnavailable
from tests.bot.conftest import CHAT, USER, Harness

pytestmark = pytest.mark.e2e


async def test_commands_are_registered(harness: Harness) -> None:
    """setMyCommands lists every command on start."""
    calls = harness.fake.calls_of("setMyCommands")
    commands = {c["command"] for c in calls[0]["commands"]}
    assert {"start", "help", "language", "screen", "consent", "quiz", "checklist", "cancel",
            "forget", "x"} <= commands  # fmt: skip


async def test_start_menu_and_help(harness: Harness) -> None:
    """/start shows a menu of checklists; /help lists the commands."""
    await harness.send("/start")
    assert "Welcome to Waymark" in harness.last()["text"]
    assert "Red-flag observation" in harness.labels()
    await harness.send("/help")
    assert "/x" in harness.last()["text"] and "/forget" in harness.last()["text"]


async def test_full_red_flag_screening_by_buttons(harness: Harness) -> None:
    """A screening from the menu to its outcome, one message per question, edited in place."""
    await harness.send("/screen")
    await harness.press("Red-flag observation")
    first = harness.last()
    assert "1/" in first["text"]  # progress
    assert first["protect_content"] is True
    await harness.play()
    texts = "\n".join(harness.texts())
    assert "does not identify anyone as a victim" in texts
    assert harness.fake.calls_of("editMessageText"), "questions are edited in place"
    assert harness.state() is None
    # The screening keeps answer codes, encrypted: one record per question, no more.
    sessions = harness.runtime.store.sessions_of(harness.owner, now=harness.runtime.service.clock())
    answers = harness.runtime.store.answers(sessions[0].id, now=harness.runtime.service.clock())
    assert len(answers) >= 9


async def test_screening_needing_consent_starts_with_consent(harness: Harness) -> None:
    """The interview requires consent: the consent flow runs first, then the screening."""
    await harness.send("/screen")
    await harness.press("Indicator interview")
    assert any("needs the person's consent first" in t for t in harness.texts())
    state = harness.state()
    assert state is not None and state.flow_id == "consent_screening"

    def agree(step: str, labels: list[str]) -> str | None:
        return "I agree" if "I agree" in labels else None

    # Play the consent flow (comprehension checks: pick the first, it loops until right).
    for _ in range(80):
        state = harness.state()
        if state is None or state.flow_id != "consent_screening":
            break
        labels = [lab for lab in harness.labels() if lab not in ("Back", "Skip")]
        pick = agree(state.current, labels)
        if pick is None:
            step = harness.runtime.flows["consent_screening"].steps[state.current]
            options = getattr(step, "options", ())
            right = [o.text for o in options if o.goto is None]
            pick = right[0] if right else labels[0]
        await harness.press(pick)
    state = harness.state()
    assert state is not None and state.flow_id == "screening_interview"


async def test_declined_consent_stores_only_the_decline(harness: Harness) -> None:
    """Declining ends the consent flow; the pending screening does not start."""
    await harness.send("/consent")
    await harness.press((0, 0))
    for _ in range(40):
        state = harness.state()
        if state is None:
            break
        if "I do not agree" in harness.labels():
            await harness.press("I do not agree")
            break
        step = harness.runtime.flows["consent_screening"].steps[state.current]
        options = getattr(step, "options", ())
        right = [o.text for o in options if o.goto is None]
        await harness.press(right[0] if right else (0, 0))
    assert harness.state() is None
    clock = harness.runtime.service.clock()
    session = harness.runtime.store.sessions_of(harness.owner, now=clock)[0]
    assert harness.runtime.store.answers(session.id, now=clock) == {"consent": "decline"}


async def test_quiz_by_buttons(harness: Harness) -> None:
    """A quiz sitting: feedback after each answer, a score at the end."""
    await harness.send("/quiz")
    await harness.press("Trainee self-quiz")
    await harness.play()
    texts = "\n".join(harness.texts())
    assert "Score:" in texts
    assert "Correct." in texts or "Not quite." in texts


async def test_checklist_by_buttons_with_back(harness: Harness) -> None:
    """A checklist with a Back press in the middle still ends with its summary."""
    await harness.send("/checklist")
    await harness.press("Interview preparation checklist")
    await harness.press((0, 0))
    await harness.press((0, 1))  # "No" on the first item
    assert "Back" in harness.labels()
    await harness.press("Back")
    await harness.play(choose=lambda step, labels: "No" if "No" in labels else None, typed="-")
    assert "see Tool" in "\n".join(harness.texts())


async def test_language_menu_shows_names_and_status(harness: Harness) -> None:
    """/language lists languages in their own script (drafts marked); choices are remembered."""
    await harness.send("/language")
    own_menu, respondent_menu = harness.fake.messages(CHAT)[-2:]
    own = [b["text"] for row in own_menu["reply_markup"]["inline_keyboard"] for b in row]
    assert own[0].startswith("English")
    assert any(label.startswith("العربية") and "draft" in label for label in own)
    harness.fake.press_button(CHAT, own[0], message_id=own_menu["message_id"], user_id=USER)
    await harness.idle()
    assert harness.runtime.service.profile(harness.owner)["lang"] == "en"
    arabic = next(
        b["text"]
        for row in respondent_menu["reply_markup"]["inline_keyboard"]
        for b in row
        if b["text"].startswith("العربية")
    )
    harness.fake.press_button(CHAT, arabic, message_id=respondent_menu["message_id"], user_id=USER)
    await harness.idle()
    assert harness.runtime.service.profile(harness.owner)["resp_lang"] == "ar"


async def test_cancel_ends_the_flow(harness: Harness) -> None:
    """/cancel stops the open flow."""
    await harness.send("/screen")
    await harness.press("Red-flag observation")
    await harness.send("/cancel")
    assert harness.state() is None
    assert "Stopped" in harness.last()["text"]
    await harness.send("/cancel")
    assert "nothing to stop" in harness.last()["text"]


async def test_forget_erases_everything_after_confirmation(harness: Harness) -> None:
    """/forget asks first; yes erases sessions, answers, profile and message references."""
    await harness.send("/screen")
    await harness.press("Red-flag observation")
    await harness.press((0, 0))
    await harness.send("/forget")
    await harness.press("No, keep it")
    assert harness.state() is not None
    await harness.send("/forget")
    await harness.press("Yes, erase everything")
    clock = harness.runtime.service.clock()
    assert harness.runtime.store.sessions_of(harness.owner, now=clock) == []
    assert harness.runtime.store.profile(harness.owner, now=clock) == {}
    assert "has been erased" in harness.last()["text"]


async def test_quick_exit_deletes_the_conversation(harness: Harness) -> None:
    """/x ends the flow, erases its data and deletes every message it can."""
    await harness.send("/screen")
    await harness.press("Red-flag observation")
    await harness.press((0, 0))
    await harness.press((0, 0))
    assert harness.fake.messages(CHAT, include_user=True)
    await harness.send("/x")
    assert harness.fake.messages(CHAT, include_user=True) == []
    clock = harness.runtime.service.clock()
    assert harness.runtime.store.sessions_of(harness.owner, now=clock) == []


async def test_duplicate_update_changes_nothing_twice(harness: Harness) -> None:
    """The same update delivered twice is applied once."""
    await harness.send("/screen")
    await harness.press("Red-flag observation")
    await harness.press((0, 0))  # past the intro
    before = harness.state()
    assert before is not None
    message = harness.last()
    data = message["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    update_id = harness.fake.press(CHAT, message["message_id"], data, user_id=USER)
    await harness.idle()
    after_first = harness.state()
    assert after_first is not None and after_first.seq == before.seq + 1
    harness.fake.press(CHAT, message["message_id"], data, user_id=USER, update_id=update_id)
    await harness.idle()
    assert harness.state() == after_first


async def test_double_tap_answers_once(harness: Harness) -> None:
    """Two presses of one button (two updates) record one answer; the second is stale."""
    await harness.send("/screen")
    await harness.press("Red-flag observation")
    await harness.press((0, 0))
    before = harness.state()
    assert before is not None
    message = harness.last()
    data = message["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    harness.fake.press(CHAT, message["message_id"], data, user_id=USER)
    harness.fake.press(CHAT, message["message_id"], data, user_id=USER)
    await harness.idle()
    after = harness.state()
    assert after is not None and len(after.history) == len(before.history) + 1
    answers = harness.fake.calls_of("answerCallbackQuery")
    assert any("closed" in (a.get("text") or "") for a in answers)


async def test_spinner_stops_while_the_answer_is_written(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """answerCallbackQuery goes out once the press's writes are sent, while they are still
    in flight (not committed); the next question follows the commit, and the press is
    answered once."""
    await harness.send("/screen")
    await harness.press("Red-flag observation")
    before = harness.state()
    assert before is not None
    store = harness.runtime.store
    writing, go_on = threading.Event(), threading.Event()
    write_step = store._write_step

    def held_write(*args: Any) -> int:
        # The step's ``sent`` (its last argument) is the bot's: it starts the answer. The
        # write then waits, sent and uncommitted, until the test lets it go on.
        *rest, sent = args
        assert sent is not None

        def held_sent() -> None:
            sent()
            writing.set()
            assert go_on.wait(10)

        return write_step(*rest, held_sent)

    monkeypatch.setattr(store, "_write_step", held_write)
    answered = len(harness.fake.calls_of("answerCallbackQuery"))
    edited = len(harness.fake.calls_of("editMessageText"))
    message = harness.last()
    data = message["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    harness.fake.press(CHAT, message["message_id"], data, user_id=USER)
    for _ in range(500):
        if len(harness.fake.calls_of("answerCallbackQuery")) > answered:
            break
        await asyncio.sleep(0.01)
    # The spinner has stopped, the write has not finished, and nothing else was shown.
    assert writing.is_set()
    answers = harness.fake.calls_of("answerCallbackQuery")[answered:]
    assert len(answers) == 1 and not answers[0].get("text")
    assert len(harness.fake.calls_of("editMessageText")) == edited
    assert harness.state() == before
    go_on.set()
    await harness.idle()
    after = harness.state()
    assert after is not None and after.seq == before.seq + 1
    assert len(harness.fake.calls_of("editMessageText")) == edited + 1
    assert len(harness.fake.calls_of("answerCallbackQuery")) == answered + 1


async def test_a_retry_that_finds_the_session_gone_adds_nothing_to_the_chat(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The press is answered (empty) after the first reads; if the conflict's retry then finds
    the session closed or gone, nothing is posted: it may have been erased with its chat
    (quick exit through another worker). A retry that finds the press stale says so in the
    chat instead (tests/bot/test_warm.py)."""
    await harness.send("/screen")
    await harness.press("Red-flag observation")
    store, service = harness.runtime.store, harness.runtime.service
    write_step, clock = store._write_step, service.clock

    def conflict_then_write(*args: Any, **kwargs: Any) -> int:
        if not hasattr(conflict_then_write, "done"):
            conflict_then_write.done = True  # type: ignore[attr-defined]
            # Meanwhile the session moved on; here, by its expiry passing.
            monkeypatch.setattr(service, "clock", lambda: clock() + timedelta(days=3650))
            raise Conflict("changed meanwhile")
        return write_step(*args, **kwargs)

    monkeypatch.setattr(store, "_write_step", conflict_then_write)
    answered = len(harness.fake.calls_of("answerCallbackQuery"))
    sent = len(harness.fake.calls_of("sendMessage"))
    await harness.press((0, 0))
    answers = harness.fake.calls_of("answerCallbackQuery")[answered:]
    assert len(answers) == 1 and not answers[0].get("text")
    assert harness.fake.calls_of("sendMessage")[sent:] == []
    assert harness.state() is None


async def test_a_press_whose_flow_cannot_load_is_answered(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A session whose pinned flow version is gone: the press is answered 'closed', once,
    nothing is stored, and no handler fails."""
    await harness.send("/screen")
    await harness.press("Red-flag observation")
    before = harness.state()

    def gone(_state: Any) -> Any:
        raise InputRejected(Reason.STALE, detail="the flow version is gone")

    monkeypatch.setattr(harness.runtime.service, "flow_of", gone)
    answered = len(harness.fake.calls_of("answerCallbackQuery"))
    with caplog.at_level(logging.ERROR):
        await harness.press((0, 0))
    answers = harness.fake.calls_of("answerCallbackQuery")[answered:]
    assert len(answers) == 1 and "closed" in (answers[0].get("text") or "")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    monkeypatch.undo()
    assert harness.state() == before


async def test_an_early_answer_that_fails_is_not_left_unretrieved(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The write fails after the early answer was started, and the answer fails too (with
    something other than a Telegram error): both are logged by type, no task's exception
    is left unretrieved, and nothing is still counted as in flight."""
    await harness.send("/screen")
    await harness.press("Red-flag observation")
    before = harness.state()
    store = harness.runtime.store

    def unavailable(*_args: Any, **_kwargs: Any) -> int:
        raise DatabaseUnavailable("database error: gone")

    async def broken_answer(*_args: Any, **_kwargs: Any) -> bool:
        raise RuntimeError("transport closed")

    monkeypatch.setattr(store, "_write_step", unavailable)
    monkeypatch.setattr(CallbackQuery, "answer", broken_answer)
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    try:
        with caplog.at_level(logging.WARNING):
            await harness.press((0, 0))
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert unhandled == []
    messages = [r.getMessage() for r in caplog.records]
    assert "answering a button press failed: RuntimeError" in messages
    assert any("DatabaseUnavailable" in m for m in messages)
    assert harness.bot.in_flight == 0 and not harness.bot._acking
    monkeypatch.undo()
    assert harness.state() == before


async def test_stale_forged_and_foreign_presses_change_nothing(harness: Harness) -> None:
    """A stale button gets 'closed' and the current question; forged and foreign do nothing."""
    await harness.send("/screen")
    await harness.press("Red-flag observation")
    old = harness.last()
    old_data = old["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    await harness.press((0, 0))
    await harness.press((0, 0))
    state = harness.state()
    # stale: the first question's button again
    harness.fake.press(CHAT, old["message_id"], old_data, user_id=USER)
    await harness.idle()
    assert harness.state() == state
    assert "closed" in (harness.fake.calls_of("answerCallbackQuery")[-1].get("text") or "")
    # forged: right shape, wrong MAC
    current = harness.last()
    forged = current["reply_markup"]["inline_keyboard"][0][0]["callback_data"][:-3] + "AAA"
    harness.fake.press(CHAT, current["message_id"], forged, user_id=USER)
    await harness.idle()
    assert harness.state() == state
    assert "not valid" in (harness.fake.calls_of("answerCallbackQuery")[-1].get("text") or "")
    # foreign: another person, with a flow of their own open, sends this person's button data
    other = 5151
    harness.fake.user_text(other, "/screen", user_id=other)
    await harness.idle()
    harness.fake.press_button(other, "Red-flag observation", user_id=other)
    await harness.idle()
    other_owner = harness.runtime.store.keys.pseudonym("tg", other)
    other_before = harness.runtime.service.current(other_owner)
    real = current["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    other_msg = harness.fake.last_message(other)
    assert other_msg is not None and other_before is not None
    harness.fake.press(other, other_msg["message_id"], real, user_id=other)
    await harness.idle()
    assert harness.state() == state
    other_after = harness.runtime.service.current(other_owner)
    assert other_after is not None and other_after[1] == other_before[1]
    assert "not valid" in (harness.fake.calls_of("answerCallbackQuery")[-1].get("text") or "")


async def test_group_chat_is_refused_and_left(harness: Harness) -> None:
    """In a group the bot says it works only in private and leaves; no flow runs."""
    group = -100777
    harness.fake.user_text(group, "/screen", user_id=USER, chat_type="group")
    await harness.idle()
    assert harness.fake.left_chats == [group]
    assert "only in a private chat" in harness.fake.messages(group)[-1]["text"]
    assert harness.state() is None


@pytest.mark.parametrize("kind", ["photo", "voice", "sticker", "document", "location", "video"])
async def test_unexpected_media_gets_a_prompt(harness: Harness, kind: str) -> None:
    """Media is never downloaded or stored; the person gets a clear prompt and the question."""
    await harness.send("/screen")
    await harness.press("Red-flag observation")
    state = harness.state()
    harness.fake.user_media(CHAT, kind, user_id=USER)
    await harness.idle()
    assert any("only read text and button presses" in t for t in harness.texts())
    assert harness.fake.calls_of("getFile") == []
    assert harness.state() == state


async def test_text_when_a_button_is_expected(harness: Harness) -> None:
    """Typing where a button is expected loses nothing and says what to do."""
    await harness.send("/screen")
    await harness.press("Red-flag observation")
    state = harness.state()
    await harness.send("hello")
    assert "Please answer with the buttons" in "\n".join(harness.texts())
    assert harness.state() == state


async def test_oversized_and_control_character_text(harness: Harness) -> None:
    """Free text is cleaned of control and bidi characters, capped, and escaped on display."""
    await harness.send("/checklist")
    await harness.press("Human rights risk assessment")
    await harness.press((0, 0))  # intro
    await harness.press("High")  # likelihood
    await harness.press("High")  # impact -> mitigation asked
    state = harness.state()
    assert state is not None and state.phase == "mitigation"
    await harness.send("x" * 1200)
    assert "too long" in harness.last()["text"] or "too long" in "\n".join(harness.texts())
    assert harness.state() == state
    await harness.send("<b>move</b>\u202e tonight\x07")
    after = harness.state()
    assert after is not None and after.phase == "answer"
    clock = harness.runtime.service.clock()
    session = harness.runtime.store.sessions_of(harness.owner, now=clock)[0]
    kept = harness.runtime.store.answers(session.id, now=clock)
    mitigation = next(iter(kept.values()))["mitigation"]
    assert mitigation == "<b>move</b> tonight"  # kept as typed, minus the control characters


async def test_concurrent_chats_do_not_block_each_other(harness: Harness) -> None:
    """Two people at once each get their own flow."""
    other = 6161
    harness.fake.user_text(CHAT, "/screen", user_id=USER)
    harness.fake.user_text(other, "/quiz", user_id=other)
    await harness.idle()
    assert "Red-flag observation" in harness.labels()
    other_msg = harness.fake.last_message(other)
    assert other_msg is not None and "Choose a quiz" in other_msg["text"]


async def test_scheduled_deletion_after_a_screening(harness: Harness) -> None:
    """After a screening its messages are deleted on the flow's schedule unless kept."""
    await harness.send("/screen")
    await harness.press("Red-flag observation")
    await harness.play()
    clock = harness.runtime.service.clock()
    from datetime import timedelta

    due = harness.runtime.store.due_messages(now=clock + timedelta(hours=3))
    assert len(due) >= 3
    await harness.bot._cleanup()
    assert harness.fake.messages(CHAT, include_user=True) != []  # not due yet
    harness.runtime.service.clock = lambda: clock + timedelta(hours=3)
    await harness.bot._cleanup()
    assert harness.fake.messages(CHAT, include_user=True) == []


async def test_keep_button_cancels_the_scheduled_deletion(harness: Harness) -> None:
    """Pressing 'Keep these messages' keeps them."""
    await harness.send("/screen")
    await harness.press("Red-flag observation")
    await harness.play()
    await harness.press("Keep these messages")
    clock = harness.runtime.service.clock()
    from datetime import timedelta

    assert harness.runtime.store.due_messages(now=clock + timedelta(hours=3)) == []


async def test_rate_limit_is_honoured(harness: Harness) -> None:
    """A 429 with retry_after is waited out and the message still arrives once."""
    harness.fake.fail_next("sendMessage", status=429, retry_after=1)
    await harness.send("/help")
    await asyncio.sleep(1.5)
    await harness.idle()
    helps = [t for t in harness.texts() if "/forget" in t]
    assert len(helps) == 1
