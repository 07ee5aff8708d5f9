"""The flow language: frozen pydantic models of a flow file.

A flow file is YAML (authors need comments to cite their sources). The smallest complete
flow::

    spec_version: 1
    id: demo
    version: 1
    kind: screening          # screening | consent | quiz | checklist | info
    title: A demo
    retention: 30d           # how long stored answers live
    sections:
      - id: main
        title: Questions
        steps:
          - id: q1
            type: yes_no
            text: Has anyone taken your documents?
            source: "seed 004, red flags (lines 1200-1230)"
            store: code
            indicator: {category: documents, weight: 2}
    scoring:
      categories: [{id: documents, title: Document retention}]
    outcomes:
      - {id: none, title: No indicators, text: ...}
      - {id: some, title: Some indicators, text: ..., min_score: 1, alert: false}

Each step type is one class below with a YAML example in its docstring.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flows import limits

SPEC_VERSION = 1
SUPPORTED_SPECS = frozenset({1})

_ID = r"^[a-z][a-z0-9_]*$"
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

Id = Annotated[str, Field(pattern=_ID, max_length=limits.MAX_ID_BYTES)]
Text = Annotated[str, Field(min_length=1)]


def parse_duration(value: str | int) -> int:
    """Turn ``90d``, ``12h``, ``30m``, ``45s``, ``2w`` (or a number of seconds) into seconds.

    Args:
        value: The duration.

    Returns:
        The number of seconds.

    Raises:
        ValueError: The value is not a duration.
    """
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return value
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"'{value}' is not a duration such as 45s, 30m, 12h, 90d or 2w")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class Store(StrEnum):
    """What is kept of an answer.

    ``none`` keeps nothing beyond the session's own progress; ``code`` keeps the option code
    (never the label); ``encrypted`` keeps the value itself (number or free text), encrypted.
    Everything kept is encrypted at rest either way; the policy decides *what* is kept.
    """

    NONE = "none"
    CODE = "code"
    ENCRYPTED = "encrypted"


class Kind(StrEnum):
    """What a flow is for; decides the fixed notes and summaries the outcome carries."""

    SCREENING = "screening"
    CONSENT = "consent"
    QUIZ = "quiz"
    CHECKLIST = "checklist"
    INFO = "info"


class Option(_Frozen):
    """One answer button.

    ``goto`` jumps to a step; ``end`` ends the flow with that outcome.
    """

    code: Id
    text: Text
    goto: Id | None = None
    end: Id | None = None


class Indicator(_Frozen):
    """Which answers of a step count as an indicator, in which category, with what weight."""

    category: Id
    weight: int = Field(default=1, ge=0, le=100)
    on: tuple[Id, ...] = ("yes",)


class _Step(_Frozen):
    id: Id
    text: Text
    source: str | None = None
    when: str | None = None
    next: Id | None = None
    end: Id | None = None
    store: Store = Store.NONE
    help: str | None = None
    skippable: bool = False
    back: bool = True


class InfoStep(_Step):
    """Information to read, with a Continue button.

    ```yaml
    - id: intro
      type: info
      text: This checklist takes about five minutes.
      source: "seed 001, Tool 1.3"
    ```
    """

    type: Literal["info"]


class YesNoStep(_Step):
    """A yes/no question, with "not sure" and "prefer not to say" unless turned off.

    ```yaml
    - id: documents_taken
      type: yes_no
      text: Does someone else keep your identity documents?
      store: code
      indicator: {category: documents, weight: 2}
    ```
    """

    type: Literal["yes_no"]
    not_sure: bool = True
    prefer_not_to_say: bool = True
    indicator: Indicator | None = None


class ChoiceStep(_Step):
    """A single choice among options.

    ```yaml
    - id: sector
      type: single_choice
      text: Which sector does the person work in?
      options:
        - {code: agriculture, text: Agriculture or fishing}
        - {code: domestic, text: Domestic work}
    ```
    """

    type: Literal["single_choice"]
    options: tuple[Option, ...] = Field(min_length=2)
    prefer_not_to_say: bool = False
    indicator: Indicator | None = None


class MultiChoiceStep(_Step):
    """Several options may be chosen, then Done.

    ```yaml
    - id: held_items
      type: multi_choice
      text: Which of these does someone else hold?
      min_choices: 0
      options:
        - {code: passport, text: Passport}
        - {code: wages, text: Wages}
    ```
    """

    type: Literal["multi_choice"]
    options: tuple[Option, ...] = Field(min_length=2)
    min_choices: int = Field(default=0, ge=0)
    max_choices: int | None = Field(default=None, ge=1)
    indicator: Indicator | None = None


class NumberStep(_Step):
    """A bounded number.

    ```yaml
    - id: hours
      type: number
      text: About how many hours a day does the person work?
      min: 0
      max: 24
    ```
    """

    type: Literal["number"]
    min: float
    max: float
    integer: bool = True


class TextStep(_Step):
    """Short free text. Kept only if ``store: encrypted`` and the flow has a retention.

    ```yaml
    - id: remarks
      type: text
      text: Anything the referral partner should know? (no names)
      max_length: 300
    ```
    """

    type: Literal["text"]
    max_length: int = Field(default=limits.DEFAULT_TEXT_CHARS, ge=1, le=limits.MAX_TEXT_CHARS)


class ConsentStep(_Step):
    """A consent acknowledgement: agree, decline, or (with ``explain``) hear it again.

    ```yaml
    - id: consent
      type: consent
      text: Do you agree to answer these questions?
      explain: You can stop at any time; help does not depend on your answers.
      on_decline: declined
      store: code
    ```
    """

    type: Literal["consent"]
    explain: str | None = None
    on_decline: Id


class QuizStep(_Step):
    """A quiz question with one correct option and an explanation shown after answering.

    ```yaml
    - id: q_means
      type: quiz
      topic: definition
      text: Is the "means" element needed when the victim is a child?
      options:
        - {code: a, text: "Yes"}
        - {code: b, text: "No"}
      correct: b
      explanation: For children, act and purpose suffice.
    ```
    """

    type: Literal["quiz"]
    topic: Id
    options: tuple[Option, ...] = Field(min_length=2)
    correct: Id
    explanation: Text


class ChecklistStep(_Step):
    """A checklist item: Yes / No / In part / Not applicable, and an optional note.

    ```yaml
    - id: plan_gender
      type: checklist_item
      text: Has a gender analysis informed the plan?
      note: true
      points_to: ["Tool 2.2"]
    ```
    """

    type: Literal["checklist_item"]
    note: bool = False
    points_to: tuple[str, ...] = ()


class RiskStep(_Step):
    """A risk rating: likelihood then impact (Low/Medium/High); Medium or High asks a mitigation.

    ```yaml
    - id: risk_retaliation
      type: risk
      text: Retaliation against the person by the exploiters
      store: encrypted
    ```
    """

    type: Literal["risk"]


Step = Annotated[
    InfoStep
    | YesNoStep
    | ChoiceStep
    | MultiChoiceStep
    | NumberStep
    | TextStep
    | ConsentStep
    | QuizStep
    | ChecklistStep
    | RiskStep,
    Field(discriminator="type"),
]

#: The fixed codes of yes/no, checklist and risk steps.
YES_NO_CODES = ("yes", "no", "not_sure", "prefer_not")
CHECKLIST_CODES = ("yes", "no", "partial", "na")
LEVEL_CODES = ("low", "medium", "high")
CONSENT_CODES = ("agree", "decline", "explain")


class Section(_Frozen):
    """A titled group of steps, shown above each of its questions."""

    id: Id
    title: Text
    steps: tuple[Step, ...] = Field(min_length=1)


class Category(_Frozen):
    """An indicator category, e.g. deception or restriction of movement."""

    id: Id
    title: Text


class Scoring(_Frozen):
    """How answers become a score: indicator categories, and quiz sampling."""

    categories: tuple[Category, ...] = ()
    #: Quiz flows: how many questions one sitting asks (all when unset), shuffled by seed.
    questions_per_sitting: int | None = Field(default=None, ge=1)
    shuffle: bool = False


class Outcome(_Frozen):
    """An end of the flow.

    At the natural end the outcomes are tried in order and the *last* one that matches
    wins, so list them from the mildest tier to the most urgent. An outcome matches when
    ``score >= min_score`` (if set) and its ``when`` holds (if set). ``only_by_jump``
    outcomes are reached only through ``end:`` (e.g. declined consent).
    """

    id: Id
    title: Text
    text: Text
    min_score: int | None = Field(default=None, ge=0)
    when: str | None = None
    alert: bool = False
    child: bool = False
    only_by_jump: bool = False
    next_steps: tuple[str, ...] = ()
    source: str | None = None


class Flow(_Frozen):
    """A whole flow file."""

    spec_version: int
    id: Id
    version: int = Field(ge=1)
    kind: Kind
    title: Text
    description: str = ""
    audience: str = ""
    language: str = "en"
    retention: str | None = None
    delete_messages_after: str | None = None
    requires_consent: Id | None = None
    sources: tuple[str, ...] = ()
    sections: tuple[Section, ...] = Field(min_length=1)
    scoring: Scoring = Scoring()
    outcomes: tuple[Outcome, ...] = ()

    @field_validator("retention", "delete_messages_after")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @property
    def retention_seconds(self) -> int | None:
        """The declared retention in seconds, or None."""
        return parse_duration(self.retention) if self.retention else None

    @property
    def delete_messages_seconds(self) -> int | None:
        """After how long the adapter deletes this flow's messages, or None to keep them."""
        return parse_duration(self.delete_messages_after) if self.delete_messages_after else None

    def steps(self) -> list[Step]:
        """Every step in document order."""
        return [step for section in self.sections for step in section.steps]
