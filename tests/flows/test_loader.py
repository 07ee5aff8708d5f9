"""Loader: every problem names the file, the line and a stable code."""

from __future__ import annotations

import textwrap

import pytest

from flows.errors import Code, FlowDefinitionError
from flows.loader import load_text

HEADER = """\
spec_version: 1
id: tiny
version: 1
kind: screening
title: Tiny
retention: 30d
"""

OUTCOMES = """\
outcomes:
  - {id: done, title: Done, text: Finished.}
"""


def flow(body: str, *, outcomes: str = OUTCOMES, header: str = HEADER) -> str:
    return header + textwrap.dedent(body) + outcomes


def problems(text: str) -> list[tuple[Code, int]]:
    with pytest.raises(FlowDefinitionError) as info:
        load_text(text, "tiny.yaml")
    for p in info.value.problems:
        assert str(p).startswith("tiny.yaml:"), str(p)
    return [(p.code, p.line) for p in info.value.problems]


def assert_flow_error(text: str, code: Code, line: int) -> None:
    found = problems(text)
    assert (code, line) in found, found


VALID = """\
sections:
  - id: s
    title: S
    steps:
      - id: q1
        type: yes_no
        text: Question one?
        source: test
        store: code
"""


def test_valid_flow_loads() -> None:
    """A minimal flow loads and indexes its steps."""
    loaded = load_text(flow(VALID), "tiny.yaml")
    assert loaded.order == ("q1",)
    assert loaded.lines["q1"] == 11


def test_yaml_syntax_error_has_line() -> None:
    """Broken YAML is YAML_001 at the line the parser stopped."""
    assert_flow_error(HEADER + "sections:\n  - id: s\n    title: [unclosed\n", Code.YAML_001, 10)


def test_duplicate_key() -> None:
    """A key repeated in one mapping is YAML_002 at the second occurrence."""
    assert_flow_error(HEADER + "title: Again\n" + VALID + OUTCOMES, Code.YAML_002, 7)


def test_unsupported_spec_version() -> None:
    """A newer spec_version is refused with SPEC_001."""
    assert_flow_error(flow(VALID).replace("spec_version: 1", "spec_version: 9"), Code.SPEC_001, 1)


def test_schema_error_points_inside_the_step() -> None:
    """An unknown field is SCHEMA_001 at its own line, through the discriminated union."""
    text = flow(
        VALID.replace("        store: code\n", "        store: code\n        colour: red\n")
    )
    assert_flow_error(text, Code.SCHEMA_001, 16)


def test_yes_and_no_stay_strings() -> None:
    """YAML 1.1 would read `on: [no]` as a boolean key and value; codes stay strings here."""
    body = VALID.replace(
        "        store: code\n",
        "        store: code\n        indicator: {category: c, on: [no]}\n",
    )
    text = flow(body) + "scoring:\n  categories: [{id: c, title: C}]\n"
    loaded = load_text(text, "tiny.yaml")
    step = loaded.steps["q1"]
    assert getattr(step, "indicator").on == ("no",)


def test_duplicate_step_id() -> None:
    """Two steps with one id: ID_001 at the second."""
    body = VALID + "      - {id: q1, type: info, text: Again, source: test}\n"
    assert_flow_error(flow(body), Code.ID_001, 16)


def test_unknown_next() -> None:
    """`next` naming no step is REF_001 at that line."""
    text = flow(
        VALID.replace("        store: code\n", "        store: code\n        next: nowhere\n")
    )
    assert_flow_error(text, Code.REF_001, 16)


def test_unknown_category() -> None:
    """An indicator in an undeclared category is REF_002."""
    body = VALID.replace(
        "        store: code\n", "        store: code\n        indicator: {category: ghost}\n"
    )
    assert_flow_error(flow(body), Code.REF_002, 16)


def test_bad_expression() -> None:
    """A `when:` that calls a function is EXPR_001; one naming no step is REF_001."""
    body = VALID + "      - {id: q2, type: info, text: T, source: s, when: \"__import__('os')\"}\n"
    assert_flow_error(flow(body), Code.EXPR_001, 16)
    body = VALID + "      - {id: q2, type: info, text: T, source: s, when: \"ghost == 'yes'\"}\n"
    assert_flow_error(flow(body), Code.REF_001, 16)


