"""Read CloudFormation templates: JSON, or YAML with the short tags (!Ref, !Sub, !GetAtt, ...).

syncd sends the template's text to CloudFormation unchanged; it parses it only to check that it
is a template and to learn which parameters are NoEcho (their values are never logged or
journaled). Short tags become their long form (`!Ref X` -> {"Ref": "X"}) so that the parsed
value means what CloudFormation would read.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from typing import Any

import yaml

from syncd.core.text import bounded, quoted


class TemplateSyntaxError(ValueError):
    """The text is neither JSON nor YAML that CloudFormation would accept."""


class ParseBudgetExceeded(Exception):
    """Parsing this text would take the commit's files past their `ParseBudget`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"more than {limit:,} YAML events and JSON values")


class ParseBudget:
    """How much parsing one commit's files may still cost: YAML parser events (a scalar, the
    start or end of a mapping or list) and JSON values, summed over every file parsed. Loading
    costs in proportion to them, about 4 to 10 µs and a few hundred bytes each, whatever the
    bytes: a megabyte of `[1,1,1,...]` is half a million of them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def take(self, count: int) -> None:
        self.left -= count
        if self.left < 0:
            raise ParseBudgetExceeded(self.limit)


# libyaml's parser when PyYAML was built with it: about 9x faster on the files of a large repo
# (a no-op pass over 1,000 stacks parses 2,000 files); the same safe constructors either way.
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# YAML 1.1's numbers without its base-60 forms (`1:30` is 90): PyYAML builds such a number
# with arithmetic that grows with the square of its length (a 1 MiB scalar took 53 s), and
# CloudFormation does not read them as numbers either. They stay strings.
_INT = re.compile(
    r"""^(?:[-+]?0b[0-1_]+
    |[-+]?0[0-7_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+)$""",
    re.X,
)
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_NUMBERS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


class SafeLoader(_BaseLoader):  # type: ignore[valid-type, misc]
    """PyYAML's safe loader (libyaml's when there is one), base-60 numbers read as strings."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in _NUMBERS]
        for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
    }


SafeLoader.add_implicit_resolver(_NUMBERS[0], _INT, list("-+0123456789"))
SafeLoader.add_implicit_resolver(_NUMBERS[1], _FLOAT, list("-+0123456789."))

# The largest int read: one whose decimal text Python still prints (its default cap is 4,300
# digits). int() refuses longer decimal text, but hex, octal and binary are not capped, and
# such a value would raise ValueError wherever it is later shown (a parameter, a tag, NoEcho).
_MAX_INT_BITS = 14_000

_Construct = Callable[[Any, yaml.Node], Any]


def _readable(tag: str, construct: _Construct) -> _Construct:
    """PyYAML's constructor for `tag`, made to fail as a YAML error does, with a line and a
    column. An explicit tag (`!!bool x`, `!!timestamp x`, `!!int ""`) hands its constructor
    text the resolvers never would, and PyYAML then fails with KeyError, AttributeError or
    IndexError, which no caller expects; and `!!int 1:2:...` would reach the base-60
    arithmetic that the resolvers above keep out (a 1 MiB scalar took 53 s)."""
    shown = "!!" + tag.rsplit(":", 1)[-1]

    def refuse(node: yaml.Node, detail: str) -> yaml.constructor.ConstructorError:
        what = f"has a value that cannot be read as {shown}: {quoted(node.value)}"
        return yaml.constructor.ConstructorError(
            None, None, what + (f" ({bounded(detail, 200)})" if detail else ""), node.start_mark
        )

    def checked(loader: Any, node: yaml.Node) -> Any:
        if tag == _NUMBERS[0] and isinstance(node, yaml.ScalarNode) and ":" in node.value:
            raise refuse(node, "base-60 numbers are not read")
        try:
            value = construct(loader, node)
        except (ValueError, LookupError, AttributeError, OverflowError) as exc:
            raise refuse(node, str(exc) if isinstance(exc, ValueError) else "") from None
        if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
            raise refuse(node, "too many digits")
        return value

    return checked


