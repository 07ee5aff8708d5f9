"""Read flow files: YAML with line numbers → pydantic schema → semantic checks → ``LoadedFlow``.

Every problem names the file, the line and a stable code (``flows.errors.Code``). All
problems of a file are gathered before raising, so an author fixes them in one pass.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from flows import limits
from flows.errors import Code, ExpressionError, FlowDefinitionError, Problem
from flows.expr import Expression, compile_expression
from flows.model import (
    SUPPORTED_SPECS,
    ChecklistStep,
    ChoiceStep,
    ConsentStep,
    Flow,
    InfoStep,
    Kind,
    MultiChoiceStep,
    NumberStep,
    Outcome,
    QuizStep,
    RiskStep,
    Section,
    Step,
    Store,
    TextStep,
    YesNoStep,
)

Path_ = tuple[str | int, ...]

#: Where the shipped flow files live.
DEFS_DIR = Path(__file__).resolve().parent / "defs"


@dataclass(frozen=True)
class LoadedFlow:
    """A validated flow with the indexes the engine needs.

    Attributes:
        flow: The flow model.
        file: The file it came from (for messages).
        digest: SHA-256 of the canonical flow, to pin sessions to exact content.
        raw: The canonical JSON-able mapping (stored so pinned sessions survive edits).
        order: Step ids in document order.
        steps: Steps by id.
        section_of: The section of each step.
        conditions: Compiled ``when:`` of steps.
        outcome_rules: Compiled ``when:`` of outcomes.
        lines: Line of each step and outcome id, for tooling (extraction, messages).
    """

    flow: Flow
    file: str
    digest: str
    raw: dict[str, Any]
    order: tuple[str, ...]
    steps: dict[str, Step]
    section_of: dict[str, Section]
    conditions: dict[str, Expression]
    outcome_rules: dict[str, Expression]
    outcomes: dict[str, Outcome]
    lines: dict[str, int] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """The flow id."""
        return self.flow.id

    @property
    def version(self) -> int:
        """The flow version."""
        return self.flow.version

    def next_in_order(self, step_id: str) -> str | None:
        """The step after ``step_id`` in document order, or None at the end."""
        index = self.order.index(step_id)
        return self.order[index + 1] if index + 1 < len(self.order) else None


# --------------------------------------------------------------------------- YAML with lines


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false.

    YAML 1.1 reads yes, no, on and off as booleans, so `on: [yes]` or `code: no` would
    silently become True/False. Answer codes are exactly such words.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _compose(text: str, file: str) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML, returning plain data and the line of every mapping, list and value."""
    loader = _Loader(text)
    lines: dict[Path_, int] = {}
    problems: list[Problem] = []
    try:
        node = loader.get_single_node()
        if node is None:
            return None, lines

        def build(n: yaml.Node, path: Path_) -> Any:
            lines[path] = n.start_mark.line + 1
            if isinstance(n, yaml.MappingNode):
                out: dict[str, Any] = {}
                for key_node, value_node in n.value:
                    key = loader.construct_object(key_node, deep=True)
                    if key in out:
                        problems.append(
                            Problem(
                                Code.YAML_002,
                                Code.YAML_002.value.format(key=key),
                                file,
                                key_node.start_mark.line + 1,
                            )
                        )
                    out[key] = build(value_node, (*path, key))
                    # A key's line is more useful than its value's for multi-line values.
                    lines[(*path, key)] = key_node.start_mark.line + 1
                return out
            if isinstance(n, yaml.SequenceNode):
                return [build(item, (*path, i)) for i, item in enumerate(n.value)]
            return loader.construct_object(n, deep=True)

        data = build(node, ())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        detail = str(getattr(exc, "problem", None) or exc)
        raise FlowDefinitionError(
            [Problem(Code.YAML_001, Code.YAML_001.value.format(detail=detail), file, line)]
        ) from None
    finally:
        loader.dispose()
    if problems:
        raise FlowDefinitionError(problems)
    return data, lines


