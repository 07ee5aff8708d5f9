"""``waymark i18n extract``: refresh the .pot templates and merge them into every .po.

Bot texts come from ``bot/`` (Babel's Python extractor: ``_``, ``gettext``, ``ngettext``);
flow texts come from ``flows/defs`` through ``flows.extract``. New entries are added
untranslated, stale ones become obsolete; translators then work in any PO editor.
"""

from __future__ import annotations

from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from bot.i18n import LOCALES_DIR

ROOT = LOCALES_DIR.parent
SOURCES = {
    "bot": (ROOT / "bot", [("**.py", "python")]),
    "flows": (ROOT / "flows" / "defs", [("**.yaml", "flows.extract:extract_flow")]),
}
KEYWORDS = {
    "_": None,
    "N_": None,
    "gettext": None,
    "ngettext": (1, 2),
    "pgettext": ((1, "c"), 2),
}


def build_template(domain: str) -> Catalog:
    """Extract one domain's template."""
    directory, method_map = SOURCES[domain]
    catalog = Catalog(project="Waymark", version="1", charset="utf-8")
    for filename, lineno, message, comments, context in extract_from_dir(
        str(directory), method_map, keywords=KEYWORDS, strip_comment_tags=True
    ):
        where = str((directory / filename).relative_to(ROOT))
        catalog.add(message, None, [(where, lineno)], auto_comments=comments, context=context)
    return catalog


def update_catalogs(directory: Path = LOCALES_DIR) -> list[Path]:
    """Write both templates and merge them into every language's catalogs."""
    written = []
    for domain in SOURCES:
        template = build_template(domain)
        pot = directory / f"{domain}.pot"
        with pot.open("wb") as handle:
            write_po(handle, template, width=100, omit_header=False)
        written.append(pot)
        for po in sorted(directory.glob(f"*/LC_MESSAGES/{domain}.po")):
            with po.open("rb") as handle:
                catalog = read_po(handle, locale=po.parent.parent.name)
            catalog.update(template, no_fuzzy_matching=True)
            with po.open("wb") as handle:
                write_po(handle, catalog, width=100, ignore_obsolete=True)
            written.append(po)
    return written


def main() -> None:
    """Entry point of ``python -m bot.i18n_extract``."""
    for path in update_catalogs():
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
