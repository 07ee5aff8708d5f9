"""Aggregate counters: written in one statement with a flow's last answer, summed per day."""

from __future__ import annotations

from datetime import timedelta

from storage.repository import Store
from storage.teams import Teams
from tests.conftest import T0


def test_counts_add_up_per_team_and_day(store: Store) -> None:
    teams = Teams(store)
    day = T0.date()
    teams.add_counts("t1", day, {"screening.tier.strong": 1, "category.harm_and_fear": 1})
    teams.add_counts("t1", day, {"screening.tier.strong": 2, "screening.tier.none": 1})
    teams.add_counts("t1", day + timedelta(days=1), {"screening.tier.strong": 5})
    teams.add_counts("t2", day, {"screening.tier.strong": 7})
    teams.add_counts("t1", day, {})  # a flow with nothing to count writes nothing
    assert teams.counts("t1", since=day, until=day) == {
        "screening.tier.strong": 3,
        "screening.tier.none": 1,
        "category.harm_and_fear": 1,
    }
    assert teams.counts("t1", since=day)["screening.tier.strong"] == 8
