"""Team digests: counts only, with small counts suppressed so nobody can be singled out.

Rules (from the disclosure-control practice the research notes cite):

* any count from 1 to 10 is shown as "fewer than 11" (0 is shown as 0);
* complementary suppression: in a group whose total is shown, if one cell is hidden, the
  next smallest non-zero cell is hidden too, so the hidden value cannot be worked out as
  total minus the others; a total of 1-10 hides the whole group;
* no trend is claimed on fewer than 50 observations in either period.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass

THRESHOLD = 11
TREND_MINIMUM = 50


def suppress(cells: Mapping[str, int], *, total_shown: bool) -> dict[str, int | None]:
    """Primary and complementary suppression of one group; None means "fewer than 11"."""
    out: dict[str, int | None] = {k: (None if 0 < v < THRESHOLD else v) for k, v in cells.items()}
    total = sum(cells.values())
    if total_shown and 0 < total < THRESHOLD:
        return {k: (None if v else 0) for k, v in cells.items()}
    hidden = [k for k, v in out.items() if v is None]
    if total_shown and len(hidden) == 1:
        visible = sorted((v, k) for k, v in cells.items() if out[k] is not None and v > 0)
        if visible:
            out[visible[0][1]] = None
    return out


def show(value: int | None, less_than: str) -> str:
    """A suppressed cell as text."""
    return less_than if value is None else str(value)


@dataclass(frozen=True, slots=True)
class Digest:
    """What a digest shows, already suppressed.

    Attributes:
        screenings: Total screenings (None if suppressed).
        tiers: Screenings by outcome tier.
        categories: Most frequent indicator categories (count or None), most frequent first.
        consent: Consent given and declined.
        quizzes: Quiz sittings completed.
        topics: Average score per quiz topic (percent), only where 11+ answers back it.
        trend: Change in screenings against the previous period, or None (too few).
    """

    screenings: int | None
    tiers: dict[str, int | None]
    categories: list[tuple[str, int | None]]
    consent: dict[str, int | None]
    quizzes: int | None
    topics: dict[str, int]
    trend: int | None


def build(counts: Mapping[str, int], previous: Mapping[str, int] | None = None) -> Digest:
    """Turn raw counters into a suppressed digest."""
    tiers_raw = {
        k.removeprefix("screening.tier."): v
        for k, v in counts.items()
        if k.startswith("screening.tier.")
    }
    total = sum(tiers_raw.values())
    tiers = suppress(tiers_raw, total_shown=True)
    shown_total: int | None = total if total == 0 or total >= THRESHOLD else None
    cats_raw = {
        k.removeprefix("category."): v for k, v in counts.items() if k.startswith("category.")
    }
    cats = suppress(cats_raw, total_shown=False)
    top = sorted(cats_raw, key=lambda k: (-cats_raw[k], k))[:5]
    consent_raw = {k: counts.get(f"consent.{k}", 0) for k in ("given", "declined")}
    consent = suppress(consent_raw, total_shown=True)
    quizzes = counts.get("quiz.completed", 0)
    topics = {}
    for key, asked in counts.items():
        if key.startswith("quiz.topic.") and key.endswith(".asked") and asked >= THRESHOLD:
            topic = key.removeprefix("quiz.topic.").removesuffix(".asked")
            correct = counts.get(f"quiz.topic.{topic}.correct", 0)
            topics[topic] = round(100 * correct / asked)
    trend = None
    if previous is not None:
        before = sum(v for k, v in previous.items() if k.startswith("screening.tier."))
        if before >= TREND_MINIMUM and total >= TREND_MINIMUM:
            trend = total - before
    return Digest(
        screenings=shown_total,
        tiers=tiers,
        categories=[(k, cats[k]) for k in top],
        consent=consent,
        quizzes=quizzes if quizzes == 0 or quizzes >= THRESHOLD else None,
        topics=topics,
        trend=trend,
    )


def to_csv(counts: Mapping[str, int]) -> str:
    """The suppressed aggregates as CSV rows (metric, value) for national reporting."""
    digest = build(counts)
    rows: list[tuple[str, str]] = [("screenings", show(digest.screenings, "<11"))]
    rows += [(f"screenings.{k}", show(v, "<11")) for k, v in sorted(digest.tiers.items())]
    rows += [(f"indicator_category.{k}", show(v, "<11")) for k, v in digest.categories]
    rows += [(f"consent.{k}", show(v, "<11")) for k, v in sorted(digest.consent.items())]
    rows.append(("quizzes_completed", show(digest.quizzes, "<11")))
    rows += [(f"quiz_average_percent.{k}", str(v)) for k, v in sorted(digest.topics.items())]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("metric", "value"))
    writer.writerows(rows)
    return out.getvalue()
