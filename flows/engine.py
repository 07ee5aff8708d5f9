"""The pure flow engine: ``start`` and ``resume`` return a new state and events.

No I/O, no clock, no randomness: the caller passes ``now`` and a seed. An input the current
step does not accept raises ``InputRejected`` (the caller re-prompts and nothing changes);
a defect of the flow met at run time ends the session with ``Ended("failed")`` instead of
raising, so that one bad file never crashes a conversation.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flows import limits
from flows.errors import InputRejected, Reason
from flows.events import (
    AlertWorthy,
    Ask,
    Back,
    Cancel,
    Choice,
    Ended,
    Event,
    Expire,
    Explain,
    Feedback,
    ForgetAnswer,
    Input,
    NumberInput,
    OutcomeReached,
    QuizResult,
    RecordAnswer,
    RiskSummary,
    SectionSummary,
    Skip,
    TextInput,
    Toggle,
)
from flows.loader import LoadedFlow
from flows.model import (
    CHECKLIST_CODES,
    LEVEL_CODES,
    ChecklistStep,
    ChoiceStep,
    ConsentStep,
    InfoStep,
    Kind,
    MultiChoiceStep,
    NumberStep,
    Option,
    QuizStep,
    RiskStep,
    Step,
    Store,
    TextStep,
    YesNoStep,
)
from flows.state import State

#: Likelihood × impact → rating; the usual 3×3 matrix (1-2 low, 3-4 medium, 6-9 high).
_LEVEL = {"low": 1, "medium": 2, "high": 3}


def risk_rating(likelihood: str, impact: str) -> str:
    """Combine likelihood and impact into Low, Medium or High."""
    product = _LEVEL[likelihood] * _LEVEL[impact]
    return "low" if product <= 2 else ("medium" if product <= 4 else "high")


def yes_no_codes(step: YesNoStep) -> tuple[str, ...]:
    """The answer codes a yes/no step offers, in button order."""
    optional = (("not_sure",) if step.not_sure else ()) + (
        ("prefer_not",) if step.prefer_not_to_say else ()
    )
    return ("yes", "no", *optional)


def choice_codes(step: ChoiceStep) -> tuple[str, ...]:
    """The answer codes a single-choice step offers, in button order."""
    return (*(o.code for o in step.options), *(("prefer_not",) if step.prefer_not_to_say else ()))


def consent_codes(step: ConsentStep) -> tuple[str, ...]:
    """Agree, decline, and "explain again" when the step has an explanation."""
    return ("agree", "decline", "explain") if (step.explain or step.help) else ("agree", "decline")


@dataclass(frozen=True, slots=True)
class StartContext:
    """What the caller supplies to start a session.

    Attributes:
        seed: Seeds the quiz sampling and shuffle; the caller draws it.
    """

    seed: int = 0


Result = tuple[State, list[Event]]


def start(flow: LoadedFlow, ctx: StartContext, now: datetime) -> Result:
    """Start a session of ``flow``: the first visible step is asked.

    Args:
        flow: The loaded flow.
        ctx: The start context (seed).
        now: The caller's clock.

    Returns:
        The new state and its events.
    """
    order = _sitting_order(flow, ctx.seed)
    state = State(
        flow_id=flow.id,
        flow_version=flow.version,
        flow_digest=flow.digest,
        order=order,
        started_at=now.isoformat(),
    )
    events: list[Event] = []
    first = (order or flow.order)[0]
    return _enter(flow, state, first, events)


def resume(flow: LoadedFlow, state: State, given: Input, now: datetime) -> Result:
    """Apply one input to a waiting session.

    Args:
        flow: The flow the session is pinned to (same id, version and digest).
        state: The state returned by the last call.
        given: What the person did.
        now: The caller's clock (kept for symmetry with ``start``; expiry is an input).

    Returns:
        The new state and its events.

    Raises:
        InputRejected: The step does not accept this input; nothing changed.
    """
    del now  # time enters only through inputs (Expire); kept in the signature on purpose
    if state.status != "active" or state.current is None:
        raise InputRejected(Reason.NOT_ACTIVE)
    if state.flow_digest != flow.digest:
        raise InputRejected(Reason.STALE, detail="the session is pinned to other content")
    events: list[Event] = []
    if isinstance(given, Cancel):
        return _finish(flow, state.model_copy(update={"pending": {}}), None, "cancelled", events)
    if isinstance(given, Expire):
        return _finish(flow, state.model_copy(update={"pending": {}}), None, "expired", events)
    step = flow.steps[state.current]
    if isinstance(given, Back):
        return _back(flow, state, step, events)
    return _answer(flow, state, step, given, events)


def current_ask(flow: LoadedFlow, state: State) -> Ask:
    """The question a waiting session is on, to show it again.

    Used after a restart or a stale button. Pure: the state does not change.

    Raises:
        InputRejected: The session is not waiting for input.
    """
    if state.status != "active" or state.current is None:
        raise InputRejected(Reason.NOT_ACTIVE)
    _, events = _ask(flow, state, [])
    ask = events[-1]
    assert isinstance(ask, Ask)
    return ask


# --------------------------------------------------------------------------- answering


def _answer(
    flow: LoadedFlow, state: State, step: Step, given: Input, events: list[Event]
) -> Result:
    phase = state.phase
    if isinstance(step, ChecklistStep) and phase == "note":
        return _finish_step(flow, state, step, {**state.pending, "note": _note(given)}, events)
    if isinstance(step, RiskStep) and phase in ("impact", "mitigation"):
        return _risk_part(flow, state, step, given, events)
    if isinstance(given, Skip):
        if not step.skippable:
            raise InputRejected(Reason.CANNOT_SKIP)
        return _advance(flow, state, step, None, None, events)
    if isinstance(step, InfoStep):
        _one_choice(given, ("continue",))
        return _advance(flow, state, step, None, None, events)
    if isinstance(step, YesNoStep):
        code = _one_choice(given, yes_no_codes(step))
        return _advance(flow, state, step, code, None, events)
    if isinstance(step, ChoiceStep):
        code = _one_choice(given, choice_codes(step))
        option = next((o for o in step.options if o.code == code), None)
        return _advance(flow, state, step, code, option, events)
    if isinstance(step, MultiChoiceStep):
        return _multi(flow, state, step, given, events)
    if isinstance(step, NumberStep):
        number = _number(step, given)
        return _advance(flow, state, step, number, None, events)
    if isinstance(step, TextStep):
        text = _text(given, step.max_length)
        return _advance(flow, state, step, text, None, events)
    if isinstance(step, ConsentStep):
        code = _one_choice(given, consent_codes(step))
        if code == "explain":
            # Hearing it again is not an answer: same question, new sequence number.
            events.append(Explain(step.id))
            return _ask(flow, state.model_copy(update={"seq": state.seq + 1}), events)
        if code == "decline":
            state = _remember(state, step, code, events)
            return _finish(flow, state, step.on_decline, "declined", events)
        return _advance(flow, state, step, code, None, events)
    if isinstance(step, QuizStep):
        code = _one_choice(given, tuple(o.code for o in step.options))
        events.append(Feedback(step.id, code, code == step.correct))
        option = next(o for o in step.options if o.code == code)
        return _advance(flow, state, step, code, option, events)
    if isinstance(step, ChecklistStep):
        code = _one_choice(given, CHECKLIST_CODES)
        if step.note:
            new = state.model_copy(
                update={"phase": "note", "pending": {"status": code}, "seq": state.seq + 1}
            )
            return _ask(flow, new, events)
        return _finish_step(flow, state, step, {"status": code}, events)
    if isinstance(step, RiskStep):
        code = _one_choice(given, LEVEL_CODES)
        new = state.model_copy(
            update={"phase": "impact", "pending": {"likelihood": code}, "seq": state.seq + 1}
        )
        return _ask(flow, new, events)
    raise AssertionError(f"unhandled step type {type(step).__name__}")  # pragma: no cover


def _one_choice(given: Input, codes: tuple[str, ...]) -> str:
    if not isinstance(given, Choice) or len(given.values) != 1:
        raise InputRejected(Reason.NOT_ACCEPTED, expected="choice")
    code = given.values[0]
    if code not in codes:
        raise InputRejected(Reason.UNKNOWN_OPTION, code=code)
    return code


def _multi(
    flow: LoadedFlow, state: State, step: MultiChoiceStep, given: Input, events: list[Event]
) -> Result:
    codes = {o.code for o in step.options}
    if isinstance(given, Toggle):
        if given.value not in codes:
            raise InputRejected(Reason.UNKNOWN_OPTION, code=given.value)
        chosen = list(state.pending.get("selection", []))
        if given.value in chosen:
            chosen.remove(given.value)
        else:
            if step.max_choices is not None and len(chosen) >= step.max_choices:
                raise InputRejected(Reason.OUT_OF_RANGE, max=step.max_choices)
            chosen.append(given.value)
        # Keep the flow's option order so the same selection always looks the same.
        ordered = [o.code for o in step.options if o.code in chosen]
        new = state.model_copy(update={"pending": {"selection": ordered}})
        # A toggle re-renders the same question: its seq stays, so its buttons stay valid.
        return _ask(flow, new, events)
    if not isinstance(given, Choice):
        raise InputRejected(Reason.NOT_ACCEPTED, expected="choice")
    unknown = [v for v in given.values if v not in codes]
    if unknown:
        raise InputRejected(Reason.UNKNOWN_OPTION, code=unknown[0])
    chosen = [o.code for o in step.options if o.code in given.values]
    if len(chosen) < step.min_choices or (
        step.max_choices is not None and len(chosen) > step.max_choices
    ):
        raise InputRejected(Reason.OUT_OF_RANGE, min=step.min_choices, max=step.max_choices)
    return _advance(flow, state, step, chosen, None, events)


def _number(step: NumberStep, given: Input) -> float | int:
    if isinstance(given, NumberInput):
        value = given.value
    elif isinstance(given, TextInput):
        try:
            value = float(given.value.strip().replace(",", "."))
        except ValueError:
            raise InputRejected(Reason.NOT_A_NUMBER) from None
    else:
        raise InputRejected(Reason.NOT_ACCEPTED, expected="number")
    if not math.isfinite(value) or (step.integer and value != int(value)):
        raise InputRejected(Reason.NOT_A_NUMBER)
    if not step.min <= value <= step.max:
        raise InputRejected(Reason.OUT_OF_RANGE, min=step.min, max=step.max)
    return int(value) if step.integer else value


def _text(given: Input, max_length: int) -> str:
    if not isinstance(given, TextInput):
        raise InputRejected(Reason.NOT_ACCEPTED, expected="text")
    text = given.value.strip()
    if not text:
        raise InputRejected(Reason.EMPTY)
    if len(text) > max_length:
        raise InputRejected(Reason.TOO_LONG, max=max_length, length=len(text))
    return text


def _note(given: Input) -> str | None:
    if isinstance(given, Skip):
        return None
    return _text(given, limits.MAX_TEXT_CHARS)


def _risk_part(
    flow: LoadedFlow, state: State, step: RiskStep, given: Input, events: list[Event]
) -> Result:
    if state.phase == "impact":
        impact = _one_choice(given, LEVEL_CODES)
        rating = risk_rating(state.pending["likelihood"], impact)
        pending = {**state.pending, "impact": impact, "rating": rating}
        if rating == "low":
            return _finish_step(flow, state, step, {**pending, "mitigation": None}, events)
        new = state.model_copy(
            update={"phase": "mitigation", "pending": pending, "seq": state.seq + 1}
        )
        return _ask(flow, new, events)
    mitigation = _note(given)
    return _finish_step(flow, state, step, {**state.pending, "mitigation": mitigation}, events)


def _finish_step(
    flow: LoadedFlow, state: State, step: Step, value: dict[str, Any], events: list[Event]
) -> Result:
    state = state.model_copy(update={"phase": "answer", "pending": {}})
    return _advance(flow, state, step, value, None, events)


# --------------------------------------------------------------------------- moving on


def _remember(state: State, step: Step, value: Any, events: list[Event]) -> State:
    """Put the answer into the state (without free text) and emit what the policy keeps."""
    kept = _policy_value(step, value)
    if kept is not None:
        events.append(RecordAnswer(step.id, kept, step.store))
    answers = {**state.answers, step.id: _state_value(value)}
    history = (*state.history, step.id)
    return state.model_copy(update={"answers": answers, "history": history})


def _state_value(value: Any) -> Any:
    """What conditions and scoring see: a note or mitigation becomes ``True`` (given)."""
    if isinstance(value, dict):
        return {k: (v is not None if k in ("note", "mitigation") else v) for k, v in value.items()}
    return value


def _policy_value(step: Step, value: Any) -> Any:
    """The part of an answer the step's ``store`` policy keeps, or None for nothing."""
    if step.store is Store.NONE or value is None:
        return None
    if step.store is Store.ENCRYPTED:
        return value
    # store: code keeps codes only: drop notes and mitigations, keep statuses and ratings.
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in ("note", "mitigation")}
    return value


