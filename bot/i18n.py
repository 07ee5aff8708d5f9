"""Catalogs and language resolution.

Texts of the bot are gettext messages in the ``bot`` domain; texts of flows live in the
``flows`` domain with a context per step field (``flows.texts``). A missing translation
falls back per string to the English source, never to a blank or a raw key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache, lru_cache
from pathlib import Path

from babel import Locale, UnknownLocaleError, negotiate_locale
from babel.dates import format_date, format_datetime
from babel.numbers import format_decimal
from babel.support import NullTranslations, Translations

from flows import texts

LOCALES_DIR = Path(__file__).resolve().parent.parent / "locales"
SOURCE_LANGUAGE = "en"


def available_languages(directory: Path = LOCALES_DIR) -> list[str]:
    """Languages that ship catalogs, English (the source) first."""
    found = sorted(p.name for p in directory.iterdir() if (p / "LC_MESSAGES").is_dir())
    return [SOURCE_LANGUAGE, *[lang for lang in found if lang != SOURCE_LANGUAGE]]


def negotiate(preferred: str | None, available: list[str]) -> str | None:
    """Match a Telegram ``language_code`` (``pt-br``, ``fa``) to a shipped language."""
    if not preferred:
        return None
    return negotiate_locale([preferred.replace("-", "_")], available, sep="_")


def resolve_language(
    chosen: str | None, telegram_code: str | None, default: str, available: list[str]
) -> str:
    """The person's choice, else Telegram's language negotiated, else the default, else English."""
    for candidate in (chosen, negotiate(telegram_code, available), default):
        if candidate and candidate in available:
            return candidate
    return SOURCE_LANGUAGE


@cache
def _catalog(language: str, domain: str, directory: Path) -> NullTranslations:
    if language == SOURCE_LANGUAGE:
        return NullTranslations()
    return Translations.load(str(directory), [language], domain)


@lru_cache(maxsize=4096)
def _number(value: int | float, language: str) -> str:
    # Every question shows its position ("3/12"): the same few numbers, formatted often.
    return format_decimal(value, locale=language)


@cache
def is_rtl(language: str) -> bool:
    """Whether the language is written right to left (Arabic, Persian, Pashto, Urdu…)."""
    try:
        return Locale.parse(language).character_order == "right-to-left"
    except (ValueError, UnknownLocaleError):
        return False


@dataclass(frozen=True)
class Translator:
    """Translations for one language.

    Attributes:
        language: The language code.
        directory: The locales directory.
    """

    language: str
    directory: Path = field(default=LOCALES_DIR)

    def gettext(self, message: str) -> str:
        """Translate a bot text."""
        return _catalog(self.language, "bot", self.directory).gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        """Translate a bot text with a plural form."""
        return _catalog(self.language, "bot", self.directory).ngettext(singular, plural, n)

    def flow(self, flow_id: str, owner: str, name: str, source: str) -> str:
        """Translate one field of a flow, falling back to its source text."""
        catalog = _catalog(self.language, "flows", self.directory)
        translated = catalog.pgettext(texts.context(flow_id, owner, name), source)
        return str(translated) if translated else source

    def date(self, value: date) -> str:
        """A date in this language's conventions (Babel/CLDR)."""
        return format_date(value, format="medium", locale=self.language)

    def datetime(self, value: datetime) -> str:
        """A date and time (UTC) in this language's conventions (Babel/CLDR)."""
        return format_datetime(value, format="medium", tzinfo=UTC, locale=self.language) + " UTC"

    def number(self, value: int | float) -> str:
        """A number in this language's conventions (Babel/CLDR)."""
        return _number(value, self.language)

    @property
    def rtl(self) -> bool:
        """Whether this language is right to left."""
        return is_rtl(self.language)


def null_gettext(message: str) -> str:
    """Mark a text for extraction without translating it here (``N_``)."""
    return message


__all__ = [
    "LOCALES_DIR",
    "Translator",
    "available_languages",
    "is_rtl",
    "negotiate",
    "null_gettext",
    "resolve_language",
]
