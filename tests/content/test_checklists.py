"""Transcript tests of the checklist and risk flows, run through the pure engine.

A small answerer replies to each ``Ask`` by step id and phase, so the tests do not depend on
the order of questions, only on which steps exist and in which section.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flows.engine import StartContext, resume, start
from flows.events import (
    Ask,
    Choice,
    Ended,
    Event,
    Input,
    OutcomeReached,
    RecordAnswer,
    RiskSummary,
    SectionSummary,
    Skip,
    TextInput,
)
from flows.loader import LoadedFlow, load_flow
from flows.model import ChecklistStep, InfoStep, RiskStep, Store

DEFS = Path(__file__).resolve().parents[2] / "flows" / "defs"
NOW = datetime(2025, 1, 1, tzinfo=UTC)
CYCLE = ("yes", "no", "partial", "na")

#: Checklist items per section: the content contract of each flow.
SECTION_SIZES: dict[str, dict[str, int]] = {
    "checklist_planning": {
        "framework": 2,
        "evidence": 4,
        "risks": 3,
        "participation": 2,
        "personnel": 4,
        "budget": 2,
        "integration": 3,
        "sustainability": 2,
    },
    "checklist_awareness": {
        "facts": 2,
        "messages": 4,
        "language": 6,
        "images": 5,
        "consent": 2,
    },
    "checklist_evaluation": {"design": 5, "findings": 5, "recommendations": 6},
    "checklist_le_data": {"definition": 4, "what_data": 7, "quality": 5, "protection": 9},
    "checklist_data_protection": {
        "knowing": 4,
        "access": 4,
        "devices": 6,
        "sharing": 5,
        "keeping": 3,
    },
}
RISK_SECTION_SIZES = {
    "strategy_policy": 4,
    "legislation": 4,
    "cj_capacity": 5,
    "cooperation": 4,
    "protection": 5,
}

Risk = tuple[str, str, str | None]  # likelihood, impact, mitigation (None = skip)


def load(flow_id: str) -> LoadedFlow:
    return load_flow(DEFS / f"{flow_id}.yaml")


def answerer(
    flow: LoadedFlow,
    *,
    status: Callable[[str], str] = lambda _: "yes",
    notes: Mapping[str, str] | None = None,
    risks: Callable[[str], Risk] = lambda _: ("low", "low", None),
) -> Callable[[Ask], Input]:
    """Answer each question by its step and phase."""
    notes = notes or {}

    def answer(ask: Ask) -> Input:
        step = flow.steps[ask.step_id]
        if isinstance(step, InfoStep):
            return Choice(("continue",))
        if isinstance(step, ChecklistStep):
            if ask.phase == "answer":
                return Choice((status(step.id),))
            assert ask.phase == "note", ask
            assert ask.can_skip
            note = notes.get(step.id)
            return TextInput(note) if note else Skip()
        if isinstance(step, RiskStep):
            likelihood, impact, mitigation = risks(step.id)
            if ask.phase == "answer":
                return Choice((likelihood,))
            if ask.phase == "impact":
                return Choice((impact,))
            assert ask.phase == "mitigation", ask
            assert ask.can_skip
            return TextInput(mitigation) if mitigation else Skip()
        raise AssertionError(f"unexpected step {step.id} ({step.type})")

    return answer


def run(flow: LoadedFlow, answer: Callable[[Ask], Input]) -> list[Event]:
    """Start the flow and answer every question until it ends; return all events."""
    state, events = start(flow, StartContext(), NOW)
    transcript = list(events)
    for _ in range(1000):
        asks = [e for e in events if isinstance(e, Ask)]
        if not asks:
            break
        state, events = resume(flow, state, answer(asks[-1]), NOW)
        transcript.extend(events)
    assert state.status == "ended"
    assert Ended("completed") in transcript
    return transcript


def outcome(transcript: list[Event]) -> OutcomeReached:
    [reached] = [e for e in transcript if isinstance(e, OutcomeReached)]
    return reached


def records(transcript: list[Event]) -> dict[str, RecordAnswer]:
    return {e.step_id: e for e in transcript if isinstance(e, RecordAnswer)}


def checklist_ids(flow: LoadedFlow) -> list[str]:
    return [sid for sid in flow.order if isinstance(flow.steps[sid], ChecklistStep)]


# --------------------------------------------------------------------------- every flow


ALL_FLOWS = [*SECTION_SIZES, "risk_assessment"]


@pytest.mark.parametrize("flow_id", ALL_FLOWS)
def test_flow_metadata(flow_id: str) -> None:
    flow = load(flow_id)
    assert flow.flow.kind.value == "checklist"
    assert flow.flow.retention == "90d"
    assert flow.flow.audience
    assert flow.flow.description
    assert flow.flow.sources
    assert [o.id for o in flow.flow.outcomes] == ["done"]
    for step in flow.flow.steps():
        assert step.source, step.id
        if isinstance(step, ChecklistStep):
            # Notes are free text: status codes only are kept.
            assert step.store is Store.CODE, step.id
        if isinstance(step, RiskStep):
            assert step.store is Store.ENCRYPTED, step.id


# --------------------------------------------------------------------------- checklists


@pytest.mark.parametrize("flow_id", list(SECTION_SIZES))
def test_checklist_cycle_of_answers(flow_id: str) -> None:
    """Answer yes/no/partial/na in turn; the summary counts and lists no/partial as missing."""
    flow = load(flow_id)
    ids = checklist_ids(flow)
    given = dict(zip(ids, itertools.cycle(CYCLE), strict=False))
    with_note = [s.id for s in flow.flow.steps() if isinstance(s, ChecklistStep) and s.note]
    notes = dict.fromkeys(with_note, "Named trainer by March; no names of people here")

    transcript = run(flow, answerer(flow, status=given.__getitem__, notes=notes))
    reached = outcome(transcript)

    assert reached.outcome_id == "done"
    assert reached.risks == ()
    sizes = {s.section_id: sum(s.counts.values()) for s in reached.checklist}
    assert sizes == SECTION_SIZES[flow_id]
    expected = []
    for section in flow.flow.sections:
        items = [s.id for s in section.steps if isinstance(s, ChecklistStep)]
        counts = {code: sum(given[i] == code for i in items) for code in CYCLE}
        missing = tuple(i for i in items if given[i] in ("no", "partial"))
        expected.append(SectionSummary(section.id, counts, missing))
    assert list(reached.checklist) == expected

    # Every item was asked once, and a note was offered exactly where the flow asks for one.
    asked = [e for e in transcript if isinstance(e, Ask)]
    assert [a.step_id for a in asked if a.phase == "answer" and a.step_id in given] == ids
    assert [a.step_id for a in asked if a.phase == "note"] == with_note

    # store: code keeps the status and drops the typed note.
    kept = records(transcript)
    assert set(kept) == set(ids)
    for sid in ids:
        assert kept[sid].value == {"status": given[sid]}
        assert kept[sid].store is Store.CODE


def test_planning_named_gaps() -> None:
    """A mostly complete plan: the summary names exactly the gaps."""
    flow = load("checklist_planning")
    given = {
        "plan_disaggregated": "no",
        "plan_gender_sensitive_data": "partial",
        "plan_budget": "partial",
        "plan_procurement": "na",
        "plan_ownership": "no",
    }
    transcript = run(flow, answerer(flow, status=lambda sid: given.get(sid, "yes")))
    summary = {s.section_id: s for s in outcome(transcript).checklist}

    assert summary["evidence"].missing == ("plan_disaggregated", "plan_gender_sensitive_data")
    assert summary["evidence"].counts == {"yes": 2, "no": 1, "partial": 1, "na": 0}
    assert summary["budget"].missing == ("plan_budget",)
    assert summary["budget"].counts == {"yes": 0, "no": 0, "partial": 1, "na": 1}
    assert summary["sustainability"].missing == ("plan_ownership",)
    for section in ("framework", "risks", "participation", "personnel", "integration"):
        assert summary[section].missing == ()
        assert summary[section].counts["yes"] == SECTION_SIZES["checklist_planning"][section]


def test_data_protection_all_not_applicable_is_not_missing() -> None:
    flow = load("checklist_data_protection")
    transcript = run(flow, answerer(flow, status=lambda _: "na"))
    for summary in outcome(transcript).checklist:
        assert summary.missing == ()
        assert (
            summary.counts["na"] == SECTION_SIZES["checklist_data_protection"][summary.section_id]
        )


# --------------------------------------------------------------------------- risks


def test_risk_sections_and_default_low_ratings() -> None:
    flow = load("risk_assessment")
    transcript = run(flow, answerer(flow))
    reached = outcome(transcript)

    assert reached.outcome_id == "done"
    assert reached.checklist == ()
    risk_ids = [sid for sid in flow.order if isinstance(flow.steps[sid], RiskStep)]
    assert [r.step_id for r in reached.risks] == risk_ids
    per_section: dict[str, int] = {}
    for sid in risk_ids:
        section = flow.section_of[sid].id
        per_section[section] = per_section.get(section, 0) + 1
    assert per_section == RISK_SECTION_SIZES
    assert all(r.rating == "low" and not r.mitigation_missing for r in reached.risks)
    assert not [e for e in transcript if isinstance(e, Ask) and e.phase == "mitigation"]


def test_risk_mitigation_missing_low_and_typed() -> None:
    flow = load("risk_assessment")
    mitigation = "Agree consent-based referral steps with police before any operation"
    plan: dict[str, Risk] = {
        "sp_blocks_asylum": ("medium", "medium", None),  # medium, mitigation skipped
        "cj_raids": ("high", "high", mitigation),  # high, mitigation typed
        "pr_children_as_adults": ("low", "high", None),  # 1 x 3: medium, skipped
        "lg_death_penalty": ("low", "medium", None),  # 1 x 2: low, no mitigation asked
    }
    transcript = run(flow, answerer(flow, risks=lambda sid: plan.get(sid, ("low", "low", None))))
    risks = {r.step_id: r for r in outcome(transcript).risks}

    assert risks["sp_blocks_asylum"] == RiskSummary(
        "sp_blocks_asylum", "medium", "medium", "medium", mitigation_missing=True
    )
    assert risks["pr_children_as_adults"].rating == "medium"
    assert risks["pr_children_as_adults"].mitigation_missing is True
    assert risks["lg_death_penalty"].rating == "low"
    assert risks["lg_death_penalty"].mitigation_missing is False
    assert risks["cj_raids"].rating == "high"
    assert risks["cj_raids"].mitigation_missing is False

    mitigation_asks = [
        e.step_id for e in transcript if isinstance(e, Ask) and e.phase == "mitigation"
    ]
    assert sorted(mitigation_asks) == sorted(
        ["sp_blocks_asylum", "cj_raids", "pr_children_as_adults"]
    )

    # store: encrypted keeps the rating and the typed mitigation itself.
    kept = records(transcript)
    assert kept["cj_raids"].store is Store.ENCRYPTED
    assert kept["cj_raids"].value["mitigation"] == mitigation
    assert kept["cj_raids"].value["rating"] == "high"
    assert kept["sp_blocks_asylum"].value["mitigation"] is None
    assert kept["lg_death_penalty"].value == {
        "likelihood": "low",
        "impact": "medium",
        "rating": "low",
        "mitigation": None,
    }