def _advance(
    flow: LoadedFlow,
    state: State,
    step: Step,
    value: Any,
    option: Option | None,
    events: list[Event],
) -> Result:
    if value is not None:
        if isinstance(step, TextStep):
            kept = value if step.store is Store.ENCRYPTED else None
            if kept is not None:
                events.append(RecordAnswer(step.id, kept, step.store))
            answers = {**state.answers, step.id: True}
            state = state.model_copy(
                update={"answers": answers, "history": (*state.history, step.id)}
            )
        else:
            state = _remember(state, step, value, events)
    else:
        state = state.model_copy(update={"history": (*state.history, step.id)})
    if option is not None and option.end is not None:
        return _finish(flow, state, option.end, "completed", events)
    if option is not None and option.goto is not None:
        return _enter(flow, state, option.goto, events)
    if step.end is not None:
        return _finish(flow, state, step.end, "completed", events)
    target = step.next if step.next is not None else _sequential(flow, state, step.id)
    if target is None:
        return _finish(flow, state, None, "completed", events)
    return _enter(flow, state, target, events)


def _sequential(flow: LoadedFlow, state: State, step_id: str) -> str | None:
    order = state.order or flow.order
    if step_id not in order:
        return None
    index = order.index(step_id)
    return order[index + 1] if index + 1 < len(order) else None


