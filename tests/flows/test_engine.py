"""Engine transcripts: every step kind, every scoring rule, the input contract."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flows.engine import StartContext, current_ask, resume, start
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
    RecordAnswer,
    Skip,
    TextInput,
    Toggle,
)
from flows.loader import LoadedFlow, load_text
from flows.state import State
from tests.conftest import T0

KINDS = """\
spec_version: 1
id: kinds
version: 1
kind: screening
title: Every kind
retention: 30d
sections:
  - id: one
    title: One
    steps:
      - {id: info, type: info, text: Hello, source: s}
      - {id: consent, type: consent, text: "Agree?", explain: Because., on_decline: declined, source: s, store: code}
      - {id: minor, type: yes_no, text: "Under 18?", source: s, store: code, prefer_not_to_say: false}
      - id: means
        type: yes_no
        text: Deceived?
        source: s
        store: code
        when: "minor == 'no'"
        indicator: {category: deception, weight: 2}
      - id: place
        type: single_choice
        text: Where?
        source: s
        store: code
        options:
          - {code: farm, text: Farm}
          - {code: boat, text: Boat, goto: hours}
          - {code: stop, text: Nowhere, end: declined}
      - id: held
        type: multi_choice
        text: Held?
        source: s
        store: code
        options: [{code: passport, text: Passport}, {code: wages, text: Wages}, {code: phone, text: Phone}]
        indicator: {category: control, weight: 1, on: [passport, wages]}
      - {id: hours, type: number, text: "Hours?", min: 0, max: 24, source: s, store: encrypted}
      - {id: note, type: text, text: "Anything?", source: s, store: none, max_length: 20, skippable: true}
      - {id: kept_note, type: text, text: "Kept?", source: s, store: encrypted, skippable: true}
  - id: two
    title: Two
    steps:
      - {id: item, type: checklist_item, text: "Private room?", note: true, source: s, store: code, points_to: ["Tool 1.6"]}
      - {id: risk, type: risk, text: Retaliation, source: s, store: encrypted}
scoring:
  categories: [{id: deception, title: Deception}, {id: control, title: Control}]
outcomes:
  - {id: none, title: None, text: T}
  - {id: some, title: Some, text: T, min_score: 1}
  - {id: strong, title: Strong, text: T, min_score: 3, alert: true}
  - {id: child, title: Child, text: T, when: "minor in ['yes', 'not_sure']", child: true, alert: true}
  - {id: declined, title: Declined, text: T, only_by_jump: true}