def test_unreachable_step() -> None:
    """A step no path reaches is REACH_001."""
    body = VALID.replace("        store: code\n", "        store: code\n        end: done\n")
    body += "      - {id: orphan, type: info, text: T, source: s}\n"
    assert_flow_error(flow(body), Code.REACH_001, 17)


def test_cycle_without_exit() -> None:
    """Two steps that only point at each other are CYCLE_001."""
    body = """\
sections:
  - id: s
    title: S
    steps:
      - {id: a, type: info, text: A, source: s, next: b}
      - {id: b, type: info, text: B, source: s, next: a}
"""
    assert_flow_error(flow(body), Code.CYCLE_001, 11)


def test_cycle_with_exit_is_fine() -> None:
    """A loop back to an explanation is allowed when an option leaves it."""
    body = """\
sections:
  - id: s
    title: S
    steps:
      - {id: a, type: info, text: A, source: s}
      - id: check
        type: single_choice
        text: Understood?
        source: s
        options:
          - {code: again, text: Again, goto: a}
          - {code: ok, text: OK}
"""
    assert load_text(flow(body), "tiny.yaml").order == ("a", "check")


def test_stored_free_text_needs_retention() -> None:
    """Free text with store: encrypted and no retention is POLICY_001 (and POLICY_003)."""
    header = HEADER.replace("retention: 30d\n", "")
    body = """\
sections:
  - id: s
    title: S
    steps:
      - {id: t, type: text, text: Say, source: s, store: encrypted}
"""
    found = problems(flow(body, header=header))
    assert (Code.POLICY_001, 10) in found
    assert any(code is Code.POLICY_003 for code, _ in found)


def test_store_code_on_text_is_refused() -> None:
    """store: code has no meaning for a text step: POLICY_002."""
    body = """\
sections:
  - id: s
    title: S
    steps:
      - {id: t, type: text, text: Say, source: s, store: code}
"""
    assert_flow_error(flow(body), Code.POLICY_002, 11)


def test_retention_over_the_cap() -> None:
    """A retention beyond the deployment's cap is POLICY_004."""
    with pytest.raises(FlowDefinitionError) as info:
        load_text(flow(VALID), "tiny.yaml", max_retention_seconds=3600)
    assert [p.code for p in info.value.problems] == [Code.POLICY_004]
    assert info.value.problems[0].line == 6


def test_text_too_long_for_telegram() -> None:
    """A step text that cannot fit one Telegram message is LIMIT_001."""
    body = VALID.replace("Question one?", "x" * 4000)
    assert_flow_error(flow(body), Code.LIMIT_001, 13)


def test_too_many_options() -> None:
    """More options than fit a phone screen: LIMIT_003."""
    options = "".join(f"          - {{code: o{i}, text: O{i}}}\n" for i in range(13))
    body = f"""\
sections:
  - id: s
    title: S
    steps:
      - id: c
        type: single_choice
        text: Pick
        source: s
        options:
{options}"""
    assert_flow_error(flow(body), Code.LIMIT_003, 15)


def test_quiz_correct_must_be_an_option() -> None:
    """A quiz whose correct code is not an option is QUIZ_001."""
    body = """\
sections:
  - id: s
    title: S
    steps:
      - id: q
        type: quiz
        topic: t
        text: Q?
        source: s
        options: [{code: a, text: A}, {code: b, text: B}]
        correct: c
        explanation: Because.
"""
    assert_flow_error(flow(body), Code.QUIZ_001, 17)


def test_missing_source() -> None:
    """Every step cites its source: SOURCE_001 otherwise."""
    assert_flow_error(flow(VALID.replace("        source: test\n", "")), Code.SOURCE_001, 11)


def test_no_default_outcome() -> None:
    """If the first natural outcome has a condition, some ends match nothing: OUTCOME_001."""
    outcomes = "outcomes:\n  - {id: hi, title: Hi, text: T, min_score: 3}\n"
    assert any(c is Code.OUTCOME_001 for c, _ in problems(flow(VALID, outcomes=outcomes)))


def test_all_problems_reported_at_once() -> None:
    """Several problems come back together, so an author fixes them in one pass."""
    body = VALID.replace("        source: test\n", "        next: ghost\n")
    codes = {c for c, _ in problems(flow(body))}
    assert {Code.SOURCE_001, Code.REF_001} <= codes


def test_shipped_flows_all_load(shipped: dict[str, object]) -> None:
    """Every shipped flow passes the checks."""
    assert {"demo_screening", "demo_quiz"} <= set(shipped)
