"""One user, the bare bot then Waymark, from the code tree given: for paired before/after runs.

A change to the press path is measured by running this alternately on two checkouts (say, a
``git worktree`` of the commit before the change, with this commit's ``bench/per_update.py``
copied in) and comparing Waymark's medians pair by pair; the bare bot's median shows how
noisy each moment was.

    .venv/bin/python bench/paired.py --tree ../wt-before [--db-url postgresql+psycopg://…]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

# This bench folder's (it imports only SQLAlchemy), before --tree puts the other one first.
from schemas import schema_for


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--db-url", default=None, help="a PostgreSQL URL; SQLite if not given")
    parser.add_argument("--presses", type=int, default=240)
    args = parser.parse_args()
    tree = Path(args.tree).resolve()
    # That tree's code, and its copy of the per-update harness.
    sys.path[:0] = [str(tree / "bench"), str(tree)]
    asyncio.run(run(tree, args.db_url, args.presses))


async def run(tree: Path, db_url_base: str | None, presses: int) -> None:
    # From the tree given, now that it is on the path.
    import per_update as pu

    pu.PRESSES_PER_USER[1] = presses
    fake = pu.FakeProcess()
    try:
        updates = pu.Updates(fake)
        bare = pu.summary(await pu.run_bare(fake, updates, 1))["median_ms"]
        with tempfile.TemporaryDirectory() as tmp, schema_for(db_url_base) as db_url:
            result = await pu.run_waymark(fake, updates, 1, db_url, Path(tmp))
        waymark = pu.summary(result)["median_ms"]
        pu.check_violations(fake)
        print(f"{tree.name}: bare {bare:.2f} ms, waymark {waymark:.2f} ms, {waymark / bare:.2f}×")
    finally:
        fake.close()


if __name__ == "__main__":
    main()