for _tag in (*_NUMBERS, "tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp"):
    SafeLoader.add_constructor(_tag, _readable(_tag, SafeLoader.yaml_constructors[_tag]))


class _Loader(SafeLoader):
    """SafeLoader plus CloudFormation's short-form intrinsic functions."""


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    # !Ref and !Condition are not Fn:: functions in their long form.
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_Loader.add_multi_constructor("!", _construct_tag)


MAX_DEPTH = 100  # levels of nesting a template or deployment file may have


_BATCH = 1000  # events counted against a ParseBudget at a time


def check_yaml(text: str, *, anchors: bool, budget: ParseBudget | None = None) -> None:
    """Refuse what would make loading YAML cost more than its size before it is loaded: aliases
    (a few hundred bytes of nested aliases expand to gigabytes), anchors where `anchors` is
    False, nesting deeper than MAX_DEPTH, and more events than `budget` has left. Reads parser
    events only: nothing is expanded. Raises TemplateSyntaxError (yaml.YAMLError for text that
    does not parse, ParseBudgetExceeded past the budget)."""
    try:
        _check_events(text, anchors=anchors, budget=budget)
    except yaml.reader.ReaderError as exc:
        raise located(exc, text) from None


def located(exc: yaml.reader.ReaderError, text: str) -> yaml.MarkedYAMLError:
    """A character YAML does not allow (a NUL, a control character: often a binary file), at
    its line and column. PyYAML says only "position N", which counts characters in PyYAML
    and bytes in libyaml; the character it names is the first of its kind in the text, since
    reading stops at the first one not allowed."""
    char = exc.character if isinstance(exc.character, str) else chr(exc.character)
    index = max(text.find(char), 0)
    line = text.count("\n", 0, index)
    column = index - (text.rfind("\n", 0, index) + 1)
    problem = f"the character U+{ord(char):04X} is not allowed in YAML (is this a binary file?)"
    mark = yaml.Mark("<unicode string>", index, line, column, None, 0)
    return yaml.MarkedYAMLError(problem=problem, problem_mark=mark)


