"""``waymark i18n status``: per language, the share of texts translated and the review status.

A locale's review status lives in ``locales/<lang>/REVIEW``: ``draft`` until a native
speaker has reviewed it, then ``reviewed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from babel.messages.pofile import read_po

from bot.i18n import LOCALES_DIR, SOURCE_LANGUAGE, available_languages

DOMAINS = ("bot", "flows")


@dataclass(frozen=True, slots=True)
class LocaleStatus:
    """Completeness of one language.

    Attributes:
        language: The code.
        translated: Texts with a non-fuzzy translation.
        total: Texts in the templates.
        review: ``source``, ``draft`` or ``reviewed``.
    """

    language: str
    translated: int
    total: int
    review: str

    @property
    def share(self) -> float:
        """Translated share, 0..1."""
        return self.translated / self.total if self.total else 1.0


def review_status(language: str, directory: Path = LOCALES_DIR) -> str:
    """``source`` for English, else the first word of ``locales/<lang>/REVIEW``.

    The status lives in a file of its own rather than a PO header, because catalog tools
    (Babel's own ``update``) drop header fields they do not know. A locale without the file
    is a ``draft``.
    """
    if language == SOURCE_LANGUAGE:
        return "source"
    path = directory / language / "REVIEW"
    if not path.exists():
        return "draft"
    words = path.read_text(encoding="utf-8").split()
    return words[0].lower() if words and words[0].lower() in ("draft", "reviewed") else "draft"


def locale_status(language: str, directory: Path = LOCALES_DIR) -> LocaleStatus:
    """Count translated entries of every domain for one language."""
    translated = total = 0
    for domain in DOMAINS:
        pot = directory / f"{domain}.pot"
        if not pot.exists():
            continue
        with pot.open("rb") as handle:
            template = read_po(handle)
        ids = {(m.context, m.id) for m in template if m.id}
        total += len(ids)
        if language == SOURCE_LANGUAGE:
            translated += len(ids)
            continue
        po = directory / language / "LC_MESSAGES" / f"{domain}.po"
        if not po.exists():
            continue
        with po.open("rb") as handle:
            catalog = read_po(handle)
        translated += sum(
            1 for m in catalog if m.id and (m.context, m.id) in ids and m.string and not m.fuzzy
        )
    return LocaleStatus(language, translated, total, review_status(language, directory))


def print_status(out: TextIO, directory: Path = LOCALES_DIR) -> int:
    """Print one line per language; exit status 0."""
    for language in available_languages(directory):
        status = locale_status(language, directory)
        out.write(
            f"{language:6} {status.share:6.1%}  {status.translated}/{status.total}  "
            f"{status.review}\n"
        )
    return 0
