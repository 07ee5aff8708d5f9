"""Turn engine events into what a person sees: text and labelled actions.

Shared by the console player and the Telegram front end, so both say the same thing in
the same words. Pure: no I/O; texts come from the ``Translator``.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.i18n import Translator
from flows.engine import choice_codes, consent_codes, yes_no_codes
from flows.errors import Reason
from flows.events import Ask, OutcomeReached
from flows.loader import LoadedFlow
from flows.model import (
    CHECKLIST_CODES,
    LEVEL_CODES,
    ChecklistStep,
    ChoiceStep,
    ConsentStep,
    InfoStep,
    MultiChoiceStep,
    NumberStep,
    QuizStep,
    RiskStep,
    Step,
    TextStep,
    YesNoStep,
)

#: Action codes that are navigation, not answers.
BACK = "@back"
SKIP = "@skip"
DONE = "@done"


@dataclass(frozen=True, slots=True)
class Action:
    """One thing the person can press or type a number for.

    Attributes:
        code: The option code, or a navigation code (``@back``, ``@skip``, ``@done``).
        label: What the button says.
        chosen: For multi choice: currently selected.
    """

    code: str
    label: str
    chosen: bool = False


@dataclass(frozen=True, slots=True)
class Prompt:
    """A question as shown.

    Attributes:
        header: Section title and progress, e.g. "Indicators · 3/12".
        body: The question text (with a hint for typed answers).
        actions: Buttons, in order (answers first, then navigation).
        typed: ``text`` or ``number`` when the answer is typed, else None.
    """

    header: str
    body: str
    actions: tuple[Action, ...]
    typed: str | None = None


def _t(tr: Translator, flow: LoadedFlow, owner: str, name: str, source: str) -> str:
    return tr.flow(flow.id, owner, name, source)


def _fixed_labels(tr: Translator) -> dict[str, str]:
    _ = tr.gettext
    return {
        "yes": _("Yes"),
        "no": _("No"),
        "not_sure": _("Not sure"),
        "prefer_not": _("Prefer not to say"),
        "partial": _("In part"),
        "na": _("Not applicable"),
        "low": _("Low"),
        "medium": _("Medium"),
        "high": _("High"),
        "agree": _("I agree"),
        "decline": _("I do not agree"),
        "explain": _("Explain again"),
        "continue": _("Continue"),
    }


def step_text(tr: Translator, flow: LoadedFlow, step: Step) -> str:
    """The translated text of a step."""
    return _t(tr, flow, step.id, "text", step.text)


def option_label(tr: Translator, flow: LoadedFlow, step: Step, code: str) -> str:
    """The translated label of one answer code of a step."""
    for option in getattr(step, "options", ()):
        if option.code == code:
            return _t(tr, flow, step.id, f"option.{code}", option.text)
    return _fixed_labels(tr).get(code, code)


def answers(flow: LoadedFlow, ask: Ask) -> tuple[tuple[str, ...], str | None]:
    """A question's buttons, without rendering any text.

    Returns:
        The action codes in button order (answers, then Done, Skip, Back), and ``text`` or
        ``number`` when the answer is typed, else None. A press is checked against these
        before anything is translated.
    """
    step = flow.steps[ask.step_id]
    codes: tuple[str, ...] = ()
    typed: str | None = None
    if isinstance(step, InfoStep):
        codes = ("continue",)
    elif isinstance(step, YesNoStep):
        codes = yes_no_codes(step)
    elif isinstance(step, ChoiceStep):
        codes = choice_codes(step)
    elif isinstance(step, MultiChoiceStep | QuizStep):
        codes = tuple(o.code for o in step.options)
    elif isinstance(step, ConsentStep):
        codes = consent_codes(step)
    elif isinstance(step, ChecklistStep):
        if ask.phase == "note":
            typed = "text"
        else:
            codes = CHECKLIST_CODES
    elif isinstance(step, RiskStep):
        if ask.phase in ("answer", "impact"):
            codes = LEVEL_CODES
        else:
            typed = "text"
    elif isinstance(step, NumberStep):
        typed = "number"
    elif isinstance(step, TextStep):
        typed = "text"
    if isinstance(step, MultiChoiceStep):
        codes += (DONE,)
    if ask.can_skip:
        codes += (SKIP,)
    if ask.can_back:
        codes += (BACK,)
    return codes, typed


def prompt(tr: Translator, flow: LoadedFlow, ask: Ask) -> Prompt:
    """Build the prompt of one ``Ask`` event."""
    _ = tr.gettext
    step = flow.steps[ask.step_id]
    section = flow.section_of[ask.step_id]
    title = _t(tr, flow, f"@{section.id}", "title", section.title)
    header = f"{title} · {tr.number(ask.position)}/{tr.number(ask.total)}"
    body = step_text(tr, flow, step)
    codes, typed = answers(flow, ask)
    # What to type, or which scale a risk's buttons are on.
    if isinstance(step, ChecklistStep) and ask.phase == "note":
        body += "\n\n" + _("Type a short note, or press Skip.")
    elif isinstance(step, RiskStep):
        if ask.phase == "answer":
            body += "\n\n" + _("How likely is it?")
        elif ask.phase == "impact":
            body += "\n\n" + _("How serious would the impact be?")
        else:
            body += "\n\n" + _("This risk is medium or high: type how it will be reduced, or Skip.")
    elif isinstance(step, NumberStep):
        body += "\n\n" + _("Type a number from {low} to {high}.").format(
            low=_number(step.min), high=_number(step.max)
        )
    elif isinstance(step, TextStep):
        body += "\n\n" + _("Type your answer (up to {n} characters).").format(n=step.max_length)
    if step.help and ask.phase == "answer":
        body += "\n\n" + _t(tr, flow, step.id, "help", step.help)
    labels = _fixed_labels(tr) | {DONE: _("Done"), SKIP: _("Skip"), BACK: _("Back")}
    actions = tuple(
        Action(
            c,
            labels[c] if c in labels else option_label(tr, flow, step, c),
            c in ask.selection,
        )
        for c in codes
    )
    return Prompt(header, body, actions, typed)


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def explanation(tr: Translator, flow: LoadedFlow, step_id: str) -> str:
    """The consent explanation or help text of a step, shown again on request."""
    step = flow.steps[step_id]
    if isinstance(step, ConsentStep) and step.explain:
        return _t(tr, flow, step.id, "explain", step.explain)
    if step.help:
        return _t(tr, flow, step.id, "help", step.help)
    return step_text(tr, flow, step)


def feedback(tr: Translator, flow: LoadedFlow, step_id: str, correct: bool) -> str:
    """The feedback of a quiz answer: right or wrong, the right answer, the explanation."""
    _ = tr.gettext
    step = flow.steps[step_id]
    assert isinstance(step, QuizStep)
    verdict = _("Correct.") if correct else _("Not quite.")
    right = option_label(tr, flow, step, step.correct)
    why = _t(tr, flow, step.id, "explanation", step.explanation)
    answer = _("Answer:")
    return f"{verdict} {answer} {right}\n{why}"


def outcome(tr: Translator, flow: LoadedFlow, event: OutcomeReached) -> str:
    """The outcome of a flow, with its summaries and (for screenings) the fixed note."""
    _ = tr.gettext
    reached = flow.outcomes[event.outcome_id]
    parts = [
        _t(tr, flow, reached.id, "title", reached.title),
        _t(tr, flow, reached.id, "text", reached.text),
    ]
    titles = {c.id: c.title for c in flow.flow.scoring.categories}
    if event.categories:
        found = [
            f"• {_t(tr, flow, f'#{cid}', 'title', titles.get(cid, cid))}: "
            + tr.ngettext("{n} indicator", "{n} indicators", count).format(n=tr.number(count))
            for cid, count in sorted(event.categories.items())
        ]
        parts.append(_("Indicators found, by category:") + "\n" + "\n".join(found))
    for i, next_step in enumerate(reached.next_steps):
        parts.append(f"→ {_t(tr, flow, reached.id, f'next.{i}', next_step)}")
    if event.quiz is not None:
        parts.append(
            _("Score: {correct} of {total}.").format(
                correct=tr.number(event.quiz.correct), total=tr.number(event.quiz.total)
            )
        )
        for step_id in event.quiz.missed:
            missed = flow.steps[step_id]
            assert isinstance(missed, QuizStep)
            answer = _("Answer:")
            parts.append(
                f"✗ {step_text(tr, flow, missed)}\n   {answer} "
                f"{option_label(tr, flow, missed, missed.correct)}"
            )
    for summary in event.checklist:
        section = next(s for s in flow.flow.sections if s.id == summary.section_id)
        labels = _fixed_labels(tr)
        counts = ", ".join(f"{labels[k]} {tr.number(v)}" for k, v in summary.counts.items())
        lines = [f"{_t(tr, flow, f'@{section.id}', 'title', section.title)}: {counts}"]
        for item_id in summary.missing:
            item = flow.steps[item_id]
            refs = getattr(item, "points_to", ())
            see = " (" + _("see {tools}").format(tools=", ".join(refs)) + ")" if refs else ""
            lines.append(f"   – {step_text(tr, flow, item)}{see}")
        parts.append("\n".join(lines))
    for risk in event.risks:
        labels = _fixed_labels(tr)
        line = f"{step_text(tr, flow, flow.steps[risk.step_id])}: {labels[risk.rating]}"
        if risk.mitigation_missing:
            line += " — " + _("mitigation still needed")
        parts.append(line)
    if event.screening_note:
        parts.append(screening_note(tr))
    return "\n\n".join(parts)


def rejection(tr: Translator, reason: Reason, detail: dict[str, object]) -> str:
    """A clear, translated message for an input the question does not accept."""
    _ = tr.gettext
    messages = {
        Reason.NOT_ACTIVE: _("There is no open checklist. Send /start to choose one."),
        Reason.NOT_ACCEPTED: _("Please answer with one of the buttons."),
        Reason.UNKNOWN_OPTION: _("That is not one of the options; please choose again."),
        Reason.NOT_A_NUMBER: _("Please type a whole number, for example 12."),
        Reason.EMPTY: _("The answer is empty; please type something, or press Skip."),
        Reason.CANNOT_GO_BACK: _("This is the first question; there is nothing to go back to."),
        Reason.CANNOT_SKIP: _("This question cannot be skipped."),
        Reason.STALE: _("This question is closed. Here is the current one."),
    }
    if reason is Reason.OUT_OF_RANGE:
        low, high = detail.get("min"), detail.get("max")
        if isinstance(low, int | float) and isinstance(high, int | float):
            return _("Please give a value from {low} to {high}.").format(
                low=_number(low), high=_number(high)
            )
        return _("That is too many choices for this question.")
    if reason is Reason.TOO_LONG:
        return _("That is too long: at most {n} characters, please.").format(n=detail.get("max"))
    return messages[reason]


def screening_note(tr: Translator) -> str:
    """The fixed note every screening outcome carries."""
    return tr.gettext(
        "This screening supports your decision on next steps. It does not identify anyone as "
        "a victim and is not a legal finding."
    )