def _check_events(text: str, *, anchors: bool, budget: ParseBudget | None) -> None:
    depth = 0
    counted = 0
    for event in yaml.parse(text, Loader=SafeLoader):
        counted += 1
        if budget is not None and counted == _BATCH:
            budget.take(counted)
            counted = 0
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        if isinstance(event, yaml.AliasEvent):
            raise TemplateSyntaxError(
                f"YAML alias *{bounded(str(event.anchor), 60)} at line {line}: aliases are "
                "not allowed (CloudFormation refuses them in templates too)"
            )
        anchor = getattr(event, "anchor", None)
        if anchor is not None and not anchors:
            raise TemplateSyntaxError(
                f"YAML anchor &{bounded(str(anchor), 60)} at line {line}: anchors are not "
                "allowed in deployment files"
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise TemplateSyntaxError(
                    f"nested more than {MAX_DEPTH} levels deep at line {line}"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    if budget is not None:
        budget.take(counted)


def yaml_error(exc: yaml.YAMLError) -> str:
    """PyYAML's message for text that does not parse, as one bounded line that starts with
    where (`line 2, column 1: while parsing a flow node, did not find expected node content`);
    PyYAML's own text spans lines, names its input "<unicode string>", and can quote what it
    found (a tag, a key) at any length."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or not problem:
        return bounded(" ".join(str(exc).split()), 400)
    context = getattr(exc, "context", None)
    what = f"{context}, {problem}" if context else problem
    return bounded(f"line {mark.line + 1}, column {mark.column + 1}: {' '.join(what.split())}", 400)


def _depth(data: Any) -> tuple[int, int]:
    """How deeply lists and mappings nest in `data`, and how many values it holds (iterative:
    no recursion to overflow)."""
    deepest = 0
    values = 0
    todo: list[tuple[Any, int]] = [(data, 1)]
    while todo:
        node, level = todo.pop()
        values += 1
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                return level, values
            todo.extend(
                (child, level + 1) for child in (node.values() if isinstance(node, dict) else node)
            )
    return deepest, values


def _unreadable(text: str, exc: ValueError) -> str:
    """A value that does not construct. YAML's have become YAML errors with their place (see
    `_readable`); what is left is JSON's number of more digits than Python reads, which
    json.loads reports without a place: find it."""
    limit = sys.get_int_max_str_digits()
    found = re.search(rf"\d{{{limit + 1},}}", text) if limit else None
    if found is None:
        return f"has a value that cannot be read: {bounded(str(exc), 200)}"
    line = text.count("\n", 0, found.start()) + 1
    column = found.start() - (text.rfind("\n", 0, found.start()) + 1) + 1
    digits = found.end() - found.start()
    return (
        f"not valid JSON: the number at line {line} column {column} has a value that cannot be "
        f"read ({digits:,} digits; at most {limit:,} are read)"
    )


# How a Git LFS pointer file starts (https://github.com/git-lfs/git-lfs/blob/main/docs/spec.md):
# what a repo holds in place of a file it keeps in LFS.
_LFS_POINTER = "version https://git-lfs.github.com/spec/"


def parse_template(text: str, budget: ParseBudget | None = None) -> dict[str, Any]:
    """Parse a template body; raise TemplateSyntaxError with CloudFormation-like wording, and
    ParseBudgetExceeded when it would take more than `budget` has left."""
    stripped = text.lstrip()
    if text.startswith(_LFS_POINTER):  # would read as one string: "is not a mapping ..."
        raise TemplateSyntaxError(
            "is a Git LFS pointer, not the template itself: syncd reads the commit as Git "
            "stores it and does not fetch LFS objects"
        )
    try:
        if stripped.startswith("{"):
            data = json.loads(text)
        else:
            check_yaml(text, anchors=True, budget=budget)  # CloudFormation allows anchors
            data = yaml.load(text, Loader=_Loader)
    except json.JSONDecodeError as exc:
        raise TemplateSyntaxError(f"not valid JSON: {bounded(str(exc), 400)}") from exc
    except yaml.YAMLError as exc:
        raise TemplateSyntaxError(f"not valid YAML: {yaml_error(exc)}") from exc
    except RecursionError:
        raise TemplateSyntaxError(f"nested more than {MAX_DEPTH} levels deep") from None
    except TemplateSyntaxError:  # check_yaml's own, as it said it
        raise
    except ValueError as exc:  # a value that does not construct: 2001-13-45, !!int x, 5000 digits
        raise TemplateSyntaxError(_unreadable(text, exc)) from None
    depth, values = _depth(data)
    if stripped.startswith("{") and budget is not None:
        budget.take(values)  # JSON has no parser events to count: what was read counts
    if depth > MAX_DEPTH:
        raise TemplateSyntaxError(f"nested more than {MAX_DEPTH} levels deep")
    if not isinstance(data, dict):
        raise TemplateSyntaxError("is not a mapping with a Resources section")
    resources = data.get("Resources")
    if not isinstance(resources, dict) or not resources:
        raise TemplateSyntaxError("has no Resources, or they are empty")
    return data


def no_echo_parameters(template: dict[str, Any]) -> frozenset[str]:
    """Names of the template's parameters declared NoEcho: true."""
    params = template.get("Parameters")
    if not isinstance(params, dict):
        return frozenset()
    return frozenset(
        name
        for name, spec in params.items()
        if isinstance(spec, dict) and str(spec.get("NoEcho", "")).lower() == "true"
    )


def declared_parameters(template: dict[str, Any]) -> frozenset[str]:
    params = template.get("Parameters")
    return frozenset(params) if isinstance(params, dict) else frozenset()