def _enter(flow: LoadedFlow, state: State, step_id: str | None, events: list[Event]) -> Result:
    """Move to ``step_id``, passing over steps whose condition is false, and ask it."""
    env = _env(flow, state)
    for _ in range(limits.MAX_STEPS_PER_RESUME):
        if step_id is None:
            return _finish(flow, state, None, "completed", events)
        condition = flow.conditions.get(step_id)
        if condition is None or condition.evaluate(env):
            new = state.model_copy(
                update={"current": step_id, "phase": "answer", "pending": {}, "seq": state.seq + 1}
            )
            return _ask(flow, new, events)
        step_id = _sequential(flow, state, step_id)
    events.append(Ended("failed", {"why": "too many steps without a question"}))
    return state.model_copy(update={"status": "ended", "end_reason": "failed"}), events


def _ask(flow: LoadedFlow, state: State, events: list[Event]) -> Result:
    assert state.current is not None
    step = flow.steps[state.current]
    position = len(state.history) + 1
    total = position + _remaining(flow, state, state.current)
    in_sub_phase = state.phase in ("note", "mitigation")
    events.append(
        Ask(
            step_id=step.id,
            seq=state.seq,
            phase=state.phase,
            position=position,
            total=total,
            selection=tuple(state.pending.get("selection", ())),
            can_back=bool(state.history) and step.back and state.phase == "answer",
            can_skip=step.skippable or in_sub_phase,
        )
    )
    return state, events


