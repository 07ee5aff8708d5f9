"""Every shipped flow plays end to end, in the console player and in the bot."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bot.console import ConsolePlayer
from bot.i18n import Translator
from bot.runtime import open_runtime
from bot.settings import Settings
from flows.loader import load_directory
from tests.bot.conftest import Harness

FLOWS = sorted(load_directory())


@pytest.mark.parametrize("flow_id", FLOWS)
def test_flow_plays_in_the_console(flow_id: str, tmp_path: Path) -> None:
    """Answering "1" (the first option) or a short text to everything reaches an outcome."""
    runtime = open_runtime(Settings(data_dir=tmp_path / "data"))
    out = io.StringIO()
    player = ConsolePlayer(runtime.service, Translator("en"), out)
    owner = "console-test"
    answers = io.StringIO("\n".join(["1"] * 400))

    class Lines(io.StringIO):
        """Feeds "1" to options, "12" to numbers and a note to text questions."""

        def __iter__(self):  # type: ignore[no-untyped-def]
            for line in answers:
                prompt = player.prompt
                if prompt is not None and prompt.typed == "number":
                    yield "12\n"
                elif prompt is not None and prompt.typed == "text":
                    yield "s\n" if any(a.code == "@skip" for a in prompt.actions) else "ok\n"
                else:
                    yield line

    assert player.play(flow_id, Lines(), owner) == 0
    assert runtime.service.current(owner) is None, out.getvalue()[-2000:]
    outcome_titles = [o.title for o in runtime.flows[flow_id].flow.outcomes]
    assert any(title in out.getvalue() for title in outcome_titles)
    runtime.close()


@pytest.mark.e2e
@pytest.mark.parametrize("flow_id", FLOWS)
async def test_flow_plays_in_the_bot(flow_id: str, harness: Harness) -> None:
    """Started through the bot and answered by buttons (and text where typed), it ends."""
    turn = harness.runtime.service.begin(harness.owner, flow_id)
    await harness.bot._render(_context(harness), turn, None)
    await harness.idle()
    await harness.play(typed="12")
    outcome_titles = [o.title for o in harness.runtime.flows[flow_id].flow.outcomes]
    texts = "\n".join(harness.texts())
    assert any(title in texts for title in outcome_titles)


def _context(harness: Harness):  # type: ignore[no-untyped-def]
    from bot.telegram_app import Context

    return Context(harness.owner, harness.chat, Translator("en"), "test-start")