def _line_for(data: Any, lines: dict[Path_, int], loc: Sequence[str | int]) -> tuple[int, str]:
    """Map a pydantic error location to the innermost line that exists, and a readable path."""
    path: list[str | int] = []
    node = data
    for part in loc:
        # Discriminated unions put the tag ('yes_no') into loc; it is not a key of the data.
        if isinstance(node, dict) and part in node:  # noqa: SIM114 - mypy narrows each branch
            node = node[part]
            path.append(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            path.append(part)
    line = 0
    for depth in range(len(path), -1, -1):
        line = lines.get(tuple(path[:depth]), 0)
        if line:
            break
    return line, _dotted(path)


def _dotted(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# --------------------------------------------------------------------------- loading


def load_flow(path: Path, *, max_retention_seconds: int | None = None) -> LoadedFlow:
    """Load and check one flow file.

    Args:
        path: The YAML file.
        max_retention_seconds: A deployment's cap; a flow declaring more is an error.

    Returns:
        The loaded flow.

    Raises:
        FlowDefinitionError: With every problem found.
    """
    return load_text(
        path.read_text(encoding="utf-8"), str(path), max_retention_seconds=max_retention_seconds
    )


def load_text(
    text: str, file: str = "<flow>", *, max_retention_seconds: int | None = None
) -> LoadedFlow:
    """Load and check a flow from YAML text (see ``load_flow``)."""
    data, lines = _compose(text, file)
    if not isinstance(data, dict):
        raise FlowDefinitionError(
            [Problem(Code.SCHEMA_001, "A flow file must be a mapping of keys.", file, 1)]
        )
    spec = data.get("spec_version")
    if spec not in SUPPORTED_SPECS:
        line = lines.get(("spec_version",), 1)
        msg = Code.SPEC_001.value.format(found=spec, supported=sorted(SUPPORTED_SPECS))
        raise FlowDefinitionError([Problem(Code.SPEC_001, msg, file, line, "spec_version")])
    try:
        flow = Flow.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            line, where = _line_for(data, lines, err["loc"])
            problems.append(Problem(Code.SCHEMA_001, err["msg"], file, line, where))
        raise FlowDefinitionError(problems) from None
    return _check(flow, data, lines, file, max_retention_seconds)


def load_directory(
    directory: Path = DEFS_DIR, *, max_retention_seconds: int | None = None
) -> dict[str, LoadedFlow]:
    """Load every ``*.yaml`` file under a directory and check them together.

    Raises:
        FlowDefinitionError: With every problem of every file.
    """
    return load_files(
        sorted(directory.rglob("*.yaml")), max_retention_seconds=max_retention_seconds
    )


def load_files(
    paths: Iterable[Path], *, max_retention_seconds: int | None = None
) -> dict[str, LoadedFlow]:
    """Load several flow files and run the checks that span files (ids, consent links)."""
    problems: list[Problem] = []
    flows: dict[str, LoadedFlow] = {}
    for path in paths:
        try:
            loaded = load_flow(path, max_retention_seconds=max_retention_seconds)
        except FlowDefinitionError as exc:
            problems.extend(exc.problems)
            continue
        if loaded.id in flows:
            other = flows[loaded.id].file
            msg = Code.ID_002.value.format(id=loaded.id, other=other)
            problems.append(Problem(Code.ID_002, msg, loaded.file, 1, "id"))
            continue
        flows[loaded.id] = loaded
    for loaded in flows.values():
        ref = loaded.flow.requires_consent
        if ref is not None and (ref not in flows or flows[ref].flow.kind is not Kind.CONSENT):
            msg = Code.REF_003.value.format(ref=ref)
            line = loaded.lines.get("@requires_consent", 1)
            problems.append(Problem(Code.REF_003, msg, loaded.file, line, "requires_consent"))
    if problems:
        raise FlowDefinitionError(problems)
    return flows


# --------------------------------------------------------------------------- semantic checks


class _Checker:
    """Collects semantic problems of one flow, each with its line."""

    def __init__(self, flow: Flow, data: dict[str, Any], lines: dict[Path_, int], file: str):
        self.flow = flow
        self.data = data
        self.lines = lines
        self.file = file
        self.problems: list[Problem] = []
        self.step_paths: dict[str, Path_] = {}
        for si, section in enumerate(flow.sections):
            for ti, step in enumerate(section.steps):
                self.step_paths.setdefault(step.id, ("sections", si, "steps", ti))

    def add(self, problem: Code, path: Path_, **fmt: object) -> None:
        line = 0
        for depth in range(len(path), -1, -1):
            line = self.lines.get(path[:depth], 0)
            if line:
                break
        message = problem.value.format(**fmt)
        self.problems.append(Problem(problem, message, self.file, line, _dotted(path)))


def _check(
    flow: Flow,
    data: dict[str, Any],
    lines: dict[Path_, int],
    file: str,
    max_retention_seconds: int | None,
) -> LoadedFlow:
    c = _Checker(flow, data, lines, file)
    steps: dict[str, Step] = {}
    section_of: dict[str, Section] = {}
    order: list[str] = []
    for section in flow.sections:
        for step in section.steps:
            path = c.step_paths[step.id]
            if step.id in steps:
                # step_paths keeps the first; find this duplicate's own path for the line.
                path = _find_step_path(flow, step, skip_first=True)
                c.add(Code.ID_001, (*path, "id"), id=step.id)
                continue
            steps[step.id] = step
            section_of[step.id] = section
            order.append(step.id)
    outcomes: dict[str, Outcome] = {}
    for oi, outcome in enumerate(flow.outcomes):
        if outcome.id in outcomes or outcome.id in steps:
            c.add(Code.ID_001, ("outcomes", oi, "id"), id=outcome.id)
        outcomes[outcome.id] = outcome
    if len(order) > limits.MAX_STEPS:
        c.add(Code.LIMIT_005, ("sections",), count=len(order), limit=limits.MAX_STEPS)
    if not flow.outcomes:
        c.add(Code.OUTCOME_002, ("outcomes",), kind=flow.kind.value)
    categories = {cat.id for cat in flow.scoring.categories}

    def ref(target: str | None, path: Path_, *, outcome_only: bool = False) -> None:
        if target is None:
            return
        known = outcomes if outcome_only else {**steps, **outcomes}
        if target not in known:
            c.add(Code.REF_001, path, ref=target)

    conditions: dict[str, Expression] = {}
    for step_id in order:
        step = steps[step_id]
        path = c.step_paths[step_id]
        if not step.source:
            c.add(Code.SOURCE_001, (*path, "id"), id=step_id)
        ref(step.next, (*path, "next"))
        ref(step.end, (*path, "end"), outcome_only=True)
        if step.when is not None:
            expression = _compile(c, step.when, (*path, "when"), steps, categories)
            if expression is not None:
                conditions[step_id] = expression
        _check_step(c, step, path, ref, categories)
    outcome_rules: dict[str, Expression] = {}
    for oi, outcome in enumerate(flow.outcomes):
        if outcome.when is not None:
            expression = _compile(c, outcome.when, ("outcomes", oi, "when"), steps, categories)
            if expression is not None:
                outcome_rules[outcome.id] = expression
        _check_text(c, outcome.text, ("outcomes", oi, "text"), outcome.id)
    _check_policy(c, flow, order, steps, max_retention_seconds)
    if not c.problems:
        _check_graph(c, flow, order, steps, conditions)
    if c.problems:
        raise FlowDefinitionError(c.problems)
    canonical = flow.model_dump(mode="json", exclude_none=True)
    digest = hashlib.sha256(
        json.dumps(canonical, sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()
    id_lines = {sid: lines.get((*c.step_paths[sid], "id"), 0) for sid in order}
    id_lines.update(
        {o.id: lines.get(("outcomes", i, "id"), 0) for i, o in enumerate(flow.outcomes)}
    )
    # Top-level keys, prefixed with @ so they cannot clash with ids (ids cannot contain @).
    id_lines.update({f"@{key}": lines.get((key,), 0) for key in data})
    return LoadedFlow(
        flow=flow,
        file=file,
        digest=digest,
        raw=canonical,
        order=tuple(order),
        steps=steps,
        section_of=section_of,
        conditions=conditions,
        outcome_rules=outcome_rules,
        outcomes=outcomes,
        lines=id_lines,
    )


def _find_step_path(flow: Flow, target: Step, *, skip_first: bool) -> Path_:
    seen = False
    for si, section in enumerate(flow.sections):
        for ti, step in enumerate(section.steps):
            if step.id == target.id:
                if skip_first and not seen:
                    seen = True
                    continue
                return ("sections", si, "steps", ti)
    return ("sections",)


def _compile(
    c: _Checker, source: str, path: Path_, steps: dict[str, Step], categories: set[str]
) -> Expression | None:
    try:
        expression = compile_expression(source)
    except ExpressionError as exc:
        c.add(Code.EXPR_001, path, detail=str(exc))
        return None
    for name in sorted(expression.names - set(steps)):
        c.add(Code.REF_001, path, ref=name)
    for cat in sorted(expression.categories - categories):
        c.add(Code.REF_002, path, ref=cat)
    return expression


def _check_text(c: _Checker, text: str, path: Path_, owner: str) -> None:
    if len(text) > limits.MAX_STEP_TEXT_CHARS:
        c.add(Code.LIMIT_001, path, id=owner, size=len(text), limit=limits.MAX_STEP_TEXT_CHARS)


def _check_step(c: _Checker, step: Step, path: Path_, ref: Any, categories: set[str]) -> None:
    body = step.text + (getattr(step, "help", None) or "")
    if isinstance(step, QuizStep):
        body += step.explanation
    options = getattr(step, "options", ())
    body += "".join(o.text for o in options)
    _check_text(c, body, (*path, "text"), step.id)
    if len(options) > limits.MAX_OPTIONS:
        c.add(
            Code.LIMIT_003,
            (*path, "options"),
            id=step.id,
            count=len(options),
            limit=limits.MAX_OPTIONS,
        )
    codes: set[str] = set()
    for oi, option in enumerate(options):
        opath = (*path, "options", oi)
        if option.code in codes:
            c.add(Code.ID_001, (*opath, "code"), id=option.code)
        codes.add(option.code)
        if len(option.text) > limits.MAX_BUTTON_LABEL_CHARS:
            c.add(
                Code.LIMIT_002,
                (*opath, "text"),
                label=option.text[:30] + "…",
                size=len(option.text),
                limit=limits.MAX_BUTTON_LABEL_CHARS,
            )
        ref(option.goto, (*opath, "goto"))
        ref(option.end, (*opath, "end"), outcome_only=True)
    if isinstance(step, QuizStep) and step.correct not in codes:
        c.add(Code.QUIZ_001, (*path, "correct"), id=step.id, code=step.correct)
    if isinstance(step, ConsentStep):
        ref(step.on_decline, (*path, "on_decline"), outcome_only=True)
    indicator = getattr(step, "indicator", None)
    if indicator is not None:
        if indicator.category not in categories:
            c.add(Code.REF_002, (*path, "indicator", "category"), ref=indicator.category)
        valid = codes if options else {"yes", "no", "not_sure", "prefer_not"}
        for code in indicator.on:
            if code not in valid:
                c.add(Code.REF_001, (*path, "indicator", "on"), ref=code)


def _check_policy(
    c: _Checker,
    flow: Flow,
    order: list[str],
    steps: dict[str, Step],
    max_retention_seconds: int | None,
) -> None:
    stores_anything = False
    for step_id in order:
        step = steps[step_id]
        path = c.step_paths[step_id]
        if step.store is Store.NONE:
            continue
        stores_anything = True
        if step.store is Store.CODE and isinstance(step, InfoStep | TextStep | NumberStep):
            c.add(Code.POLICY_002, (*path, "store"), id=step_id, kind=step.type)
        free_text = isinstance(step, TextStep | RiskStep) or (
            isinstance(step, ChecklistStep) and step.note
        )
        if step.store is Store.ENCRYPTED and free_text and flow.retention is None:
            c.add(Code.POLICY_001, (*path, "store"), id=step_id)
    if stores_anything and flow.retention is None:
        c.add(Code.POLICY_003, ("id",))
    seconds = flow.retention_seconds
    if seconds is not None:
        cap = min(
            limits.MAX_RETENTION_SECONDS, max_retention_seconds or limits.MAX_RETENTION_SECONDS
        )
        if seconds > cap:
            c.add(Code.POLICY_004, ("retention",), value=flow.retention, limit=f"{cap}s")


def _successors(
    flow_order: list[str], steps: dict[str, Step], step_id: str, conditions: dict[str, Expression]
) -> tuple[set[str], bool]:
    """Steps reachable in one move from ``step_id``, and whether the flow can end there."""
    step = steps[step_id]
    index = flow_order.index(step_id)
    sequential = flow_order[index + 1] if index + 1 < len(flow_order) else None
    default = step.next if step.next is not None else sequential
    out: set[str] = set()
    ends = False
    uses_default = False

    def go(target: str | None) -> None:
        nonlocal ends
        if target is None or target not in steps:
            ends = True  # the natural end, or an outcome
        else:
            out.add(target)

    options = () if isinstance(step, MultiChoiceStep) else getattr(step, "options", ())
    for option in options:
        if option.end is not None:
            ends = True
        elif option.goto is not None:
            go(option.goto)
        else:
            uses_default = True
    if not options or step.skippable:
        uses_default = True
    if isinstance(step, ConsentStep):
        ends = True  # declining ends the flow
    if step.end is not None:
        ends = True
    elif uses_default:
        go(default)
    if step_id in conditions:
        # A false condition skips the step to the next in order, whatever its own next says.
        go(sequential)
    return out, ends


def _check_graph(
    c: _Checker,
    flow: Flow,
    order: list[str],
    steps: dict[str, Step],
    conditions: dict[str, Expression],
) -> None:
    graph: dict[str, set[str]] = {}
    can_end: dict[str, bool] = {}
    for step_id in order:
        graph[step_id], can_end[step_id] = _successors(order, steps, step_id, conditions)
    seen: set[str] = set()
    stack = [order[0]]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        stack.extend(graph[node] - seen)
    for step_id in order:
        if step_id not in seen:
            c.add(Code.REACH_001, (*c.step_paths[step_id], "id"), id=step_id)
    for component in _strongly_connected(order, graph):
        looping = len(component) > 1 or next(iter(component)) in graph[next(iter(component))]
        if not looping:
            continue
        exits = any(can_end[n] or (graph[n] - component) for n in component)
        if not exits:
            first = min(component, key=order.index)
            c.add(Code.CYCLE_001, (*c.step_paths[first], "id"), ids=sorted(component))
    # The natural end is reached when the last step in order can fall through to "after it".
    last = order[-1]
    natural_end = last in seen and steps[last].end is None
    candidates = [o for o in flow.outcomes if not o.only_by_jump]
    if natural_end and flow.outcomes:
        base = candidates[0] if candidates else None
        if base is None or base.when is not None or (base.min_score or 0) > 0:
            c.add(Code.OUTCOME_001, ("outcomes",))


def _strongly_connected(order: list[str], graph: dict[str, set[str]]) -> Iterator[set[str]]:
    """Tarjan's algorithm, iterative so that long flows cannot overflow the stack."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    counter = 0
    for root in order:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                yield component


__all__ = [
    "DEFS_DIR",
    "ChecklistStep",
    "ChoiceStep",
    "ConsentStep",
    "InfoStep",
    "LoadedFlow",
    "MultiChoiceStep",
    "NumberStep",
    "QuizStep",
    "RiskStep",
    "TextStep",
    "YesNoStep",
    "load_directory",
    "load_files",
    "load_flow",
    "load_text",
]
