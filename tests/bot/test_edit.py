"""The question's edit as the Bot API takes it (``WaymarkBot._edit``).

The hot path sends the keyboard as JSON built from its rows, not as PTB objects: it must
be exactly what PTB's own InlineKeyboardMarkup would have sent. (That the edits reach
the API, pass its schema and leave pressable buttons is the end-to-end tests' part.)
"""

from __future__ import annotations

import pytest

from bot.telegram_app import Rows, WaymarkBot, _markup_json


@pytest.mark.parametrize(
    "rows",
    [
        [[("Yes", "a:1"), ("No", "a:2")], [("Back", "a:3")]],
        [[("✅ نعم · Yes", "x" * 64)]],
        [[('Quote " and <b>', "q")], [("Ünïcödé", "u"), ("日本語", "j"), ("…", "e")]],
    ],
)
def test_the_keyboard_json_is_what_ptb_would_send(rows: Rows) -> None:
    # PTB sends a TelegramObject as its to_dict(), JSON-encoded, and a dict as it is; the
    # sends build theirs with WaymarkBot._keyboard.
    assert _markup_json(rows) == WaymarkBot._keyboard(rows).to_dict()