def _remaining(flow: LoadedFlow, state: State, current: str) -> int:
    order = state.order or flow.order
    if current not in order:
        return 0
    env = _env(flow, state)
    after = order[order.index(current) + 1 :]
    return sum(
        1 for sid in after if sid not in flow.conditions or flow.conditions[sid].evaluate(env)
    )


def _back(flow: LoadedFlow, state: State, step: Step, events: list[Event]) -> Result:
    if state.phase != "answer":
        # Inside a multi-part step Back restarts the step.
        new = state.model_copy(update={"phase": "answer", "pending": {}, "seq": state.seq + 1})
        return _ask(flow, new, events)
    if not state.history or not step.back:
        raise InputRejected(Reason.CANNOT_GO_BACK)
    previous = state.history[-1]
    answers = {k: v for k, v in state.answers.items() if k != previous}
    if flow.steps[previous].store is not Store.NONE and previous in state.answers:
        events.append(ForgetAnswer(previous))
    new = state.model_copy(
        update={
            "history": state.history[:-1],
            "answers": answers,
            "current": previous,
            "phase": "answer",
            "pending": {},
            "seq": state.seq + 1,
        }
    )
    return _ask(flow, new, events)


# --------------------------------------------------------------------------- scoring and ends


def _env(flow: LoadedFlow, state: State) -> dict[str, Any]:
    """The names conditions and outcome rules can read."""
    env: dict[str, Any] = {}
    for step_id, value in state.answers.items():
        if isinstance(value, dict):
            env[step_id] = value.get("status", value.get("rating"))
        else:
            env[step_id] = value
    score, weighted, _ = _indicators(flow, state)
    env["score"] = score
    for category, points in weighted.items():
        env[f"category.{category}"] = points
    quiz = _quiz(flow, state)
    if quiz is not None:
        env["quiz_correct"] = quiz.correct
        env["quiz_total"] = quiz.total
        env["quiz_ratio"] = quiz.correct / quiz.total if quiz.total else 0.0
    return env


