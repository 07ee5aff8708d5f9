"""The warm session (``Store.step``): a worker's copy of a session as its last step left it.

A step on the warm copy writes without reading first, so everything the read used to
settle must still hold: another worker's change to the session or to the profile makes
the write fail and the step read afresh; expiry and erasure are never served from memory;
a refusal decided on the copy is decided again on a fresh read. Run on both databases.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

import pytest

from storage.errors import Changed, Conflict, Duplicate
from storage.repository import AnswerChange, SessionRecord, StepPlan, Store
from tests.conftest import T0

HOUR = timedelta(hours=1)


class Decider:
    """A ``decide`` for Store.step that records what it was given."""

    def __init__(self, *, write: bool = True, refuse_cached: bool = False) -> None:
        self.write = write
        self.refuse_cached = refuse_cached
        self.seen: list[tuple[dict[str, Any], SessionRecord | None]] = []

    def __call__(
        self, profile: dict[str, Any], record: SessionRecord | None
    ) -> tuple[int | None, StepPlan | None]:
        self.seen.append((profile, record))
        if record is None or not self.write or (self.refuse_cached and record.cached):
            return None, None
        n = int(record.state["n"]) + 1
        return n, StepPlan({"n": n}, "active", [AnswerChange("q", f"a{n}")])

    @property
    def cached(self) -> list[bool]:
        return [r is not None and r.cached for _, r in self.seen]


def _answered_once(store: Store) -> str:
    """A session answered once by ``store`` (so ``store`` holds it warm); its id."""
    record = store.create_session("o", {"n": 1}, now=T0, expires_at=T0 + HOUR)
    assert store.step("o", now=T0, decide=Decider()) == 2
    return record.id


def test_the_step_after_a_step_decides_on_the_warm_copy_and_writes(store: Store) -> None:
    sid = _answered_once(store)
    decide = Decider()
    assert store.step("o", now=T0, decide=decide) == 3
    assert decide.cached == [True]
    ((_, record),) = decide.seen
    assert record is not None and (record.version, record.state) == (2, {"n": 2})
    stored = store.get_session(sid, now=T0)
    assert stored is not None and (stored.version, stored.state) == (3, {"n": 3})
    assert store.answers(sid, now=T0) == {"q": "a3"}


def test_a_warm_step_with_a_live_profile_writes(store: Store) -> None:
    store.update_profile("o", {"lang": "fr"}, now=T0, expires_at=T0 + HOUR)
    sid = _answered_once(store)
    decide = Decider()
    assert store.step("o", now=T0, decide=decide) == 3
    assert decide.cached == [True]
    assert decide.seen[0][0] == {"lang": "fr"}
    assert store.answers(sid, now=T0) == {"q": "a3"}


def test_another_worker_moving_the_session_on_fails_the_warm_write(store: Store) -> None:
    sid = _answered_once(store)
    other = Store(store.engine, store.keys)  # a second worker: no warm copy of its own
    assert other.step("o", now=T0, decide=Decider()) == 3
    decide = Decider()
    with pytest.raises(Changed):
        store.step("o", now=T0, decide=decide)
    assert decide.cached == [True]
    # Nothing was written, and the retry (Service.step's) reads afresh.
    assert store.answers(sid, now=T0) == {"q": "a3"}
    assert store.step("o", now=T0, decide=decide) == 4
    assert decide.cached == [True, False]


def test_an_owner_whose_copy_was_behind_is_not_kept_warm_for_a_while(store: Store) -> None:
    """Their presses are being spread over workers: a copy here would be behind again at
    the next press here, and a failed write costs more than the read it saves."""
    brief = Store(store.engine, store.keys, warm_seconds=1.0)
    other = Store(store.engine, store.keys)
    _answered_once(brief)
    other.step("o", now=T0, decide=Decider())
    decide = Decider()
    with pytest.raises(Changed):
        brief.step("o", now=T0, decide=decide)
    for _ in range(3):
        brief.step("o", now=T0, decide=decide)
    assert decide.cached == [True, False, False, False]
    time.sleep(1.1)
    brief.step("o", now=T0, decide=decide)  # kept again after this one
    brief.step("o", now=T0, decide=decide)
    assert decide.cached[-2:] == [False, True]


def test_another_worker_changing_the_profile_fails_the_warm_write(store: Store) -> None:
    sid = _answered_once(store)
    other = Store(store.engine, store.keys)
    other.update_profile("o", {"lang": "ar"}, now=T0, expires_at=T0 + HOUR)
    decide = Decider()
    with pytest.raises(Conflict):
        store.step("o", now=T0, decide=decide)
    assert decide.seen[0][0] == {}  # decided with the profile it had
    assert store.step("o", now=T0, decide=decide) == 3
    assert decide.seen[1][0] == {"lang": "ar"}
    assert store.answers(sid, now=T0) == {"q": "a3"}


def test_a_profile_that_expired_fails_the_warm_write(store: Store) -> None:
    store.update_profile("o", {"lang": "fr"}, now=T0, expires_at=T0 + timedelta(minutes=5))
    _answered_once(store)
    later = T0 + timedelta(minutes=10)
    decide = Decider()
    with pytest.raises(Conflict):
        store.step("o", now=later, decide=decide)
    assert decide.seen[0][0] == {"lang": "fr"}
    assert store.step("o", now=later, decide=decide) == 3
    assert decide.seen[1][0] == {}


def test_a_profile_rebuilt_after_expiry_at_the_same_version_fails_the_warm_write(
    store: Store,
) -> None:
    """Versions start again at 1 in a rebuilt profile: the check tells it by its key."""
    soon = T0 + timedelta(minutes=5)
    store.update_profile("o", {"lang": "fr"}, now=T0, expires_at=soon)  # version 2
    _answered_once(store)
    later = soon + timedelta(minutes=1)
    store.update_profile("x", {}, now=later, expires_at=later + HOUR)  # unrelated owner
    other = Store(store.engine, store.keys)
    other.update_profile("o", {"lang": "ar"}, now=later, expires_at=later + HOUR)  # new, v2
    decide = Decider()
    with pytest.raises(Conflict):
        store.step("o", now=later, decide=decide)
    assert decide.seen[0][0] == {"lang": "fr"}
    assert store.step("o", now=later, decide=decide) == 3
    assert decide.seen[1][0] == {"lang": "ar"}


def test_an_erasure_through_another_worker_fails_the_warm_write(store: Store) -> None:
    """The other worker cannot reach this one's memory; the copy's write then finds the
    session gone, writes nothing, and the fresh read finds nothing."""
    sid = _answered_once(store)
    Store(store.engine, store.keys).erase_owner("o")
    decide = Decider()
    with pytest.raises(Changed):  # not the answer's foreign key to the erased session
        store.step("o", now=T0, decide=decide)
    assert store.step("o", now=T0, decide=decide) is None
    assert decide.cached == [True, False]
    assert decide.seen[1] == ({}, None)
    assert store.get_session(sid, now=T0) is None
    assert store.answers(sid, now=T0) == {}


def test_a_refusal_on_the_warm_copy_is_decided_again_on_a_fresh_read(store: Store) -> None:
    _answered_once(store)
    decide = Decider(refuse_cached=True)
    assert store.step("o", now=T0, decide=decide) == 3
    assert decide.cached == [True, False]


def test_an_error_deciding_on_the_warm_copy_is_decided_again_on_a_fresh_read(
    store: Store,
) -> None:
    _answered_once(store)
    calls: list[bool] = []

    def decide(profile: dict[str, Any], record: SessionRecord | None) -> tuple[int, None]:
        assert record is not None
        calls.append(record.cached)
        if record.cached:
            raise ValueError("the copy's question is not the current one")
        return 0, None

    assert store.step("o", now=T0, decide=decide) == 0
    assert calls == [True, False]
    calls.clear()

    def always(profile: dict[str, Any], record: SessionRecord | None) -> tuple[int, None]:
        calls.append(record is not None and record.cached)
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        store.step("o", now=T0, decide=always)
    assert calls == [True, False]  # the fresh read's error is the one raised


def test_an_expired_session_is_not_served_from_memory(store: Store) -> None:
    _answered_once(store)
    decide = Decider()
    assert store.step("o", now=T0 + 2 * HOUR, decide=decide) is None
    assert decide.seen == [({}, None)]


def test_erasure_takes_the_warm_copy_too(store: Store) -> None:
    sid = _answered_once(store)
    store.erase_session(sid)
    decide = Decider()
    store.step("o", now=T0, decide=decide)
    assert decide.seen == [({}, None)]
    _answered_once(store)
    store.erase_owner("o")
    decide = Decider()
    store.step("o", now=T0, decide=decide)
    assert decide.seen == [({}, None)]


def _held(store: Store) -> int:
    # What the cache holds, entries past their time included (``in`` would skip those).
    assert store._warm is not None
    return int(store._warm.currsize)


def test_the_purge_drops_expired_warm_copies_from_memory(store: Store) -> None:
    _answered_once(store)
    assert _held(store) == 1
    store.purge(now=T0 + 2 * HOUR, pause=0)
    assert _held(store) == 0


def test_the_sweep_drops_copies_unused_for_too_long(store: Store) -> None:
    brief = Store(store.engine, store.keys, warm_seconds=0.5)
    _answered_once(brief)
    assert brief.sweep_warm(now=T0) == 0 and _held(brief) == 1
    time.sleep(0.6)
    # Still stored (the cache drops an entry past its time only when asked), until now.
    assert brief.sweep_warm(now=T0) == 1
    assert _held(brief) == 0


def test_a_session_that_ended_is_not_kept_warm(store: Store) -> None:
    store.create_session("o", {"n": 1}, now=T0, expires_at=T0 + HOUR)

    def end(profile: dict[str, Any], record: SessionRecord | None) -> tuple[None, StepPlan]:
        return None, StepPlan({"n": 9}, "ended")

    store.step("o", now=T0, decide=end)
    decide = Decider()
    store.step("o", now=T0, decide=decide)
    assert decide.seen == [({}, None)]


def test_a_new_session_replaces_the_warm_one(store: Store) -> None:
    _answered_once(store)
    fresh = store.create_session("o", {"n": 10}, now=T0, expires_at=T0 + HOUR)
    decide = Decider()
    assert store.step("o", now=T0, decide=decide) == 11
    ((_, record),) = decide.seen
    assert record is not None and record.id == fresh.id and not record.cached


def test_no_warm_copies_when_switched_off(store: Store) -> None:
    cold = Store(store.engine, store.keys, warm_entries=0)
    cold.create_session("o", {"n": 1}, now=T0, expires_at=T0 + HOUR)
    decide = Decider()
    for _ in range(3):
        cold.step("o", now=T0, decide=decide)
    assert decide.cached == [False, False, False]


def test_warm_copies_are_bounded_in_number(store: Store) -> None:
    small = Store(store.engine, store.keys, warm_entries=1)
    for owner in ("a", "b"):
        small.create_session(owner, {"n": 1}, now=T0, expires_at=T0 + HOUR)
    decide = Decider()
    for owner in ("a", "b", "a", "b"):
        small.step(owner, now=T0, decide=decide)
    # Each step of one owner pushed the other's copy out.
    assert decide.cached == [False, False, False, False]
    small.step("b", now=T0, decide=decide)
    assert decide.cached[-1] is True


@pytest.mark.parametrize("answers", [False, True])
@pytest.mark.parametrize("writes", [False, True])
@pytest.mark.parametrize("how", ["moved on", "erased"])
def test_a_missed_version_is_changed_whatever_the_step_writes(
    store: Store, answers: bool, writes: bool, how: str
) -> None:
    """``Changed`` (another writer got there first) and nothing written, with or without
    answers and writes through the ORM (which take the other path to COMMIT)."""
    sid = _answered_once(store)
    other = Store(store.engine, store.keys)
    if how == "erased":
        other.erase_owner("o")
    else:
        other.step("o", now=T0, decide=Decider())
    written: list[int] = []

    def decide(profile: dict[str, Any], record: SessionRecord | None) -> tuple[None, StepPlan]:
        assert record is not None
        change = [AnswerChange("q", "late")] if answers else []
        extra = [lambda db: written.append(1)] if writes else []
        return None, StepPlan({"n": 99}, "active", change, "u-late", extra)

    with pytest.raises(Changed):
        store.step("o", now=T0, decide=decide)
    assert written == []
    stored = other.get_session(sid, now=T0)
    assert (stored is None) == (how == "erased")
    assert stored is None or stored.state == {"n": 3}
    assert other.answers(sid, now=T0) == ({} if how == "erased" else {"q": "a3"})


def test_an_erasure_drops_a_copy_put_back_during_its_transaction(store: Store) -> None:
    """A step on another thread may keep a copy while the erasure's transaction runs: the
    copy is dropped again after the commit, so no erased plaintext stays in memory."""
    sid = _answered_once(store)
    assert store._warm is not None
    copy = store._warm["o"]
    delete = store._delete

    def meanwhile(*args: Any) -> Any:
        store._warm["o"] = copy  # type: ignore[index]
        return delete(*args)

    store._delete = meanwhile  # type: ignore[method-assign]
    store.erase_session(sid)
    assert _held(store) == 0
    store.create_session("o", {"n": 1}, now=T0, expires_at=T0 + HOUR)
    store.step("o", now=T0, decide=Decider())
    store.erase_owner("o")
    assert _held(store) == 0


class Claiming(Decider):
    """A Decider whose plan claims the update ``key`` (exactly once)."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def __call__(
        self, profile: dict[str, Any], record: SessionRecord | None
    ) -> tuple[int | None, StepPlan | None]:
        n, plan = super().__call__(profile, record)
        if plan is None:
            return n, None
        return n, StepPlan(plan.state, plan.status, plan.answers, claim=self.key)


