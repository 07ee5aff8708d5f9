"""The small, safe expression language of ``when:`` conditions and outcome rules.

Examples::

    may_be_child in ['yes', 'not_sure']
    age < 18 or may_be_child == 'yes'
    score >= 4 and category.violence > 0
    'passport' in documents_held and not quiz_ratio < 0.5

Python's parser reads the text (it is a well-tested tokenizer for exactly this grammar), but
nothing is ever evaluated by Python: the tree is checked against a short whitelist and
interpreted here. Names are answers of earlier steps (a missing answer is ``None``; any
comparison with ``None`` is false) or the computed names ``score``, ``quiz_correct``,
``quiz_total``, ``quiz_ratio`` and ``category.<id>``.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flows.errors import ExpressionError

Value = Any
Env = Mapping[str, Value]
_Eval = Callable[[Env], Value]

#: Names computed by the engine rather than answered by a step.
COMPUTED_NAMES = frozenset({"score", "quiz_correct", "quiz_total", "quiz_ratio"})
#: Longest expression accepted; conditions are meant to be read by people.
MAX_EXPRESSION_CHARS = 500

_COMPARE: dict[type[ast.cmpop], Callable[[Value, Value], bool]] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


@dataclass(frozen=True, slots=True)
class Expression:
    """A checked expression, ready to evaluate against answers.

    Attributes:
        source: The text as written.
        names: Step ids it reads (computed names and categories excluded).
        categories: Category ids it reads through ``category.<id>``.
    """

    source: str
    names: frozenset[str]
    categories: frozenset[str]
    _fn: _Eval

    def evaluate(self, env: Env) -> bool:
        """Return the truth of the expression for these answers; type errors count as false."""
        try:
            return bool(self._fn(env))
        except TypeError:
            # e.g. 'yes' < 3: an author's mismatch must not crash a conversation.
            return False


def compile_expression(source: str) -> Expression:
    """Parse and check ``source``.

    Args:
        source: The expression text.

    Returns:
        The compiled expression.

    Raises:
        ExpressionError: The text does not parse or uses something outside the language.
    """
    if len(source) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"does not parse ({exc.msg})") from None
    names: set[str] = set()
    categories: set[str] = set()
    fn = _build(tree.body, names, categories)
    return Expression(source, frozenset(names), frozenset(categories), fn)


def _build(node: ast.expr, names: set[str], categories: set[str]) -> _Eval:
    if isinstance(node, ast.BoolOp):
        parts = [_build(v, names, categories) for v in node.values]
        if isinstance(node.op, ast.And):
            return lambda env: all(_truth(p(env)) for p in parts)
        return lambda env: any(_truth(p(env)) for p in parts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = _build(node.operand, names, categories)
        return lambda env: not _truth(inner(env))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _build(node.operand, names, categories)
        return lambda env: -inner(env)
    if isinstance(node, ast.Compare):
        return _build_compare(node, names, categories)
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int | float | bool):
        value = node.value
        return lambda env: value
    if isinstance(node, ast.Constant) and node.value is None:
        return lambda env: None
    if isinstance(node, ast.List | ast.Tuple):
        items = [_build(e, names, categories) for e in node.elts]
        return lambda env: [i(env) for i in items]
    if isinstance(node, ast.Name):
        name = node.id
        if name not in COMPUTED_NAMES:
            names.add(name)
        return lambda env: env.get(name)
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "category"
    ):
        cat = node.attr
        categories.add(cat)
        return lambda env: env.get(f"category.{cat}", 0)
    raise ExpressionError(f"'{ast.unparse(node)}' is not allowed in a condition")


def _build_compare(node: ast.Compare, names: set[str], categories: set[str]) -> _Eval:
    left = _build(node.left, names, categories)
    ops: list[Callable[[Value, Value], bool]] = []
    for op in node.ops:
        fn = _COMPARE.get(type(op))
        if fn is None:
            raise ExpressionError(f"the operator in '{ast.unparse(node)}' is not allowed")
        ops.append(fn)
    rights = [_build(c, names, categories) for c in node.comparators]

    def compare(env: Env) -> bool:
        a = left(env)
        for op, right in zip(ops, rights, strict=True):
            b = right(env)
            # A missing answer compares false with everything, so an unanswered step never
            # satisfies a condition by accident (e.g. `None != 'yes'` would be true).
            if a is None or b is None:
                return False
            if not op(a, b):
                return False
            a = b
        return True

    return compare


def _truth(value: Value) -> bool:
    return bool(value)