def _indicators(flow: LoadedFlow, state: State) -> tuple[int, dict[str, int], dict[str, int]]:
    """Total score, score per category, and number of indicators found per category."""
    score = 0
    weighted: dict[str, int] = {}
    found: dict[str, int] = {}
    for step_id, value in state.answers.items():
        indicator = getattr(flow.steps.get(step_id), "indicator", None)
        if indicator is None:
            continue
        chosen = value if isinstance(value, list) else [value]
        if any(code in indicator.on for code in chosen):
            score += indicator.weight
            weighted[indicator.category] = weighted.get(indicator.category, 0) + indicator.weight
            found[indicator.category] = found.get(indicator.category, 0) + 1
    return score, weighted, found


def _quiz(flow: LoadedFlow, state: State) -> QuizResult | None:
    questions = [s for s in (flow.steps[i] for i in state.history) if isinstance(s, QuizStep)]
    if flow.flow.kind is not Kind.QUIZ and not questions:
        return None
    by_topic: dict[str, tuple[int, int]] = {}
    missed: list[str] = []
    correct = 0
    for step in questions:
        right = state.answers.get(step.id) == step.correct
        correct += right
        good, total = by_topic.get(step.topic, (0, 0))
        by_topic[step.topic] = (good + right, total + 1)
        if not right:
            missed.append(step.id)
    return QuizResult(correct, len(questions), by_topic, tuple(missed))


def _checklist(flow: LoadedFlow, state: State) -> tuple[SectionSummary, ...]:
    summaries = []
    for section in flow.flow.sections:
        items = [s for s in section.steps if isinstance(s, ChecklistStep)]
        if not items:
            continue
        counts = dict.fromkeys(CHECKLIST_CODES, 0)
        missing = []
        for item in items:
            answer = state.answers.get(item.id)
            status = answer.get("status") if isinstance(answer, dict) else None
            if status is None:
                continue
            counts[status] += 1
            if status in ("no", "partial"):
                missing.append(item.id)
        summaries.append(SectionSummary(section.id, counts, tuple(missing)))
    return tuple(summaries)


