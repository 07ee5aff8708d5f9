"""Content and transcript tests of the trainee quiz, run through the pure engine."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flows.engine import StartContext, resume, start
from flows.events import Ask, Choice, Event, Feedback, OutcomeReached, QuizResult
from flows.loader import LoadedFlow, load_flow
from flows.model import InfoStep, QuizStep, Store

FILE = Path(__file__).resolve().parents[2] / "flows" / "defs" / "quiz_trainee.yaml"
NOW = datetime(2025, 1, 1, tzinfo=UTC)
TOPICS = {
    "definition",
    "trafficking_vs_smuggling",
    "children",
    "rights_non_punishment",
    "identification_interviewing",
    "consent_data",
}
PER_SITTING = 12

Answerer = Callable[[QuizStep], str]


@pytest.fixture(scope="module")
def flow() -> LoadedFlow:
    return load_flow(FILE)


def quiz_steps(flow: LoadedFlow) -> list[QuizStep]:
    return [s for s in flow.flow.steps() if isinstance(s, QuizStep)]


def right(step: QuizStep) -> str:
    return step.correct


def wrong(step: QuizStep) -> str:
    return next(o.code for o in step.options if o.code != step.correct)


def sit(flow: LoadedFlow, seed: int, answer: Answerer) -> tuple[list[str], list[Event]]:
    """Run one sitting; return the quiz step ids asked, in order, and every event."""
    state, events = start(flow, StartContext(seed=seed), NOW)
    transcript = list(events)
    asked: list[str] = []
    for _ in range(100):
        if state.status != "active":
            break
        ask = events[-1]
        assert isinstance(ask, Ask)
        step = flow.steps[ask.step_id]
        if isinstance(step, InfoStep):
            given = Choice(("continue",))
        else:
            assert isinstance(step, QuizStep)
            asked.append(step.id)
            given = Choice((answer(step),))
        state, events = resume(flow, state, given, NOW)
        transcript.extend(events)
    assert state.status == "ended"
    return asked, transcript


def outcome(events: list[Event]) -> OutcomeReached:
    reached = [e for e in events if isinstance(e, OutcomeReached)]
    assert len(reached) == 1
    return reached[0]


def result(events: list[Event]) -> QuizResult:
    quiz = outcome(events).quiz
    assert quiz is not None
    return quiz


# --------------------------------------------------------------------------- content


def test_flow_header(flow: LoadedFlow) -> None:
    f = flow.flow
    assert (f.id, f.kind.value, f.audience, f.version, f.spec_version) == (
        "quiz_trainee",
        "quiz",
        "trainee",
        1,
        1,
    )
    assert f.retention == "90d"
    assert f.scoring.shuffle is True
    assert f.scoring.questions_per_sitting == PER_SITTING
    assert [o.id for o in f.outcomes] == ["done", "passed", "perfect"]
    assert isinstance(flow.steps[flow.order[0]], InfoStep)


def test_question_counts(flow: LoadedFlow) -> None:
    steps = quiz_steps(flow)
    assert len(steps) >= 60
    per_topic = Counter(s.topic for s in steps)
    assert set(per_topic) == TOPICS
    assert all(count >= 10 for count in per_topic.values()), per_topic


@pytest.mark.parametrize("step", quiz_steps(load_flow(FILE)), ids=lambda s: s.id)
def test_each_question_is_well_formed(step: QuizStep) -> None:
    codes = [o.code for o in step.options]
    assert step.correct in codes
    assert 3 <= len(codes) <= 4
    assert set(codes) <= {"a", "b", "c", "d"}
    assert len(set(codes)) == len(codes)
    assert all(len(o.text) <= 200 for o in step.options)
    assert step.source
    assert step.explanation
    assert step.store is Store.CODE


def test_question_texts_are_unique(flow: LoadedFlow) -> None:
    texts = [s.text for s in quiz_steps(flow)]
    assert len(texts) == len(set(texts))


# --------------------------------------------------------------------------- sittings


def test_perfect_sitting(flow: LoadedFlow) -> None:
    asked, events = sit(flow, seed=7, answer=right)
    assert len(asked) == PER_SITTING
    assert outcome(events).outcome_id == "perfect"
    quiz = result(events)
    assert quiz.correct == quiz.total == PER_SITTING
    assert quiz.missed == ()
    feedback = [e for e in events if isinstance(e, Feedback)]
    assert len(feedback) == PER_SITTING
    assert all(e.correct for e in feedback)


def test_failed_sitting(flow: LoadedFlow) -> None:
    asked, events = sit(flow, seed=7, answer=wrong)
    assert outcome(events).outcome_id == "done"
    quiz = result(events)
    assert (quiz.correct, quiz.total) == (0, PER_SITTING)
    assert list(quiz.missed) == asked
    feedback = [e for e in events if isinstance(e, Feedback)]
    assert [e.step_id for e in feedback] == asked
    assert not any(e.correct for e in feedback)


def test_passed_sitting(flow: LoadedFlow) -> None:
    """Nine of twelve (0.75) passes without being perfect."""
    order, _ = sit(flow, seed=11, answer=right)
    missed = set(order[:3])
    _, events = sit(flow, seed=11, answer=lambda s: wrong(s) if s.id in missed else right(s))
    assert outcome(events).outcome_id == "passed"
    quiz = result(events)
    assert (quiz.correct, quiz.total) == (9, PER_SITTING)
    assert set(quiz.missed) == missed


def test_same_seed_same_order(flow: LoadedFlow) -> None:
    first, _ = sit(flow, seed=42, answer=right)
    second, _ = sit(flow, seed=42, answer=wrong)
    assert first == second


def test_different_seeds_different_orders(flow: LoadedFlow) -> None:
    one, _ = sit(flow, seed=1, answer=right)
    two, _ = sit(flow, seed=2, answer=right)
    assert one != two
    assert len(set(one)) == len(one) == PER_SITTING


@pytest.mark.parametrize("seed", [0, 3, 99, 2025])
def test_by_topic_adds_up(flow: LoadedFlow, seed: int) -> None:
    asked, events = sit(
        flow, seed=seed, answer=lambda s: right(s) if int(s.id[-1]) % 2 else wrong(s)
    )
    quiz = result(events)
    assert 0 < quiz.correct < quiz.total
    assert set(quiz.by_topic) <= TOPICS
    assert sum(total for _, total in quiz.by_topic.values()) == quiz.total == len(asked)
    assert sum(good for good, _ in quiz.by_topic.values()) == quiz.correct
    expected = Counter(s.topic for s in quiz_steps(flow) if s.id in set(asked))
    assert {t: total for t, (_, total) in quiz.by_topic.items()} == dict(expected)