"""


@pytest.fixture(scope="module")
def kinds() -> LoadedFlow:
    return load_text(KINDS, "kinds.yaml")


def play(flow: LoadedFlow, inputs: list[Input], seed: int = 0) -> tuple[State, list[Event]]:
    """Start, feed every input, and round-trip the state through JSON between steps."""
    state, events = start(flow, StartContext(seed), T0)
    out = list(events)
    for given in inputs:
        state = State.load(json.loads(json.dumps(state.dump())))  # persisted and read back
        state, events = resume(flow, state, given, T0)
        out.extend(events)
    return state, out


def asks(events: list[Event]) -> list[str]:
    return [f"{e.step_id}:{e.phase}" for e in events if isinstance(e, Ask)]


def records(events: list[Event]) -> dict[str, Any]:
    return {e.step_id: e.value for e in events if isinstance(e, RecordAnswer)}


def only(events: list[Event], kind: type) -> Any:
    found = [e for e in events if isinstance(e, kind)]
    assert len(found) == 1, found
    return found[0]


def c(*codes: str) -> Choice:
    return Choice(codes)


FULL = [
    c("continue"),
    c("agree"),
    c("no"),
    c("yes"),
    c("farm"),
    Toggle("passport"),
    Toggle("wages"),
    Toggle("wages"),
    c("passport", "wages"),
    TextInput("12"),
    TextInput("scared of boss"),
    TextInput("keep me"),
    c("no"),
    TextInput("no room"),
    c("high"),
    c("high"),
    TextInput("move tonight"),
]


def test_full_transcript_every_kind(kinds: LoadedFlow) -> None:
    """One pass through every step kind: questions, records, the outcome, the alert."""
    state, events = play(kinds, FULL)
    assert asks(events) == [
        "info:answer", "consent:answer", "minor:answer", "means:answer", "place:answer",
        "held:answer", "held:answer", "held:answer", "held:answer", "hours:answer",
        "note:answer", "kept_note:answer", "item:answer", "item:note", "risk:answer",
        "risk:impact", "risk:mitigation",
    ]  # fmt: skip
    assert records(events) == {
        "consent": "agree",
        "minor": "no",
        "means": "yes",
        "place": "farm",
        "held": ["passport", "wages"],
        "hours": 12,
        "kept_note": "keep me",
        "item": {"status": "no"},  # store: code keeps the status, never the note
        "risk": {
            "likelihood": "high",
            "impact": "high",
            "rating": "high",
            "mitigation": "move tonight",
        },
    }
    assert "note" not in records(events)  # store: none text is never emitted
    outcome = only(events, OutcomeReached)
    # means (weight 2) + held (weight 1: an indicator counts once per step, however many codes)
    assert (outcome.outcome_id, outcome.score, outcome.alert, outcome.child) == (
        "strong",
        3,
        True,
        False,
    )
    assert outcome.categories == {"deception": 1, "control": 1}
    assert outcome.screening_note is True
    assert outcome.checklist[0].missing == ("item",)
    assert outcome.risks[0].mitigation_missing is False
    assert only(events, AlertWorthy).categories == ("control", "deception")
    assert only(events, Ended).reason == "completed"
    assert state.status == "ended"


def test_state_never_holds_free_text(kinds: LoadedFlow) -> None:
    """Typed text is only in RecordAnswer (when kept), never in the state."""
    state, _ = play(kinds, FULL[:12])
    dumped = json.dumps(state.dump())
    for text in ("scared of boss", "keep me"):
        assert text not in dumped
    assert state.answers["note"] is True


def test_ended_state_is_compacted(kinds: LoadedFlow) -> None:
    """After the end only answers the policy keeps remain in the state."""
    state, _ = play(kinds, FULL)
    assert "note" not in state.answers and "info" not in state.answers
    assert state.history == ()


def test_multi_choice_toggle_keeps_seq_and_order(kinds: LoadedFlow) -> None:
    """Toggles re-ask the same question (same seq) with the selection in option order."""
    _, events = play(kinds, FULL[:8])
    held = [e for e in events if isinstance(e, Ask) and e.step_id == "held"]
    assert {e.seq for e in held} == {held[0].seq}
    assert [e.selection for e in held] == [(), ("passport",), ("passport", "wages"), ("passport",)]


def test_child_branch_skips_means_and_wins(kinds: LoadedFlow) -> None:
    """A possible child skips the means question and reaches the child outcome."""
    inputs = [c("continue"), c("agree"), c("not_sure"), c("boat"), TextInput("3")]
    inputs += [Skip(), Skip(), c("yes"), Skip(), c("low"), c("low")]
    _, events = play(kinds, inputs)
    assert "means:answer" not in asks(events)
    assert "held:answer" not in asks(events)  # the boat option jumped to hours
    outcome = only(events, OutcomeReached)
    assert (outcome.outcome_id, outcome.child, outcome.alert) == ("child", True, True)
    assert only(events, AlertWorthy).child is True


def test_option_end_and_consent_decline(kinds: LoadedFlow) -> None:
    """Declining consent ends with the declined outcome, keeping only the consent code."""
    _, events = play(kinds, [c("continue"), c("decline")])
    assert only(events, OutcomeReached).outcome_id == "declined"
    assert records(events) == {"consent": "decline"}
    assert only(events, Ended).reason == "declined"
    _, events = play(kinds, [c("continue"), c("agree"), c("no"), c("no"), c("stop")])
    assert only(events, OutcomeReached).outcome_id == "declined"


def test_consent_explain_repeats_the_question(kinds: LoadedFlow) -> None:
    """Explain shows the explanation and asks the same step again with a new seq."""
    _, events = play(kinds, [c("continue"), c("explain")])
    assert isinstance(events[-2], Explain) and events[-1].step_id == "consent"
    first, again = [e for e in events if isinstance(e, Ask) and e.step_id == "consent"]
    assert again.seq == first.seq + 1


def test_tiers_by_score(kinds: LoadedFlow) -> None:
    """No indicator: none; one (weight 1): some; weight 3+: strong. The last match wins."""
    base = [c("continue"), c("agree"), c("no")]
    tail = [TextInput("1"), Skip(), Skip(), c("yes"), Skip(), c("low"), c("low")]
    none = [*base, c("no"), c("farm"), c("phone"), *tail]
    some = [*base, c("no"), c("farm"), c("wages"), *tail]
    assert only(play(kinds, none)[1], OutcomeReached).outcome_id == "none"
    assert only(play(kinds, some)[1], OutcomeReached).outcome_id == "some"


def test_back_forgets_the_answer(kinds: LoadedFlow) -> None:
    """Back returns to the previous step and emits ForgetAnswer for what it kept."""
    state, events = play(kinds, [c("continue"), c("agree"), c("yes"), Back()])
    assert isinstance(events[-2], ForgetAnswer) and events[-2].step_id == "minor"
    assert events[-1].step_id == "minor" and "minor" not in state.answers


def test_back_inside_a_risk_restarts_it(kinds: LoadedFlow) -> None:
    """Back during the impact part asks the likelihood again."""
    inputs = [*FULL[:14], c("high"), Back()]
    _, events = play(kinds, inputs)
    assert asks(events)[-1] == "risk:answer"


def test_low_risk_asks_no_mitigation_and_medium_without_one_is_flagged(kinds: LoadedFlow) -> None:
    """Low × low needs no mitigation; medium skipped is listed as still needed."""
    _, events = play(kinds, [*FULL[:14], c("low"), c("low")])
    assert "risk:mitigation" not in asks(events)
    _, events = play(kinds, [*FULL[:14], c("medium"), c("medium"), Skip()])
    risk = only(events, OutcomeReached).risks[0]
    assert (risk.rating, risk.mitigation_missing) == ("medium", True)


@pytest.mark.parametrize(
    ("prefix", "bad", "reason"),
    [
        ([], TextInput("hi"), Reason.NOT_ACCEPTED),
        ([c("continue"), c("agree")], c("maybe"), Reason.UNKNOWN_OPTION),
        ([c("continue"), c("agree")], c("prefer_not"), Reason.UNKNOWN_OPTION),  # turned off
        ([c("continue"), c("agree")], Skip(), Reason.CANNOT_SKIP),
        ([], Back(), Reason.CANNOT_GO_BACK),
        (FULL[:9], TextInput("lots"), Reason.NOT_A_NUMBER),
        (FULL[:9], TextInput("25"), Reason.OUT_OF_RANGE),
        (FULL[:9], TextInput("2.5"), Reason.NOT_A_NUMBER),
        (FULL[:10], TextInput("x" * 21), Reason.TOO_LONG),
        (FULL[:10], TextInput("   "), Reason.EMPTY),
        (FULL[:5], Toggle("boat"), Reason.UNKNOWN_OPTION),
    ],
)
def test_rejected_inputs_change_nothing(
    kinds: LoadedFlow, prefix: list[Input], bad: Input, reason: Reason
) -> None:
    """An input the step does not accept raises a coded error; the state is untouched."""
    state, _ = play(kinds, prefix)
    before = state.dump()
    with pytest.raises(InputRejected) as info:
        resume(kinds, state, bad, T0)
    assert info.value.reason is reason
    assert state.dump() == before


def test_number_input_and_decimal_comma() -> None:
    """Numbers arrive typed or as NumberInput; a decimal comma is read where allowed."""
    flow = load_text(
        KINDS.replace("min: 0, max: 24,", "min: 0, max: 24, integer: false,"), "k.yaml"
    )
    _, events = play(flow, [*FULL[:9], TextInput("7,5")])
    assert records(events)["hours"] == 7.5
    _, events = play(flow, [*FULL[:9], NumberInput(8)])
    assert records(events)["hours"] == 8


def test_cancel_and_expire_end_without_outcome(kinds: LoadedFlow) -> None:
    """Cancel and Expire end the session at once, with no outcome or alert."""
    for given, reason in ((Cancel(), "cancelled"), (Expire(), "expired")):
        state, events = play(kinds, [c("continue"), given])
        assert only(events, Ended).reason == reason
        assert not [e for e in events if isinstance(e, OutcomeReached | AlertWorthy)]
        with pytest.raises(InputRejected) as info:
            resume(kinds, state, c("agree"), T0)
        assert info.value.reason is Reason.NOT_ACTIVE


def test_session_is_pinned_to_its_flow_content(kinds: LoadedFlow) -> None:
    """A state started on one content is refused by an edited flow (no silent corruption)."""
    state, _ = play(kinds, [c("continue")])
    edited = load_text(KINDS.replace("text: Hello", "text: Hello again"), "kinds.yaml")
    with pytest.raises(InputRejected) as info:
        resume(edited, state, c("agree"), T0)
    assert info.value.reason is Reason.STALE


def test_current_ask_repeats_without_changing_state(kinds: LoadedFlow) -> None:
    """After a restart the current question can be shown again, identically."""
    state, events = play(kinds, [c("continue")])
    assert current_ask(kinds, state) == events[-1]


def test_progress_counts_visible_questions(kinds: LoadedFlow) -> None:
    """Progress shrinks when a condition hides a question."""
    _, events = play(kinds, [c("continue"), c("agree"), c("yes")])
    child_ask = [e for e in events if isinstance(e, Ask)][-1]
    # 11 steps, one hidden by its condition: the fourth question of ten.
    assert (child_ask.position, child_ask.total) == (4, 10)


QUIZ = (
    """\
