"""Session state: small, versioned, JSON-serialisable, and never holding free text.

The state is what the adapter persists between two inputs (encrypted, in ``storage``). It
keeps answers only as far as conditions and scoring need them: codes, numbers, and for a
free-text answer the fact that it was given (``True``), never the text itself.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

#: Bump when the shape changes; ``State.load`` refuses unknown versions loudly.
STATE_VERSION = 1


class State(BaseModel):
    """Where one person is in one flow.

    Attributes:
        v: The state schema version.
        flow_id: The flow.
        flow_version: The flow version the session is pinned to.
        flow_digest: The exact content it is pinned to.
        status: ``active`` while waiting for input, ``ended`` after.
        current: The step waiting for input.
        phase: Sub-step of multi-part steps (checklist note, risk impact and mitigation).
        seq: Increases with every question put; binds buttons to one question.
        history: Steps answered, in order (for Back).
        answers: Answers as conditions and scoring need them (no free text).
        pending: The unfinished part of the current step (a selection, a likelihood).
        order: The step order of this sitting, when the flow samples or shuffles.
        outcome: The outcome reached, once ended.
        end_reason: completed, declined, cancelled, expired or failed.
        started_at: When the session started (ISO 8601, from the caller's clock).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: int = STATE_VERSION
    flow_id: str
    flow_version: int
    flow_digest: str
    status: Literal["active", "ended"] = "active"
    current: str | None = None
    phase: str = "answer"
    seq: int = 0
    history: tuple[str, ...] = ()
    answers: dict[str, Any] = {}
    pending: dict[str, Any] = {}
    order: tuple[str, ...] | None = None
    outcome: str | None = None
    end_reason: str | None = None
    started_at: str

    def dump(self) -> dict[str, Any]:
        """The state as plain JSON-able data."""
        return self.model_dump(mode="json")

    @classmethod
    def load(cls, data: dict[str, Any]) -> State:
        """Read a dumped state back.

        Raises:
            ValueError: The data is of an unknown state version or shape.
        """
        if data.get("v") != STATE_VERSION:
            raise ValueError(f"unknown session state version {data.get('v')!r}")
        return cls.model_validate(data)