def _risks(flow: LoadedFlow, state: State) -> tuple[RiskSummary, ...]:
    out = []
    for step_id in state.history:
        answer = state.answers.get(step_id)
        if isinstance(flow.steps[step_id], RiskStep) and isinstance(answer, dict):
            out.append(
                RiskSummary(
                    step_id,
                    answer["likelihood"],
                    answer["impact"],
                    answer["rating"],
                    mitigation_missing=answer["rating"] != "low" and not answer.get("mitigation"),
                )
            )
    return tuple(out)


def _finish(
    flow: LoadedFlow, state: State, outcome_id: str | None, reason: str, events: list[Event]
) -> Result:
    if reason in ("cancelled", "expired"):
        events.append(Ended(reason))
        ended = state.model_copy(update={"status": "ended", "end_reason": reason, "current": None})
        return compact(flow, ended), events
    env = _env(flow, state)
    if outcome_id is None:
        for outcome in flow.flow.outcomes:
            if outcome.only_by_jump:
                continue
            if outcome.min_score is not None and env["score"] < outcome.min_score:
                continue
            rule = flow.outcome_rules.get(outcome.id)
            if rule is not None and not rule.evaluate(env):
                continue
            outcome_id = outcome.id
    if outcome_id is None:
        events.append(Ended("failed", {"why": "no outcome matched"}))
        return state.model_copy(update={"status": "ended", "end_reason": "failed"}), events
    outcome = flow.outcomes[outcome_id]
    _, _, found = _indicators(flow, state)
    events.append(
        OutcomeReached(
            outcome_id=outcome_id,
            score=env["score"],
            categories=found,
            alert=outcome.alert,
            child=outcome.child,
            screening_note=flow.flow.kind is Kind.SCREENING,
            quiz=_quiz(flow, state),
            checklist=_checklist(flow, state),
            risks=_risks(flow, state),
        )
    )
    if outcome.alert or outcome.child:
        events.append(AlertWorthy(outcome_id, tuple(sorted(found)), outcome.child))
    events.append(Ended(reason))
    ended = state.model_copy(
        update={"status": "ended", "end_reason": reason, "current": None, "outcome": outcome_id}
    )
    return compact(flow, ended), events


def compact(flow: LoadedFlow, state: State) -> State:
    """Drop what an ended session no longer needs: answers the data policy does not keep.

    While a flow runs, its state holds answer codes for conditions and scoring; once it has
    ended, only the answers a step's ``store`` keeps may remain.
    """
    if state.status != "ended":
        return state
    kept = {
        k: v
        for k, v in state.answers.items()
        if k in flow.steps and flow.steps[k].store is not Store.NONE
    }
    return state.model_copy(update={"answers": kept, "history": (), "pending": {}, "order": None})


def _sitting_order(flow: LoadedFlow, seed: int) -> tuple[str, ...] | None:
    """The order of a quiz sitting: quiz steps sampled and shuffled by seed, others in place."""
    scoring = flow.flow.scoring
    if not scoring.shuffle and scoring.questions_per_sitting is None:
        return None
    rng = random.Random(seed)  # noqa: S311 - ordering questions, not security
    quiz_ids = [sid for sid in flow.order if isinstance(flow.steps[sid], QuizStep)]
    chosen = list(quiz_ids)
    if scoring.shuffle:
        rng.shuffle(chosen)
    if scoring.questions_per_sitting is not None:
        chosen = chosen[: scoring.questions_per_sitting]
    picked = iter(chosen)
    order: list[str] = []
    for sid in flow.order:
        if sid in quiz_ids:
            nxt = next(picked, None)
            if nxt is not None:
                order.append(nxt)
        else:
            order.append(sid)
    return tuple(order)