def test_a_warm_write_that_misses_leaves_its_claim_unwritten(store: Store) -> None:
    """The claim goes first in the warm batch, before the version check fails: it must go
    with the rest (on PostgreSQL the batch is its own transaction, ended by its Sync)."""
    sid = _answered_once(store)
    Store(store.engine, store.keys).step("o", now=T0, decide=Decider())  # another worker
    decide = Claiming("u7")
    with pytest.raises(Changed):
        store.step("o", now=T0, decide=decide)
    assert decide.cached == [True]
    # The retry claims the same update: it was not kept.
    assert store.step("o", now=T0, decide=decide) == 4
    assert store.answers(sid, now=T0) == {"q": "a4"}


def test_a_warm_step_for_an_update_applied_before_writes_nothing(store: Store) -> None:
    sid = _answered_once(store)
    assert store.step("o", now=T0, decide=Claiming("u8")) == 3
    decide = Claiming("u8")  # Telegram delivers the same update again
    with pytest.raises(Duplicate):
        store.step("o", now=T0, decide=decide)
    assert decide.cached == [True]
    stored = store.get_session(sid, now=T0)
    assert stored is not None and (stored.version, stored.state) == (3, {"n": 3})
    assert store.answers(sid, now=T0) == {"q": "a3"}
    # And the session is still the person's to answer.
    assert store.step("o", now=T0, decide=Claiming("u9")) == 4


def test_a_failing_sent_hook_changes_nothing_of_the_write(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """``sent`` is the caller's notice (the bot answers the press from it): what it raises
    is logged, and the write commits and the step returns as without it."""
    sid = _answered_once(store)

    def broken() -> None:
        raise RuntimeError("event loop is closed")

    with caplog.at_level(logging.ERROR, logger="waymark.storage"):
        assert store.step("o", now=T0, decide=Claiming("u5"), sent=broken) == 3
    assert any("'sent' hook failed" in r.getMessage() for r in caplog.records)
    stored = store.get_session(sid, now=T0)
    assert stored is not None and (stored.version, stored.state) == (3, {"n": 3})
    assert store.answers(sid, now=T0) == {"q": "a3"}
