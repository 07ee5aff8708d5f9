"""Start-up: time to load and validate every flow and every catalog, and to open a runtime.

.venv/bin/python bench/startup.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot import i18n
from bot.runtime import open_runtime
from bot.settings import Settings
from flows.loader import load_directory


def timed(fn: object, runs: int = 5) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def catalogs() -> None:
    i18n._catalog.cache_clear()
    for lang in i18n.available_languages():
        tr = i18n.Translator(lang)
        tr.gettext("Yes")
        tr.flow("x", "y", "text", "z")


def runtime_cold() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        open_runtime(Settings(data_dir=Path(tmp))).close()


def runtime_warm(directory: Path) -> None:
    open_runtime(Settings(data_dir=directory)).close()


def main() -> None:
    flows = load_directory()
    steps = sum(len(f.order) for f in flows.values())
    print(
        f"load and validate {len(flows)} flows ({steps} steps): {1000 * timed(load_directory):.0f} ms"
    )
    print(
        f"load {len(i18n.available_languages())} languages' catalogs: {1000 * timed(catalogs):.0f} ms"
    )
    print(
        f"open a fresh data directory (key, migrations, flows): {1000 * timed(runtime_cold, 3):.0f} ms"
    )
    with tempfile.TemporaryDirectory() as tmp:
        runtime_warm(Path(tmp))
        print(
            f"open an existing data directory: {1000 * timed(lambda: runtime_warm(Path(tmp)), 3):.0f} ms"
        )


if __name__ == "__main__":
    main()
