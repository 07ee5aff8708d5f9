"""The console player: any flow, in a terminal, through the same engine and storage.

Reads answers from standard input (so tests and scripts can drive it): the number of an
option, ``1,3`` for several, typed text or numbers, ``b`` back, ``s`` skip, ``q`` stop.
End of input pauses the flow; running the same command again resumes it.
"""

from __future__ import annotations

import getpass
from typing import TextIO

from bot import presenter
from bot.i18n import Translator
from bot.presenter import BACK, DONE, SKIP, Prompt
from bot.service import Service, Turn
from flows.engine import current_ask
from flows.errors import InputRejected
from flows.events import (
    Ask,
    Back,
    Cancel,
    Choice,
    Ended,
    Explain,
    Feedback,
    Input,
    OutcomeReached,
    Skip,
    TextInput,
)
from flows.loader import LoadedFlow


def console_owner(service: Service) -> str:
    """The console's pseudonymous owner: the operating-system account, keyed."""
    return service.store.keys.pseudonym("console", getpass.getuser())


class ConsolePlayer:
    """Plays one flow on a text stream pair.

    Args:
        service: The flow service.
        translator: Texts in the chosen language.
        out: Where to write.
    """

    def __init__(self, service: Service, translator: Translator, out: TextIO) -> None:
        self.service = service
        self.tr = translator
        self.out = out
        self.prompt: Prompt | None = None

    def say(self, text: str) -> None:
        """Write a block of text."""
        self.out.write(text + "\n")
        self.out.flush()

    def play(self, flow_id: str, lines: TextIO, owner: str) -> int:
        """Start or resume ``flow_id`` and play it until it ends or input runs out.

        Returns:
            The process exit status (0).
        """
        found = self.service.current(owner)
        if found is not None and found[1].flow_id == flow_id:
            _, state, flow = found
            self.say(self.tr.gettext("Resuming where you left off."))
            self.render_ask(flow, current_ask(flow, state))
        else:
            turn = self.service.begin(owner, flow_id)
            self.render(turn)
        for raw in lines:
            line = raw.strip()
            found = self.service.current(owner)
            if found is None:
                break
            _, state, flow = found
            given = self.parse(line)
            if given is None:
                self.say(self.tr.gettext("Please type the number of an option."))
                continue
            try:
                turn = self.service.answer(owner, given)
            except InputRejected as exc:
                self.say(presenter.rejection(self.tr, exc.reason, exc.detail))
                self.render_ask(flow, current_ask(flow, state))
                continue
            self.render(turn)
            if turn.state.status == "ended":
                return 0
        if self.service.current(owner) is not None:
            self.say(self.tr.gettext("Paused. Run the same command again to continue."))
        return 0

    def parse(self, line: str) -> Input | None:
        """Turn a typed line into an engine input, given the prompt on screen."""
        prompt = self.prompt
        word = line.lower()
        if word in ("q", "quit", "stop"):
            return Cancel()
        if word in ("b", "back"):
            return Back()
        if word in ("s", "skip"):
            return Skip()
        if prompt is None:
            return None
        if prompt.typed == "number":
            return TextInput(line) if line else None
        if prompt.typed == "text":
            return TextInput(line)
        answers = [a for a in prompt.actions if not a.code.startswith("@")]
        multi = any(a.code == DONE for a in prompt.actions)
        try:
            picks = [int(part) for part in line.replace(" ", "").split(",") if part]
        except ValueError:
            return None
        if not picks or any(not 1 <= p <= len(answers) for p in picks):
            return None
        codes = tuple(answers[p - 1].code for p in picks)
        if multi:
            return Choice(codes)
        return Choice(codes) if len(codes) == 1 else None

    def render(self, turn: Turn) -> None:
        """Show every event of a turn."""
        for event in turn.events:
            if isinstance(event, Ask):
                self.render_ask(turn.flow, event)
            elif isinstance(event, Feedback):
                self.say(presenter.feedback(self.tr, turn.flow, event.step_id, event.correct))
            elif isinstance(event, Explain):
                self.say(presenter.explanation(self.tr, turn.flow, event.step_id))
            elif isinstance(event, OutcomeReached):
                self.say("\n" + presenter.outcome(self.tr, turn.flow, event))
            elif isinstance(event, Ended) and event.reason in ("cancelled", "expired"):
                self.say(self.tr.gettext("Stopped."))

    def render_ask(self, flow: LoadedFlow, ask: Ask) -> None:
        """Show one question with numbered options."""
        prompt = presenter.prompt(self.tr, flow, ask)
        self.prompt = prompt
        lines = ["", f"[{prompt.header}]", prompt.body]
        number = 0
        for action in prompt.actions:
            if action.code.startswith("@"):
                continue
            number += 1
            mark = "[x] " if action.chosen else ""
            lines.append(f"  {number}. {mark}{action.label}")
        nav = []
        codes = {a.code for a in prompt.actions}
        if DONE in codes:
            nav.append(self.tr.gettext("several: 1,3"))
        if SKIP in codes:
            nav.append(self.tr.gettext("s = skip"))
        if BACK in codes:
            nav.append(self.tr.gettext("b = back"))
        nav.append(self.tr.gettext("q = stop"))
        lines.append("  (" + ", ".join(nav) + ")")
        self.say("\n".join(lines))
