"""Transcript tests of the screening, consent and interview-preparation flows.

Each test plays a flow through the pure engine. A small answerer replies to every ``Ask`` by
step id (a code, or a list of codes used one after the other when a step is asked again) and
otherwise gives a fallback, so the tests do not depend on the order of the questions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from flows.engine import StartContext, choice_codes, resume, start, yes_no_codes
from flows.events import (
    AlertWorthy,
    Ask,
    Choice,
    Ended,
    Event,
    Explain,
    OutcomeReached,
    RecordAnswer,
)
from flows.loader import LoadedFlow, load_directory
from flows.model import (
    CHECKLIST_CODES,
    ChecklistStep,
    ChoiceStep,
    ConsentStep,
    InfoStep,
    Kind,
    Store,
    TextStep,
    YesNoStep,
)

NOW = datetime(2025, 1, 1, tzinfo=UTC)
MEANS = ("means_deceived", "means_threatened", "means_hurt", "means_debt")
INTERVIEW_CATEGORIES = {
    "deception",
    "restriction_of_movement",
    "document_retention",
    "debt_and_wages",
    "violence_and_threats",
    "working_and_living_conditions",
    "isolation",
}
RED_FLAG_ITEMS = (
    "control_surveillance",
    "fear_distress",
    "unfamiliar_place",
    "cannot_communicate",
    "age_status",
    "physical_harm",
    "dangerous_work",
    "poor_work_conditions",
    "poor_living_conditions",
)

Answers = Mapping[str, str | Sequence[str]]


@dataclass
class Transcript:
    """What happened in one played session."""

    events: list[Event]
    asked: list[str]

    @property
    def outcome(self) -> OutcomeReached:
        reached = [e for e in self.events if isinstance(e, OutcomeReached)]
        assert len(reached) == 1, self.events
        return reached[0]

    @property
    def ended(self) -> Ended:
        ends = [e for e in self.events if isinstance(e, Ended)]
        assert len(ends) == 1, self.events
        return ends[0]

    @property
    def records(self) -> list[RecordAnswer]:
        return [e for e in self.events if isinstance(e, RecordAnswer)]

    @property
    def alerts(self) -> list[AlertWorthy]:
        return [e for e in self.events if isinstance(e, AlertWorthy)]


@pytest.fixture(scope="module")
def flows() -> dict[str, LoadedFlow]:
    return load_directory()


def _default(flow: LoadedFlow, step_id: str, fallback: str) -> str:
    step = flow.steps[step_id]
    if isinstance(step, InfoStep):
        return "continue"
    if isinstance(step, ConsentStep):
        return "agree"
    if isinstance(step, YesNoStep):
        return fallback if fallback in yes_no_codes(step) else "no"
    if isinstance(step, ChoiceStep):
        codes = choice_codes(step)
    elif isinstance(step, ChecklistStep):
        codes = CHECKLIST_CODES
    else:
        raise AssertionError(f"no default answer for {step_id} ({step.type})")
    return fallback if fallback in codes else codes[0]


def play(flow: LoadedFlow, answers: Answers, fallback: str = "no") -> Transcript:
    """Answer every question from ``answers`` (by step id) or with ``fallback``.

    A yes/no step that does not offer ``fallback`` gets "no"; any other step gets its first
    option. Info steps continue and consent steps agree unless ``answers`` says otherwise.
    """
    queues = {k: [v] if isinstance(v, str) else list(v) for k, v in answers.items()}
    state, events = start(flow, StartContext(), NOW)
    transcript: list[Event] = list(events)
    asked: list[str] = []
    for _ in range(200):
        pending = [e for e in events if isinstance(e, Ask)]
        if not pending:
            break
        step_id = pending[-1].step_id
        asked.append(step_id)
        queue = queues.get(step_id)
        code = queue.pop(0) if queue else _default(flow, step_id, fallback)
        state, events = resume(flow, state, Choice((code,)), NOW)
        transcript.extend(events)
    else:
        raise AssertionError("the flow did not end within 200 answers")
    assert state.status == "ended"
    return Transcript(transcript, asked)


# --------------------------------------------------------------------------- red flags


def test_red_flags_none(flows: dict[str, LoadedFlow]) -> None:
    t = play(flows["screening_red_flags"], {}, fallback="not_observed")
    assert t.outcome.outcome_id == "none"
    assert (t.outcome.alert, t.outcome.child) == (False, False)
    assert t.outcome.categories == {}
    assert t.outcome.screening_note
    assert not t.alerts
    assert set(RED_FLAG_ITEMS) <= set(t.asked)
    # the nine observations and the danger check are kept, as codes only
    assert {r.step_id for r in t.records} == {*RED_FLAG_ITEMS, "danger_now"}
    assert all(r.store is Store.CODE for r in t.records)


def test_red_flags_not_sure_is_not_an_indicator(flows: dict[str, LoadedFlow]) -> None:
    answers = {item: "not_sure" for item in RED_FLAG_ITEMS if item != "age_status"}
    t = play(flows["screening_red_flags"], answers, fallback="not_observed")
    assert t.outcome.outcome_id == "none"
    assert t.outcome.score == 0


def test_red_flags_some(flows: dict[str, LoadedFlow]) -> None:
    t = play(flows["screening_red_flags"], {"fear_distress": "observed"}, "not_observed")
    assert t.outcome.outcome_id == "some"
    assert (t.outcome.alert, t.outcome.child) == (False, False)
    assert t.outcome.categories == {"harm_and_fear": 1}
    assert not t.alerts


def test_red_flags_strong(flows: dict[str, LoadedFlow]) -> None:
    answers = {
        "control_surveillance": "observed",
        "physical_harm": "observed",
        "poor_living_conditions": "observed",
    }
    t = play(flows["screening_red_flags"], answers, fallback="not_observed")
    assert t.outcome.outcome_id == "strong"
    assert (t.outcome.alert, t.outcome.child) == (True, False)
    assert t.outcome.categories == {
        "control_and_isolation": 1,
        "harm_and_fear": 1,
        "working_and_living_conditions": 1,
    }
    assert [a.child for a in t.alerts] == [False]


def test_red_flags_danger_now_is_urgent(flows: dict[str, LoadedFlow]) -> None:
    t = play(flows["screening_red_flags"], {"danger_now": "yes"}, fallback="not_observed")
    assert t.outcome.outcome_id == "strong"
    assert t.outcome.alert


@pytest.mark.parametrize("age", ["observed", "not_sure"])
def test_red_flags_child(flows: dict[str, LoadedFlow], age: str) -> None:
    answers = {"age_status": age, "poor_work_conditions": "observed"}
    t = play(flows["screening_red_flags"], answers, fallback="not_observed")
    assert t.outcome.outcome_id == "child"
    assert (t.outcome.alert, t.outcome.child) == (True, True)
    assert [a.child for a in t.alerts] == [True]


def test_red_flags_asks_nothing_of_the_person(flows: dict[str, LoadedFlow]) -> None:
    flow = flows["screening_red_flags"]
    assert flow.flow.requires_consent is None
    assert not any(isinstance(s, TextStep | ConsentStep) for s in flow.steps.values())
    for item in RED_FLAG_ITEMS:
        step = flow.steps[item]
        assert isinstance(step, ChoiceStep)
        assert choice_codes(step) == ("observed", "not_observed", "not_sure")
        assert step.indicator is not None and step.indicator.on == ("observed",)


# --------------------------------------------------------------------------- interview


def test_interview_none(flows: dict[str, LoadedFlow]) -> None:
    answers = {"may_be_child": "no", "safe_tonight": "yes", "protection_needs": "no"}
    t = play(flows["screening_interview"], answers)
    assert t.outcome.outcome_id == "none"
    assert (t.outcome.alert, t.outcome.child) == (False, False)
    assert t.outcome.categories == {}
    assert t.outcome.screening_note
    assert set(MEANS) <= set(t.asked)
    assert "child_note" not in t.asked
    assert "sexual_pressure" in t.asked


def test_interview_prefer_not_to_say_everywhere(flows: dict[str, LoadedFlow]) -> None:
    t = play(flows["screening_interview"], {"may_be_child": "no"}, fallback="prefer_not")
    assert t.outcome.outcome_id == "none"
    assert t.outcome.score == 0


def test_interview_some(flows: dict[str, LoadedFlow]) -> None:
    answers = {"may_be_child": "no", "means_deceived": "yes", "safe_tonight": "yes"}
    t = play(flows["screening_interview"], answers)
    assert t.outcome.outcome_id == "some"
    assert (t.outcome.alert, t.outcome.child) == (False, False)
    assert t.outcome.categories == {"deception": 1}
    assert not t.alerts


def test_interview_strong(flows: dict[str, LoadedFlow]) -> None:
    answers = {
        "may_be_child": "no",
        "documents_held": "employer_or_agent",
        "cannot_leave": "yes",
        "safe_tonight": "yes",
    }
    t = play(flows["screening_interview"], answers)
    assert t.outcome.outcome_id == "strong"
    assert (t.outcome.alert, t.outcome.child) == (True, False)
    assert t.outcome.categories == {"document_retention": 1, "restriction_of_movement": 1}
    assert [a.categories for a in t.alerts] == [("document_retention", "restriction_of_movement")]


def test_interview_not_safe_tonight_is_urgent(flows: dict[str, LoadedFlow]) -> None:
    t = play(flows["screening_interview"], {"may_be_child": "no", "safe_tonight": "no"})
    assert t.outcome.outcome_id == "strong"
    assert t.outcome.alert


@pytest.mark.parametrize("may_be_child", ["yes", "not_sure"])
def test_interview_child_skips_means(flows: dict[str, LoadedFlow], may_be_child: str) -> None:
    answers = {"may_be_child": may_be_child, "pay_withheld": "yes", "safe_tonight": "yes"}
    t = play(flows["screening_interview"], answers)
    assert t.outcome.outcome_id == "child"
    assert (t.outcome.alert, t.outcome.child) == (True, True)
    assert t.outcome.categories == {"debt_and_wages": 1}
    assert [a.child for a in t.alerts] == [True]
    assert not set(MEANS) & set(t.asked)
    assert "sexual_pressure" not in t.asked
    assert {"child_note", "act_arranged", "documents_held", "protection_needs"} <= set(t.asked)


def test_interview_child_without_indicators_is_still_child(flows: dict[str, LoadedFlow]) -> None:
    t = play(flows["screening_interview"], {"may_be_child": "yes", "safe_tonight": "yes"})
    assert t.outcome.outcome_id == "child"
    assert t.outcome.score == 0


def test_interview_protection_needs_is_recorded(flows: dict[str, LoadedFlow]) -> None:
    answers = {"may_be_child": "no", "protection_needs": "yes", "safe_tonight": "yes"}
    t = play(flows["screening_interview"], answers)
    recorded = {r.step_id: r.value for r in t.records}
    assert recorded["protection_needs"] == "yes"
    assert t.outcome.outcome_id == "none"  # a flag for the referral, not an indicator


def test_interview_shape(flows: dict[str, LoadedFlow]) -> None:
    flow = flows["screening_interview"]
    assert flow.flow.requires_consent == "consent_screening"
    assert flows["consent_screening"].flow.kind is Kind.CONSENT
    assert [o.id for o in flow.flow.outcomes] == ["none", "some", "strong", "child"]
    assert {c.id for c in flow.flow.scoring.categories} == INTERVIEW_CATEGORIES
    questions = [s for s in flow.steps.values() if not isinstance(s, InfoStep)]
    assert 15 <= len(questions) <= 20
    assert flow.order[1] == "may_be_child"
    for step in flow.steps.values():
        assert not isinstance(step, TextStep)
        if isinstance(step, YesNoStep):
            assert step.not_sure and step.prefer_not_to_say, step.id
    for means in MEANS:
        assert means in flow.conditions


# --------------------------------------------------------------------------- consent


def test_consent_given(flows: dict[str, LoadedFlow]) -> None:
    t = play(flows["consent_screening"], {})
    assert t.outcome.outcome_id == "given"
    assert t.ended.reason == "completed"
    assert [(r.step_id, r.value) for r in t.records] == [("consent", "agree")]
    assert t.asked.count("check_stop") == 1


def test_consent_declined(flows: dict[str, LoadedFlow]) -> None:
    t = play(flows["consent_screening"], {"consent": "decline"})
    assert t.outcome.outcome_id == "declined"
    assert t.ended.reason == "declined"
    assert len(t.records) == 1
    assert (t.records[0].step_id, t.records[0].value) == ("consent", "decline")
    assert not t.alerts


@pytest.mark.parametrize(
    ("check", "wrong", "right", "info"),
    [
        ("check_kept", "everything", "choices_only", "what_is_kept"),
        ("check_stop", "must_finish", "can_stop", "free_choice"),
        ("check_help", "no_help", "still_help", "help_not_conditional"),
    ],
)
def test_consent_wrong_answer_repeats_the_point(
    flows: dict[str, LoadedFlow], check: str, wrong: str, right: str, info: str
) -> None:
    t = play(flows["consent_screening"], {check: [wrong, right]})
    first = t.asked.index(check)
    assert t.asked[first : first + 3] == [check, info, check]
    assert t.outcome.outcome_id == "given"
    assert [r.step_id for r in t.records] == ["consent"]


def test_consent_explain_again(flows: dict[str, LoadedFlow]) -> None:
    t = play(flows["consent_screening"], {"consent": ["explain", "agree"]})
    assert any(isinstance(e, Explain) for e in t.events)
    assert t.outcome.outcome_id == "given"


def test_consent_stores_only_the_consent(flows: dict[str, LoadedFlow]) -> None:
    flow = flows["consent_screening"]
    stored = [s.id for s in flow.steps.values() if s.store is not Store.NONE]
    assert stored == ["consent"]
    assert flow.flow.retention == "30d"


# --------------------------------------------------------------------------- preparation


def test_interview_preparation(flows: dict[str, LoadedFlow]) -> None:
    flow = flows["interview_preparation"]
    t = play(flow, {"trained_interpreter": "partial", "child_friendly": "na"}, fallback="yes")
    assert t.outcome.outcome_id == "done"
    missing = [m for s in t.outcome.checklist for m in s.missing]
    assert missing == ["trained_interpreter"]
    items = [s for s in flow.steps.values() if isinstance(s, ChecklistStep)]
    assert items and all(s.points_to for s in items)
