"""Small-count suppression, complementary suppression, trends, and the CSV export."""

from __future__ import annotations

import csv
import io

from hypothesis import given
from hypothesis import strategies as st

from bot.digest import THRESHOLD, build, suppress, to_csv


def test_primary_suppression() -> None:
    """1-10 hidden, 0 and 11+ shown."""
    assert suppress({"a": 0, "b": 5, "c": 11, "d": 40, "e": 3}, total_shown=False) == {
        "a": 0,
        "b": None,
        "c": 11,
        "d": 40,
        "e": None,
    }


def test_complementary_suppression_hides_a_second_cell() -> None:
    """With a shown total, one hidden cell would be total minus the rest: hide another."""
    out = suppress({"none": 40, "some": 25, "strong": 4}, total_shown=True)
    assert out["strong"] is None and out["some"] is None and out["none"] == 40


def test_small_total_hides_the_group() -> None:
    """A total of 1-10 hides every non-zero cell."""
    assert suppress({"a": 3, "b": 0, "c": 2}, total_shown=True) == {"a": None, "b": 0, "c": None}


@given(st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 200), min_size=2))
def test_no_hidden_cell_can_be_derived_from_the_total(cells: dict[str, int]) -> None:
    """Property: no shown count is between 1 and 10, and wherever the total is shown
    (0 or 11+), never exactly one cell is hidden (it would be total minus the rest)."""
    out = suppress(cells, total_shown=True)
    assert all(v is None or v == 0 or v >= THRESHOLD for v in out.values())
    total = sum(cells.values())
    if total == 0 or total >= THRESHOLD:
        assert len([k for k, v in out.items() if v is None]) != 1
    else:
        # A small total is itself suppressed in the digest.
        tiers = {f"screening.tier.{k}": v for k, v in cells.items()}
        assert build(tiers).screenings is None


def test_trend_needs_fifty_observations() -> None:
    """No trend on fewer than 50 screenings in either period."""
    now = {"screening.tier.none": 60, "screening.tier.some": 20}
    assert build(now, {"screening.tier.none": 49}).trend is None
    assert build(now, {"screening.tier.none": 70}).trend == 10


def test_quiz_average_only_with_enough_answers() -> None:
    """A topic average is shown only when 11+ answers back it."""
    d = build(
        {
            "quiz.topic.children.correct": 9,
            "quiz.topic.children.asked": 12,
            "quiz.topic.consent_data.correct": 2,
            "quiz.topic.consent_data.asked": 3,
        }
    )
    assert d.topics == {"children": 75}


def test_csv_export_is_suppressed() -> None:
    """The export shows '<11' for small counts and never a raw 1-10."""
    rows = list(
        csv.reader(
            io.StringIO(
                to_csv(
                    {
                        "screening.tier.none": 30,
                        "screening.tier.strong": 2,
                        "category.deception": 7,
                        "consent.given": 15,
                    }
                )
            )
        )
    )
    assert rows[0] == ["metric", "value"]
    values = dict(rows[1:])
    assert values["screenings.strong"] == "<11"
    assert values["indicator_category.deception"] == "<11"
    assert all(
        v == "<11" or v == "0" or int(v) >= 11
        for k, v in values.items()
        if not k.startswith("quiz_average")
    )
