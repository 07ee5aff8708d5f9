"""Where flows meet storage: load a session, resume the engine, persist the result.

This is the only module that imports both ``flows`` and ``storage``. It knows nothing of
Telegram or the console: both front ends call it with an owner pseudonym and an input, and
render the events it returns.
"""

from __future__ import annotations

import functools
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
from storage.locks import Lease
from storage.repository import AnswerChange, SessionRecord, StepPlan, Store

#: How long a flow that keeps no answers may sit unfinished before its state expires.
DEFAULT_SESSION_SECONDS = 24 * 3600
#: Optimistic-lock retries before giving up on a busy session.
_RETRIES = 5
#: How long a person's settings live after their last use (capped by the deployment).
PROFILE_SECONDS = 90 * 24 * 3600
#: How recent a consent must be for the screening that requires it.
CONSENT_WINDOW = timedelta(hours=2)


SideWrites = Callable[[str, LoadedFlow, str, list[Event]], list[Callable[[Any], None]]]
#: An active session as read: its record, its engine state and the flow it is pinned to.
Found = tuple[SessionRecord, State, LoadedFlow]
#: Picks the input to apply from the profile and the active session (None: apply nothing).
Chooser = Callable[[dict[str, Any], Found | None], Input | None]


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


@dataclass(frozen=True, slots=True)
class Step:
    """What ``Service.step`` read and did.

    Attributes:
        profile: The person's profile data.
        found: Their active session before the step, or None.
        turn: The applied turn, or None if the chooser chose nothing.
    """

    profile: dict[str, Any]
    found: Found | None
    turn: Turn | None


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

    def current(self, owner: str) -> Found | None:
        """The owner's active session, or None."""
        record = self.store.active_session(owner, now=self.clock())
        if record is None:
            return None
        state = State.load(record.state)
        return record, state, self.flow_of(state)

    def step(
        self,
        owner: str,
        choose: Chooser,
        *,
        claim: str | None = None,
        lease: Lease | None = None,
        sent: Callable[[], None] | None = None,
    ) -> Step:
        """Read the profile and active session, apply what ``choose`` picks, persist it.

        One database transaction does it all (``Store.step``): this is the path of every
        button press, so its cost is the bot's per-update cost.

        Args:
            owner: The owner's pseudonym.
            choose: Picks the input from what was read (pure; it may raise InputRejected).
            claim: The update's key, claimed atomically with the change (exactly once).
            lease: The chat's lock, whose connection carries the transaction.
            sent: Called when a chosen step's writes have been sent, before their results
                are awaited (``Store.step``).

        Raises:
            InputRejected: From ``choose``, or an input the step does not accept. Nothing
                was stored.
            Duplicate: The update was applied before. Nothing was stored.
        """
        for _ in range(_RETRIES):
            now = self.clock()
            decide = functools.partial(self._decide, owner, choose, claim, now)
            try:
                return self.store.step(owner, now=now, decide=decide, lease=lease, sent=sent)
            except Conflict:
                continue  # someone else moved this session on: read again and retry
        raise InputRejected(Reason.STALE, detail="the session is busy")

    def _decide(
        self,
        owner: str,
        choose: Chooser,
        claim: str | None,
        now: datetime,
        profile: dict[str, Any],
        record: SessionRecord | None,
    ) -> tuple[Step, StepPlan | None]:
        # Runs inside Store.step's transaction: pure work on what was read.
        found = None
        if record is not None:
            state = State.load(record.state)
            found = (record, state, self.flow_of(state))
        given = choose(profile, found)
        if given is None or found is None:
            return Step(profile, found, None), None
        record, state, flow = found
        new_state, events = engine.resume(flow, state, given, now)
        writes = self.side_writes(owner, flow, record.id, events) if self.side_writes else []
        plan = StepPlan(new_state.dump(), new_state.status, _changes(events), claim, writes)
        return Step(profile, found, Turn(record.id, flow, new_state, events)), plan

    def answer(
        self,
        owner: str,
        given: Input,
        *,
        expected_seq: int | None = None,
        claim: str | None = None,
        lease: Lease | None = None,
    ) -> Turn:
        """Apply an input to the owner's active session and persist the result.

        Args:
            owner: The owner's pseudonym.
            given: The input.
            expected_seq: For an answer to a shown question, the question it belongs to; an
                answer to an older question is rejected as stale instead of answering the
                new one.
            claim: The update's key, claimed atomically with the change (exactly once).
            lease: The chat's lock, whose connection carries the transaction.

        Raises:
            InputRejected: No active session, a stale answer, or an input the step does not
                accept. Nothing was stored.
            Duplicate: The update was applied before. Nothing was stored.
        """

        def choose(_profile: dict[str, Any], found: Found | None) -> Input:
            if found is None:
                raise InputRejected(Reason.NOT_ACTIVE)
            if expected_seq is not None and expected_seq != found[1].seq:
                raise InputRejected(Reason.STALE, seq=found[1].seq)
            return given

        turn = self.step(owner, choose, claim=claim, lease=lease).turn
        assert turn is not None  # choose never declines: it applies or raises
        return turn

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