spec_version: 1
id: q
version: 1
kind: quiz
title: Quiz
retention: 30d
scoring: {shuffle: true, questions_per_sitting: 3}
sections:
  - id: s
    title: S
    steps:
      - {id: intro, type: info, text: Hi, source: s}
"""
    + "".join(
        f"""      - id: q{i}
        type: quiz
        topic: {"a" if i % 2 else "b"}
        text: Question {i}?
        options: [{{code: r, text: Right}}, {{code: w, text: Wrong}}]
        correct: r
        explanation: Because {i}.
        source: s
        store: code
"""
        for i in range(6)
    )
    + """\
outcomes:
  - {id: done, title: Done, text: T}
  - {id: passed, title: Passed, text: T, when: "quiz_ratio >= 0.6"}
"""
)


def test_quiz_sampling_is_seeded_and_scored() -> None:
    """A seed fixes the sample; right and wrong answers give feedback and a score by topic."""
    flow = load_text(QUIZ, "q.yaml")
    s1, _ = start(flow, StartContext(1), T0)
    s1b, _ = start(flow, StartContext(1), T0)
    orders = {start(flow, StartContext(seed), T0)[0].order for seed in range(10)}
    assert s1.order == s1b.order and len(orders) > 1
    assert s1.order is not None and len(s1.order) == 4 and s1.order[0] == "intro"
    _, events = play(flow, [c("continue"), c("r"), c("w"), c("r")], seed=1)
    fb = [e.correct for e in events if isinstance(e, Feedback)]
    assert fb == [True, False, True]
    outcome = only(events, OutcomeReached)
    assert outcome.quiz is not None
    assert (outcome.quiz.correct, outcome.quiz.total) == (2, 3)
    assert len(outcome.quiz.missed) == 1
    assert sum(t for _, t in outcome.quiz.by_topic.values()) == 3
    assert outcome.outcome_id == "passed"
    _, events = play(flow, [c("continue"), c("w"), c("w"), c("w")], seed=1)
    assert only(events, OutcomeReached).outcome_id == "done"


def test_shipped_demo_flows_play_to_an_outcome(shipped: dict[str, LoadedFlow]) -> None:
    """The shipped demonstration flows run start to finish on their first options."""
    for flow_id in ("demo_screening", "demo_quiz"):
        flow = shipped[flow_id]
        state, events = start(flow, StartContext(3), T0)
        for _ in range(100):
            if state.status != "active":
                break
            ask = [e for e in events if isinstance(e, Ask)][-1]
            step = flow.steps[ask.step_id]
            if step.type in ("text",) or ask.phase in ("note", "mitigation"):
                given: Input = Skip() if ask.can_skip else TextInput("x")
            elif step.type == "number":
                given = TextInput("30")
            elif step.type == "multi_choice":
                given = Choice(())
            else:
                from bot.i18n import Translator
                from bot.presenter import prompt

                first = prompt(Translator("en"), flow, ask).actions[0].code
                given = Choice((first,))
            state, events = resume(flow, state, given, T0)
        assert state.status == "ended" and state.outcome is not None
