"""Every translatable text of a flow, with a stable context and its line.

A text is addressed by ``msgctxt = "<flow>:<owner>:<field>"`` (goflow's item + property,
in gettext form), so a translation follows its step across reordering, and a changed source
text falls back to the new source instead of showing a stale translation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from flows.loader import LoadedFlow
from flows.model import ConsentStep, QuizStep


@dataclass(frozen=True, slots=True)
class FlowText:
    """One translatable text.

    Attributes:
        context: The gettext context.
        text: The source text.
        line: The line of its owner in the flow file (0 if unknown).
        comment: A hint for translators.
    """

    context: str
    text: str
    line: int
    comment: str = ""


def context(flow_id: str, owner: str, field: str) -> str:
    """The gettext context of one field of one step, section or outcome."""
    return f"{flow_id}:{owner}:{field}"


def flow_texts(flow: LoadedFlow) -> Iterator[FlowText]:
    """Yield every translatable text of ``flow`` in document order."""
    fid = flow.id
    first_line = flow.lines.get("@title", 1)
    yield FlowText(context(fid, "@flow", "title"), flow.flow.title, first_line, "flow title")
    if flow.flow.description:
        line = flow.lines.get("@description", first_line)
        yield FlowText(context(fid, "@flow", "description"), flow.flow.description, line)
    for section in flow.flow.sections:
        line = flow.lines.get(section.steps[0].id, 0)
        yield FlowText(context(fid, f"@{section.id}", "title"), section.title, line, "section")
    for category in flow.flow.scoring.categories:
        yield FlowText(context(fid, f"#{category.id}", "title"), category.title, first_line)
    for step in flow.flow.steps():
        line = flow.lines.get(step.id, 0)
        src = f"source: {step.source}" if step.source else ""
        yield FlowText(context(fid, step.id, "text"), step.text, line, src)
        if step.help:
            yield FlowText(context(fid, step.id, "help"), step.help, line)
        if isinstance(step, ConsentStep) and step.explain:
            yield FlowText(context(fid, step.id, "explain"), step.explain, line)
        if isinstance(step, QuizStep):
            yield FlowText(context(fid, step.id, "explanation"), step.explanation, line)
        for option in getattr(step, "options", ()):
            yield FlowText(context(fid, step.id, f"option.{option.code}"), option.text, line)
    for outcome in flow.flow.outcomes:
        line = flow.lines.get(outcome.id, 0)
        yield FlowText(context(fid, outcome.id, "title"), outcome.title, line, "outcome")
        yield FlowText(context(fid, outcome.id, "text"), outcome.text, line, "outcome")
        for i, item in enumerate(outcome.next_steps):
            yield FlowText(context(fid, outcome.id, f"next.{i}"), item, line)
