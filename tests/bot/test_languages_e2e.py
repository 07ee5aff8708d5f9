"""A full screening in each of the eleven locales, and one in bilingual mode (RTL respondent)."""

from __future__ import annotations

import pytest

from bot.i18n import Translator
from tests.bot.conftest import Harness

pytestmark = pytest.mark.e2e
LANGS = ["en", "ar", "fa", "ps", "ur", "bn", "th", "vi", "id", "km", "my"]
FLOW = "screening_red_flags"


@pytest.mark.parametrize("lang", LANGS)
async def test_full_screening_in_each_locale(harness: Harness, lang: str) -> None:
    """Menu, questions, buttons and outcome all come in the person's language."""
    tr = Translator(lang)
    harness.runtime.service.update_profile(harness.owner, lang=lang)  # the person's choice
    title = tr.flow(FLOW, "@flow", "title", harness.runtime.flows[FLOW].flow.title)
    await harness.send("/screen", language_code=lang)
    await harness.press(title)
    first = harness.last()["text"]
    intro = harness.runtime.flows[FLOW].steps[harness.runtime.flows[FLOW].order[0]]
    assert tr.flow(FLOW, intro.id, "text", intro.text)[:20] in first
    await harness.play(language=lang)
    texts = "\n".join(harness.texts())
    english = (
        "This screening supports your decision on next steps. It does not identify anyone as "
        "a victim and is not a legal finding."
    )
    note = tr.gettext(english)
    assert note[:30] in texts
    if lang != "en":
        assert note != english, "the fixed note is translated"
        assert english not in texts
    if tr.rtl:
        assert "\u2066" in texts, "left-to-right runs are isolated in right-to-left text"


async def test_bilingual_screening_with_rtl_respondent(harness: Harness) -> None:
    """Respondent's language (Arabic) first, the responder's (English) below; same codes."""
    harness.runtime.service.update_profile(harness.owner, lang="en", resp_lang="ar")
    ar, en = Translator("ar"), Translator("en")
    flow = harness.runtime.flows[FLOW]
    await harness.send("/screen")
    await harness.press(en.flow(FLOW, "@flow", "title", flow.flow.title))
    await harness.press((0, 0))  # the intro
    question = harness.last()["text"]
    step = flow.steps[harness.state().current]
    arabic = ar.flow(FLOW, step.id, "text", step.text)
    assert question.index(arabic[:15]) < question.index(step.text[:15])
    assert any(" · " in label for label in harness.labels())
    await harness.play(language="en")
    clock = harness.runtime.service.clock()
    session = harness.runtime.store.sessions_of(harness.owner, now=clock)[0]
    answers = harness.runtime.store.answers(session.id, now=clock)
    codes = {v for v in answers.values() if isinstance(v, str)}
    assert codes <= {"observed", "not_observed", "not_sure", "yes", "no", "prefer_not"}


async def test_consent_is_given_whole_in_the_respondent_language(harness: Harness) -> None:
    """In bilingual mode the consent explanation is entirely in the respondent's language."""
    harness.runtime.service.update_profile(harness.owner, lang="en", resp_lang="fa")
    fa = Translator("fa")
    flow = harness.runtime.flows["consent_screening"]
    await harness.send("/consent")
    await harness.press(Translator("en").flow(flow.id, "@flow", "title", flow.flow.title))
    first = flow.steps[flow.order[0]]
    text = harness.last()["text"]
    assert fa.flow(flow.id, first.id, "text", first.text)[:15] in text
    assert first.text[:15] not in text
