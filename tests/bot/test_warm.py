"""Presses on a session this worker holds warm while another worker has moved it on.

The bot decides a press on its warm copy of the session (storage: ``Store.step``). With
several workers, that copy can be behind: the press must then be decided on what is
stored, never answered from the copy. "Another worker" here is a second Store and Service
on the same database, as a second process would have.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from bot import presenter
from bot.callback_data import seq_code
from bot.service import Service, Turn
from flows.engine import current_ask
from flows.errors import InputRejected, Reason
from flows.events import Choice
from storage.repository import Store
from tests.bot.conftest import CHAT, USER, Harness


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Each test on both databases: on PostgreSQL the copy's lock and writes go as one
    statement, and a failed one leaves nothing written on the chat's lease."""
    if request.param == "sqlite":
        return {}
    return {"database_url": request.getfixturevalue("pg_url")}


def _other_worker_answers(harness: Harness) -> Turn:
    """Answer the current question with its first option, as another worker would."""
    runtime = harness.runtime
    other = Service(_other_store(harness), runtime.flows, runtime.service.clock)
    found = other.current(harness.owner)
    assert found is not None
    _, state, flow = found
    codes, _ = presenter.answers(flow, current_ask(flow, state))
    return other.answer(harness.owner, Choice((codes[0],)), expected_seq=state.seq)


def _other_store(harness: Harness) -> Store:
    return Store(harness.runtime.store.engine, harness.runtime.store.keys)


async def _at_second_question(harness: Harness) -> None:
    await harness.send("/screen")
    await harness.press("Red-flag observation")
    # One answer through this bot: it now holds the session warm.
    await harness.press((0, 0))


async def test_a_press_on_the_question_another_worker_showed_is_applied(
    harness: Harness,
) -> None:
    """The copy's question is older than the press's: the copy would call the press stale.
    The bot must apply it, and say nothing of a closed question."""
    await _at_second_question(harness)
    turn = _other_worker_answers(harness)
    # The button the other worker's reply would have shown.
    data = harness.bot.codec.pack(
        harness.owner, turn.session_id, "a", seq_code(turn.state.seq), "0"
    )
    harness.fake.press(CHAT, harness.last()["message_id"], data, user_id=USER)
    await harness.idle()
    after = harness.state()
    assert after is not None and len(after.history) == len(turn.state.history) + 1
    toasts = [a.get("text") for a in harness.fake.calls_of("answerCallbackQuery")]
    assert not any(t and "closed" in t for t in toasts), toasts
    assert not any("closed" in t for t in harness.texts())


async def test_a_press_the_copy_would_apply_but_another_worker_answered_is_not(
    harness: Harness,
) -> None:
    """The press answers the copy's question, which another worker has answered meanwhile:
    nothing is stored for it, and the chat is told and shown the current question."""
    await _at_second_question(harness)
    shown = harness.last()
    turn = _other_worker_answers(harness)
    answered = len(harness.fake.calls_of("answerCallbackQuery"))
    harness.fake.press_button(CHAT, (0, 0), user_id=USER)
    await harness.idle()
    after = harness.state()
    assert after is not None
    assert (after.seq, after.history) == (turn.state.seq, turn.state.history)
    # Answered (once, empty) on the copy, before the write found the session moved on.
    answers = harness.fake.calls_of("answerCallbackQuery")[answered:]
    assert len(answers) == 1 and not answers[0].get("text")
    assert "This question is closed. Here is the current one." in harness.texts()
    assert harness.last()["message_id"] != shown["message_id"]  # the current one, anew


async def test_the_next_press_is_decided_on_the_warm_copy(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without another worker, a press after a press is decided and written on the copy:
    one step, no fresh read (a copy that always failed would pass every other test)."""
    await _at_second_question(harness)
    store = harness.runtime.store
    step_warm = store._step_warm
    results: list[Any] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        results.append(step_warm(*args, **kwargs))
        return results[-1]

    monkeypatch.setattr(store, "_step_warm", spy)
    before = harness.state()
    assert before is not None
    await harness.press((0, 0))
    await harness.press((0, 0))
    assert len(results) == 2 and all(r is not None for r in results), results
    after = harness.state()
    assert after is not None and len(after.history) == len(before.history) + 2


async def test_a_press_after_an_erasure_through_another_worker_adds_nothing(
    harness: Harness,
) -> None:
    """Another worker erased everything (/forget, or a quick exit): the copy's press is
    answered, its write fails, and nothing at all is added to the chat."""
    await _at_second_question(harness)
    _other_store(harness).erase_owner(harness.owner)
    sent = len(harness.fake.calls_of("sendMessage"))
    edited = len(harness.fake.calls_of("editMessageText"))
    harness.fake.press_button(CHAT, (0, 0), user_id=USER)
    await harness.idle()
    assert harness.state() is None
    assert harness.fake.calls_of("sendMessage")[sent:] == []
    assert harness.fake.calls_of("editMessageText")[edited:] == []
    assert (
        harness.runtime.store.sessions_of(harness.owner, now=harness.runtime.service.clock()) == []
    )


async def test_a_refusal_on_the_copy_then_a_flow_that_cannot_load_is_answered_once(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An old question's button: the copy calls it stale, so the session is read afresh,
    and its flow cannot be loaded then. The press is answered "closed", once, and no
    handler fails (the copy's refusal must leave no trace of an answer sent)."""
    await _at_second_question(harness)
    old = harness.fake.last_message(CHAT)
    assert old is not None
    old_data = old["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    await harness.press((0, 0))  # the copy moves on; old_data is now an old question's
    service = harness.runtime.service
    flow_of = service.flow_of
    calls: list[int] = []

    def first_only(state: Any) -> Any:
        calls.append(1)
        if len(calls) > 1:
            raise InputRejected(Reason.STALE, detail="the flow version is gone")
        return flow_of(state)

    monkeypatch.setattr(service, "flow_of", first_only)
    answered = len(harness.fake.calls_of("answerCallbackQuery"))
    with caplog.at_level(logging.ERROR):
        harness.fake.press(CHAT, old["message_id"], old_data, user_id=USER)
        await harness.idle()
    assert len(calls) == 2  # the copy's decision, then the fresh read's
    answers = harness.fake.calls_of("answerCallbackQuery")[answered:]
    assert len(answers) == 1 and "closed" in (answers[0].get("text") or ""), answers
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_the_sweep_loop_drops_expired_copies_on_every_worker(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle worker keeps no copy of a session past its expiry: the sweep loop, which
    every worker runs (the purge runs on one at a time), drops them."""
    loops = [t.get_coro().cr_frame for t in harness.bot._tasks]  # type: ignore[union-attr]
    assert harness.bot._sweep in [f.f_locals.get("job") for f in loops if f is not None]
    await _at_second_question(harness)
    warm = harness.runtime.store._warm
    assert warm is not None and warm.currsize == 1
    clock = harness.runtime.service.clock
    monkeypatch.setattr(harness.runtime.service, "clock", lambda: clock() + timedelta(days=3650))
    await harness.bot._sweep()
    assert warm.currsize == 0
