"""Compile every ``locales/<lang>/LC_MESSAGES/*.po`` to ``.mo`` (run by ``./dev`` setup).

``.mo`` files are build output and are not committed; compiling on setup means a checkout
can never run with catalogs older than their sources.
"""

from __future__ import annotations

import sys
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from bot.i18n import LOCALES_DIR


def compile_all(directory: Path = LOCALES_DIR) -> int:
    """Compile every catalog under ``directory``; return how many were written."""
    count = 0
    for po in sorted(directory.glob("*/LC_MESSAGES/*.po")):
        with po.open("rb") as handle:
            catalog = read_po(handle, locale=po.parent.parent.name)
        with po.with_suffix(".mo").open("wb") as handle:
            # Fuzzy entries are drafts a translator has not confirmed: never shipped.
            write_mo(handle, catalog, use_fuzzy=False)
        count += 1
    return count


def main() -> None:
    """Entry point of ``python -m bot.i18n_build``."""
    count = compile_all()
    sys.stdout.write(f"compiled {count} catalog(s)\n")


if __name__ == "__main__":
    main()
