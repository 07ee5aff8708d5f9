"""The `when:` expression language."""

from __future__ import annotations

import pytest

from flows.errors import ExpressionError
from flows.expr import compile_expression


@pytest.mark.parametrize(
    ("source", "env", "expected"),
    [
        ("a == 'yes'", {"a": "yes"}, True),
        ("a == 'yes'", {}, False),
        ("a != 'yes'", {}, False),  # a missing answer satisfies nothing
        ("a in ['yes', 'not_sure']", {"a": "not_sure"}, True),
        ("'x' in m", {"m": ["x", "y"]}, True),
        ("n < 18 or c == 'yes'", {"n": 17}, True),
        ("n < 18 and c == 'yes'", {"n": 17, "c": "no"}, False),
        ("not a == 'yes'", {"a": "no"}, True),
        ("score >= 4 and category.violence > 0", {"score": 5, "category.violence": 2}, True),
        ("category.violence > 0", {}, False),
        ("0 < n <= 10", {"n": 10}, True),
        ("n > 'x'", {"n": 3}, False),  # a type mismatch is false, not a crash
        ("quiz_ratio >= 0.75", {"quiz_ratio": 0.8}, True),
    ],
)
def test_evaluation(source: str, env: dict[str, object], expected: bool) -> None:
    """Conditions evaluate as documented."""
    assert compile_expression(source).evaluate(env) is expected


def test_names_and_categories_are_reported() -> None:
    """The loader learns which steps and categories an expression reads."""
    expr = compile_expression("a == 1 and category.x > 0 and score > 1")
    assert expr.names == {"a"}
    assert expr.categories == {"x"}


@pytest.mark.parametrize(
    "source",
    [
        "__import__('os').system('true')",
        "a.b.c",
        "a + 1",
        "[x for x in a]",
        "lambda: 1",
        "a if b else c",
        "a[0]",
        "f(a)",
        "a ==",
        "x" * 501,
    ],
)
def test_anything_else_is_refused(source: str) -> None:
    """Calls, attributes, arithmetic, comprehensions and over-long text are not allowed."""
    with pytest.raises(ExpressionError):
        compile_expression(source)
