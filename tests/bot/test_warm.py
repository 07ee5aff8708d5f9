"""Presses on a session this worker holds warm while another worker has moved it on.

The bot decides a press on its warm copy of the session (storage: ``Store.step``). With
several workers, that copy can be behind: the press must then be decided on what is
stored, never answered from the copy. "Another worker" here is a second Store and Service
on the same database, as a second process would have.
"""

from __future__ import annotations

from bot import presenter
from bot.callback_data import seq_code
from bot.service import Service, Turn
from flows.engine import current_ask
from flows.events import Choice
from storage.repository import Store
from tests.bot.conftest import CHAT, USER, Harness


def _other_worker_answers(harness: Harness) -> Turn:
    """Answer the current question with its first option, as another worker would."""
    runtime = harness.runtime
    other = Service(
        Store(runtime.store.engine, runtime.store.keys), runtime.flows, runtime.service.clock
    )
    found = other.current(harness.owner)
    assert found is not None
    _, state, flow = found
    codes, _ = presenter.answers(flow, current_ask(flow, state))
    return other.answer(harness.owner, Choice((codes[0],)), expected_seq=state.seq)


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
    harness.fake.press_button(CHAT, (0, 0), user_id=USER)
    await harness.idle()
    after = harness.state()
    assert after is not None
    assert (after.seq, after.history) == (turn.state.seq, turn.state.history)
    assert "This question is closed. Here is the current one." in harness.texts()
    assert harness.last()["message_id"] != shown["message_id"]  # the current one, anew
