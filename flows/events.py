"""The closed sets of engine inputs and events.

Inputs are what a person did; events are what the caller must do. The engine never sends,
stores or alerts: ``bot/`` applies the events, in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flows.model import Store

# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Choice:
    """One or more option codes (several only for a multi-choice submit)."""

    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Toggle:
    """Add or remove one option of a multi-choice selection without submitting it."""

    value: str


@dataclass(frozen=True, slots=True)
class TextInput:
    """Typed text."""

    value: str


@dataclass(frozen=True, slots=True)
class NumberInput:
    """A number (the adapter may also send text for a number step; the engine parses it)."""

    value: float


@dataclass(frozen=True, slots=True)
class Back:
    """Go back to the previous question."""


@dataclass(frozen=True, slots=True)
class Skip:
    """Skip an optional question (or an optional note or mitigation)."""


@dataclass(frozen=True, slots=True)
class Cancel:
    """End the flow now, by the person's choice."""


@dataclass(frozen=True, slots=True)
class Expire:
    """End the flow because it waited too long."""


Input = Choice | Toggle | TextInput | NumberInput | Back | Skip | Cancel | Expire

# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Ask:
    """Put a question (or an information step) to the person and wait.

    Attributes:
        step_id: The step.
        seq: The question's sequence number, for binding buttons to it.
        phase: ``answer``, or a sub-part: ``note``, ``impact``, ``mitigation``.
        position: 1-based position among the questions of this sitting.
        total: Estimated number of questions (conditions may shorten it).
        selection: Codes chosen so far (multi choice).
        can_back: Whether Back is offered.
        can_skip: Whether Skip is offered.
    """

    step_id: str
    seq: int
    phase: str
    position: int
    total: int
    selection: tuple[str, ...] = ()
    can_back: bool = False
    can_skip: bool = False


@dataclass(frozen=True, slots=True)
class Feedback:
    """A quiz answer was right or wrong; show the explanation."""

    step_id: str
    chosen: str
    correct: bool


@dataclass(frozen=True, slots=True)
class Explain:
    """Show the step's explanation again (consent ``explain`` or a step's ``help``)."""

    step_id: str


@dataclass(frozen=True, slots=True)
class RecordAnswer:
    """Keep this answer, as the step's data policy says (never emitted for ``store: none``).

    Attributes:
        step_id: The step.
        value: Code(s), number, or (``store: encrypted``) the free text; JSON-able.
        store: The policy that applies.
    """

    step_id: str
    value: Any
    store: Store


@dataclass(frozen=True, slots=True)
class ForgetAnswer:
    """A kept answer no longer holds (the person went back); delete it."""

    step_id: str


@dataclass(frozen=True, slots=True)
class SectionSummary:
    """Checklist counts of one section, and the items still missing."""

    section_id: str
    counts: dict[str, int]
    missing: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RiskSummary:
    """One risk rating and whether its mitigation is still open."""

    step_id: str
    likelihood: str
    impact: str
    rating: str
    mitigation_missing: bool


@dataclass(frozen=True, slots=True)
class QuizResult:
    """Score of a quiz sitting, by topic, and the questions missed (for review)."""

    correct: int
    total: int
    by_topic: dict[str, tuple[int, int]]
    missed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OutcomeReached:
    """The flow reached an outcome.

    Attributes:
        outcome_id: The outcome.
        score: Weighted indicator score.
        categories: Indicator categories found, with the number of indicators in each.
        alert: The outcome is marked alert-worthy.
        child: The outcome is the child outcome.
        screening_note: Show the fixed note that a screening is not an identification.
        quiz: Quiz result, for quiz flows.
        checklist: Per-section checklist summaries.
        risks: Risk ratings.
    """

    outcome_id: str
    score: int
    categories: dict[str, int]
    alert: bool
    child: bool
    screening_note: bool
    quiz: QuizResult | None = None
    checklist: tuple[SectionSummary, ...] = ()
    risks: tuple[RiskSummary, ...] = ()


@dataclass(frozen=True, slots=True)
class AlertWorthy:
    """Supervisors should hear of this outcome (codes only, nothing about the person)."""

    outcome_id: str
    categories: tuple[str, ...]
    child: bool


@dataclass(frozen=True, slots=True)
class Ended:
    """The session is over: completed, declined, cancelled, expired or failed."""

    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


Event = (
    Ask | Feedback | Explain | RecordAnswer | ForgetAnswer | OutcomeReached | AlertWorthy | Ended
)
