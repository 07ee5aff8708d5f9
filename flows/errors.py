"""Errors of the flow language and the engine.

The tree::

    FlowError                      base of everything raised by ``flows``
    ├── FlowDefinitionError        a flow file is wrong; carries one or more ``Problem``s
    ├── ExpressionError            a ``when:`` expression does not parse or names something unknown
    └── InputRejected              the current step does not accept this input (caller re-prompts)

``Problem`` codes are stable: tests, translators and authors can rely on them. Each code has
one message template in ``Code``; a message always says what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Code(Enum):
    """Stable codes for problems in flow files, with their message templates."""

    YAML_001 = "The file is not valid YAML: {detail}"
    YAML_002 = "The key '{key}' appears twice in the same mapping; remove one of them."
    SCHEMA_001 = "{detail}"
    SPEC_001 = (
        "spec_version {found} is not supported (this Waymark reads {supported}); "
        "upgrade Waymark or lower the spec_version."
    )
    ID_001 = "The id '{id}' is used twice; ids of steps and outcomes must be unique in a flow."
    ID_002 = "The flow id '{id}' is used by two files: {other}."
    REF_001 = "'{ref}' names no step or outcome of this flow; check the spelling."
    REF_002 = "'{ref}' names no indicator category; declare it under scoring.categories."
    REF_003 = "The flow requires consent from '{ref}', which is not a consent flow that is shipped."
    EXPR_001 = "The expression cannot be used: {detail}"
    REACH_001 = "The step '{id}' can never be reached; remove it or point a next/goto at it."
    CYCLE_001 = "The steps {ids} form a loop with no way out; add a condition or an end."
    OUTCOME_001 = (
        "No outcome can be reached at the natural end of the flow: the first outcome that is "
        "not only_by_jump must have no condition and no min_score above 0."
    )
    OUTCOME_002 = "A {kind} flow must declare at least one outcome."
    POLICY_001 = (
        "The step '{id}' stores free text but the flow has no retention; set retention "
        "(for example 30d) or store: none."
    )
    POLICY_002 = "The step '{id}' is {kind}; store: code only applies to steps with options."
    POLICY_003 = "The flow stores answers but declares no retention; set retention (e.g. 90d)."
    POLICY_004 = "retention {value} is longer than the longest allowed ({limit})."
    LIMIT_001 = "The text of '{id}' would be {size} characters on screen; Telegram allows {limit}."
    LIMIT_002 = "The label '{label}' is {size} characters; keep button labels within {limit}."
    LIMIT_003 = "The step '{id}' has {count} options; at most {limit} fit on a phone screen."
    LIMIT_004 = (
        "The id or code '{value}' is {size} bytes; at most {limit} keep callback data small."
    )
    LIMIT_005 = "The flow has {count} steps; at most {limit} are allowed."
    QUIZ_001 = "The quiz step '{id}' says correct: '{code}', which is not one of its options."
    SOURCE_001 = "The step '{id}' has no source; cite the document and section beside it."


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem found in a flow file.

    Attributes:
        code: The stable code.
        message: The rendered, actionable message.
        file: The file the problem is in.
        line: The 1-based line, or 0 when the problem concerns the whole file.
        path: Where in the document, e.g. ``sections[0].steps[2].options``.
    """

    code: Code
    message: str
    file: str
    line: int
    path: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        path = f" {self.path}:" if self.path else ""
        return f"{where}:{path} [{self.code.name}] {self.message}"


class FlowError(Exception):
    """Base class of the errors raised by the flows package."""


class FlowDefinitionError(FlowError):
    """A flow file has one or more problems; ``problems`` lists them all."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ExpressionError(FlowError):
    """A ``when:`` expression is not valid."""


class InputRejected(FlowError):
    """The waiting step does not accept this input; the caller should re-prompt.

    Attributes:
        reason: A stable reason code (see ``Reason``).
        detail: Values a message may use (e.g. ``{"min": 0, "max": 120}``).
    """

    def __init__(self, reason: Reason, **detail: object) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


class Reason(Enum):
    """Why an input was rejected. The adapter maps each to a translated prompt."""

    NOT_ACTIVE = "not_active"
    NOT_ACCEPTED = "not_accepted"
    UNKNOWN_OPTION = "unknown_option"
    NOT_A_NUMBER = "not_a_number"
    OUT_OF_RANGE = "out_of_range"
    TOO_LONG = "too_long"
    EMPTY = "empty"
    CANNOT_GO_BACK = "cannot_go_back"
    CANNOT_SKIP = "cannot_skip"
    STALE = "stale"
