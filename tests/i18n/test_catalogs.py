"""Translation checks: complete, compiled, placeholder-safe, and within Telegram's limits."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from bot import presenter
from bot.callback_data import MAX_BYTES, CallbackCodec, seq_code
from bot.i18n import LOCALES_DIR, Translator, available_languages, is_rtl, resolve_language
from bot.i18n_build import compile_all
from bot.i18n_status import locale_status, review_status
from bot.text import directional
from flows.engine import StartContext, start
from flows.events import Ask
from flows.loader import LoadedFlow
from flows.model import ChecklistStep, RiskStep
from storage.crypto import KeyRing

EXPECTED = {"en", "ar", "fa", "ps", "ur", "bn", "th", "vi", "id", "km", "my"}
LANGS = [lang for lang in available_languages() if lang != "en"]
PLACEHOLDER = re.compile(r"\{\w+\}")


def test_all_eleven_locales_ship() -> None:
    """English and the ten translated locales are present."""
    assert set(available_languages()) == EXPECTED


def test_every_catalog_compiles(tmp_path: Path) -> None:
    """Every .po compiles to .mo (what ./dev does on setup)."""
    copy = tmp_path / "locales"
    shutil.copytree(LOCALES_DIR, copy, ignore=shutil.ignore_patterns("*.mo"))
    assert compile_all(copy) == 2 * len(LANGS)


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("domain", ["bot", "flows"])
def test_no_missing_or_fuzzy_entry_and_placeholders_kept(lang: str, domain: str) -> None:
    """Every template entry has a confirmed translation that keeps its placeholders."""
    with (LOCALES_DIR / f"{domain}.pot").open("rb") as handle:
        template = read_po(handle)
    with (LOCALES_DIR / lang / "LC_MESSAGES" / f"{domain}.po").open("rb") as handle:
        catalog = read_po(handle, locale=lang)
    problems = []
    for message in template:
        if not message.id:
            continue
        found = catalog.get(message.id, context=message.context)
        strings = (
            []
            if found is None
            else ([found.string] if isinstance(found.string, str) else list(found.string))
        )
        if found is None or found.fuzzy or not strings or not all(strings):
            problems.append(f"missing: {message.context} {message.id!r:.60}")
            continue
        source = message.id if isinstance(message.id, str) else message.id[1]
        wanted = set(PLACEHOLDER.findall(source))
        for text in strings:
            if set(PLACEHOLDER.findall(text)) - wanted:
                problems.append(f"unknown placeholder: {message.id!r:.60}")
            if wanted - set(PLACEHOLDER.findall(text)) - {"{n}"}:
                problems.append(f"lost placeholder: {message.id!r:.60}")
    assert problems == []


@pytest.mark.skipif(shutil.which("msgfmt") is None, reason="GNU gettext not installed")
@pytest.mark.parametrize("lang", LANGS)
def test_msgfmt_check(lang: str, tmp_path: Path) -> None:
    """GNU gettext's own checks pass (format strings, headers, plural forms)."""
    for domain in ("bot", "flows"):
        po = LOCALES_DIR / lang / "LC_MESSAGES" / f"{domain}.po"
        result = subprocess.run(
            ["msgfmt", "--check", "-o", str(tmp_path / f"{domain}.mo"), str(po)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("lang", LANGS)
def test_drafts_are_marked(lang: str) -> None:
    """Machine-drafted locales say so until a native speaker has reviewed them."""
    assert (LOCALES_DIR / lang / "REVIEW").exists()
    assert review_status(lang) in ("draft", "reviewed")
    status = locale_status(lang)
    assert status.translated == status.total


def test_resolution_order() -> None:
    """Choice, then Telegram's language negotiated, then the default, then English."""
    langs = available_languages()
    assert resolve_language("th", "ar", "vi", langs) == "th"
    assert resolve_language(None, "ar-EG", "vi", langs) == "ar"
    assert resolve_language(None, "fr", "vi", langs) == "vi"
    assert resolve_language(None, "fr", "xx", langs) == "en"
    assert resolve_language("zz", None, "en", langs) == "en"


def test_missing_string_falls_back_per_string(tmp_path: Path) -> None:
    """A string absent from a catalog shows its English source, never blank or a key."""
    tr = Translator("ar")
    assert tr.gettext("A sentence no catalog has.") == "A sentence no catalog has."
    assert tr.flow("nope", "x", "text", "Source text") == "Source text"


def test_rtl_languages_are_detected_and_isolated() -> None:
    """Arabic, Persian, Pashto and Urdu are right to left; LTR runs get isolates."""
    assert {lang for lang in EXPECTED if is_rtl(lang)} == {"ar", "fa", "ps", "ur"}
    text = directional("القسم · 3/12 — Tool 1.6", rtl=True)
    assert "\u20663/12\u2069" in text and "\u2066Tool 1.6\u2069" in text
    assert directional("Section 3/12", rtl=False) == "Section 3/12"


def _every_ask(flow: LoadedFlow) -> list[Ask]:
    state, events = start(flow, StartContext(0), __import__("tests.conftest").conftest.T0)
    asks = []
    for step_id in flow.order:
        step = flow.steps[step_id]
        phases = ["answer"]
        if isinstance(step, ChecklistStep) and step.note:
            phases.append("note")
        if isinstance(step, RiskStep):
            phases += ["impact", "mitigation"]
        for phase in phases:
            asks.append(
                Ask(
                    step_id,
                    seq=99999,
                    phase=phase,
                    position=400,
                    total=400,
                    can_back=True,
                    can_skip=True,
                )
            )
    del state, events
    return asks


@pytest.mark.parametrize("lang", sorted(EXPECTED))
def test_every_flow_message_fits_telegram(lang: str, shipped: dict[str, LoadedFlow]) -> None:
    """Every question and outcome of every flow, rendered in every locale (and bilingual with
    English), fits 4096 characters; every callback datum fits 64 bytes."""
    tr, en = Translator(lang), Translator("en")
    codec = CallbackCodec(KeyRing.generate())
    owner, session = "o" * 22, "s" * 22
    worst_callback = 0
    for flow in shipped.values():
        for ask in _every_ask(flow):
            prompt = presenter.prompt(tr, flow, ask)
            english = presenter.prompt(en, flow, ask)
            text = directional(prompt.header, tr.rtl) + "\n\n" + directional(prompt.body, tr.rtl)
            bilingual = text + "\n\n" + english.body
            assert len(bilingual) <= 4096, (flow.id, ask.step_id, len(bilingual))
            for index in range(len(prompt.actions)):
                data = codec.pack(owner, session, "a", seq_code(ask.seq), str(index))
                worst_callback = max(worst_callback, len(data.encode()))
        for outcome in flow.flow.outcomes:
            title = tr.flow(flow.id, outcome.id, "title", outcome.title)
            body = tr.flow(flow.id, outcome.id, "text", outcome.text)
            assert len(title) + len(body) < 3800
    assert worst_callback <= MAX_BYTES
