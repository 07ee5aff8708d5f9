"""Where flows meet storage: load a session, resume the engine, persist the result.

This is the only module that imports both ``flows`` and ``storage``. It knows nothing of
Telegram or the console: both front ends call it with an owner pseudonym and an input, and
render the events it returns.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flows import engine
from flows.errors import FlowDefinitionError, InputRejected, Reason
from flows.events import Cancel, Event, ForgetAnswer, Input, RecordAnswer
from flows.loader import LoadedFlow, load_text
from flows.state import State
from storage.errors import Conflict
from storage.repository import AnswerChange, SessionRecord, Store

#: How long a flow that keeps no answers may sit unfinished before its state expires.
DEFAULT_SESSION_SECONDS = 24 * 3600
#: Optimistic-lock retries before giving up on a busy session.
_RETRIES = 5
#: How long a person's settings live after their last use (capped by the deployment).
PROFILE_SECONDS = 90 * 24 * 3600
#: How recent a consent must be for the screening that requires it.
CONSENT_WINDOW = timedelta(hours=2)


SideWrites = Callable[[str, LoadedFlow, str, list[Event]], list[Callable[[Any], None]]]


class FlowChangedError(Exception):
    """A flow file changed without a version bump; sessions pinned to it would break."""


@dataclass(frozen=True, slots=True)
class Turn:
    """The outcome of one call: the session after it and the events to render.

    Attributes:
        session_id: The session.
        flow: The flow the session is pinned to.
        state: The engine state after the call.
        events: What to render, in order.
    """

    session_id: str
    flow: LoadedFlow
    state: State
    events: list[Event]


class Service:
    """Runs flows for people, persisting every step.

    Args:
        store: The storage.
        flows: The shipped flows by id.
        clock: Returns the current aware UTC time.
        max_retention_seconds: The deployment's cap on any retention.
        seed_source: Draws the seed of a new session (quiz sampling).
    """

    def __init__(
        self,
        store: Store,
        flows: dict[str, LoadedFlow],
        clock: Callable[[], datetime],
        *,
        max_retention_seconds: int | None = None,
        seed_source: Callable[[], int] | None = None,
    ) -> None:
        #: Called with (owner, flow, session id, events) before a save; returns writes that
        #: must commit with it (alerts, counts). Set by the composition root.
        self.side_writes: SideWrites | None = None
        self.store = store
        self.flows = flows
        self.clock = clock
        self.max_retention_seconds = max_retention_seconds
        self._seed = seed_source or (lambda: random.SystemRandom().randrange(2**31))
        self._pinned: dict[tuple[str, int, str], LoadedFlow] = {
            (f.id, f.version, f.digest): f for f in flows.values()
        }

    def pin_all(self) -> None:
        """Record every shipped flow version; refuse files edited without a version bump.

        Raises:
            FlowChangedError: A shipped flow's content differs from the content already
                pinned for the same id and version.
        """
        now = self.clock()
        for flow in self.flows.values():
            body = json.dumps(flow.raw, sort_keys=True, ensure_ascii=False)
            stored = self.store.pin_flow(flow.id, flow.version, flow.digest, body, now=now)
            if stored != flow.digest:
                raise FlowChangedError(
                    f"{flow.file}: the content of flow '{flow.id}' version {flow.version} "
                    "changed; raise its version so that sessions in flight keep the old one"
                )

    def retention_seconds(self, flow: LoadedFlow) -> int:
        """How long this flow's session and answers live, after the deployment cap."""
        seconds = flow.flow.retention_seconds or DEFAULT_SESSION_SECONDS
        if self.max_retention_seconds is not None:
            seconds = min(seconds, self.max_retention_seconds)
        return seconds

    def flow_of(self, state: State) -> LoadedFlow:
        """The exact flow a session is pinned to (from the snapshot if the file moved on)."""
        key = (state.flow_id, state.flow_version, state.flow_digest)
        if key in self._pinned:
            return self._pinned[key]
        snapshot = self.store.flow_snapshot(state.flow_id, state.flow_version)
        if snapshot is None or snapshot[0] != state.flow_digest:
            raise InputRejected(Reason.STALE, detail="the flow version is gone")
        try:
            # The snapshot is JSON, which the YAML loader reads as it is.
            loaded = load_text(snapshot[1], f"<snapshot {state.flow_id} v{state.flow_version}>")
        except FlowDefinitionError:
            raise InputRejected(Reason.STALE, detail="the pinned flow no longer loads") from None
        self._pinned[key] = loaded
        return loaded

    # ------------------------------------------------------------------ turns

    def begin(self, owner: str, flow_id: str) -> Turn:
        """Start ``flow_id`` for ``owner`` (ending any flow they had open)."""
        flow = self.flows[flow_id]
        now = self.clock()
        state, events = engine.start(flow, engine.StartContext(seed=self._seed()), now)
        expires = now + timedelta(seconds=self.retention_seconds(flow))
        record = self.store.create_session(owner, state.dump(), now=now, expires_at=expires)
        if (
            any(isinstance(e, RecordAnswer | ForgetAnswer) for e in events)
            or state.status != "active"
        ):
            self.store.save(
                record.id,
                state.dump(),
                expected_version=record.version,
                status=state.status,
                now=now,
                answers=_changes(events),
            )
        return Turn(record.id, flow, state, events)

    def current(self, owner: str) -> tuple[SessionRecord, State, LoadedFlow] | None:
        """The owner's active session, or None."""
        record = self.store.active_session(owner, now=self.clock())
        if record is None:
            return None
        state = State.load(record.state)
        return record, state, self.flow_of(state)

    def answer(
        self,
        owner: str,
        given: Input,
        *,
        expected_seq: int | None = None,
        claim: str | None = None,
        found: tuple[SessionRecord, State, LoadedFlow] | None = None,
    ) -> Turn:
        """Apply an input to the owner's active session and persist the result.

        Args:
            owner: The owner's pseudonym.
            given: The input.
            expected_seq: For a button press, the question it belongs to; a press of an
                older question is rejected as stale instead of answering the new one.
            claim: The update's key, claimed atomically with the change (exactly once).
            found: The session as the caller just read it (saves a read; on a conflict the
                session is read again).

        Raises:
            InputRejected: No active session, a stale button, or an input the step does not
                accept. Nothing was stored.
            Duplicate: The update was applied before. Nothing was stored.
        """
        for attempt in range(_RETRIES):
            if attempt or found is None:
                found = self.current(owner)
            if found is None:
                raise InputRejected(Reason.NOT_ACTIVE)
            record, state, flow = found
            if expected_seq is not None and expected_seq != state.seq:
                raise InputRejected(Reason.STALE, seq=state.seq)
            new_state, events = engine.resume(flow, state, given, self.clock())
            writes = self.side_writes(owner, flow, record.id, events) if self.side_writes else []
            try:
                self.store.save(
                    record.id,
                    new_state.dump(),
                    expected_version=record.version,
                    status=new_state.status,
                    now=self.clock(),
                    answers=_changes(events),
                    claim=claim,
                    writes=writes,
                )
            except Conflict:
                continue  # someone else moved this session on: reload and try again
            return Turn(record.id, flow, new_state, events)
        raise InputRejected(Reason.STALE, detail="the session is busy")

    def cancel(self, owner: str) -> Turn | None:
        """End the owner's active flow (kept answers stay until they expire)."""
        try:
            return self.answer(owner, Cancel())
        except InputRejected:
            return None

    def consent_given(self, owner: str, consent_flow: str) -> bool:
        """Whether the owner completed ``consent_flow`` with consent given, recently."""
        now = self.clock()
        for record in self.store.sessions_of(owner, now=now):
            state = State.load(record.state)
            if state.flow_id != consent_flow or state.status != "ended":
                continue
            started = datetime.fromisoformat(state.started_at)
            if state.outcome == "given" and now - started <= CONSENT_WINDOW:
                return True
        return False

    def profile_expiry(self) -> datetime:
        """When a profile touched now expires."""
        seconds = PROFILE_SECONDS
        if self.max_retention_seconds is not None:
            seconds = min(seconds, self.max_retention_seconds)
        return self.clock() + timedelta(seconds=seconds)

    def profile(self, owner: str) -> dict[str, Any]:
        """The owner's profile data."""
        return self.store.profile(owner, now=self.clock())

    def update_profile(self, owner: str, **changes: Any) -> dict[str, Any]:
        """Change profile entries (None removes one) and extend its life."""
        return self.store.update_profile(
            owner, changes, now=self.clock(), expires_at=self.profile_expiry()
        )

    def erase_session(self, session_id: str) -> None:
        """Erase one session and its answers and data key now (quick exit)."""
        self.store.erase_session(session_id)

    def forget(self, owner: str) -> int:
        """Erase everything held about one person; return the rows removed."""
        return self.store.erase_owner(owner).total


def _changes(events: list[Event]) -> list[AnswerChange]:
    changes: list[AnswerChange] = []
    for event in events:
        if isinstance(event, RecordAnswer):
            changes.append(AnswerChange(event.step_id, event.value))
        elif isinstance(event, ForgetAnswer):
            changes.append(AnswerChange(event.step_id, drop=True))
    return changes
