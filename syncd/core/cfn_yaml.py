"""Read CloudFormation templates: JSON, or YAML with the short tags (!Ref, !Sub, !GetAtt, ...).

syncd sends the template's text to CloudFormation unchanged; it parses it only to check that it
is a template and to learn which parameters are NoEcho (their values are never logged or
journaled). Short tags become their long form (`!Ref X` -> {"Ref": "X"}) so that the parsed
value means what CloudFormation would read.
"""

from __future__ import annotations

import json
from typing import Any

import yaml


class TemplateSyntaxError(ValueError):
    """The text is neither JSON nor YAML that CloudFormation would accept."""


# libyaml's parser when PyYAML was built with it: about 9x faster on the files of a large repo
# (a no-op pass over 1,000 stacks parses 2,000 files); the same safe constructors either way.
SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(SafeLoader):  # type: ignore[valid-type, misc]
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


def check_yaml(text: str, *, anchors: bool) -> None:
    """Refuse what would make loading YAML cost more than its size before it is loaded: aliases
    (a few hundred bytes of nested aliases expand to gigabytes), anchors where `anchors` is
    False, and nesting deeper than MAX_DEPTH. Reads parser events only: nothing is expanded.
    Raises TemplateSyntaxError (yaml.YAMLError for text that does not parse)."""
    depth = 0
    for event in yaml.parse(text, Loader=SafeLoader):
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        if isinstance(event, yaml.AliasEvent):
            raise TemplateSyntaxError(
                f"YAML alias *{event.anchor} at line {line}: aliases are "
                "not allowed (CloudFormation refuses them in templates too)"
            )
        anchor = getattr(event, "anchor", None)
        if anchor is not None and not anchors:
            raise TemplateSyntaxError(
                f"YAML anchor &{anchor} at line {line}: anchors are not allowed in deployment files"
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise TemplateSyntaxError(
                    f"nested more than {MAX_DEPTH} levels deep at line {line}"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _depth(data: Any) -> int:
    """How deeply lists and mappings nest in `data` (iterative: no recursion to overflow)."""
    deepest = 0
    todo: list[tuple[Any, int]] = [(data, 1)]
    while todo:
        node, level = todo.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                return level
            todo.extend(
                (child, level + 1) for child in (node.values() if isinstance(node, dict) else node)
            )
    return deepest


def parse_template(text: str) -> dict[str, Any]:
    """Parse a template body; raise TemplateSyntaxError with CloudFormation-like wording."""
    stripped = text.lstrip()
    try:
        if stripped.startswith("{"):
            data = json.loads(text)
        else:
            check_yaml(text, anchors=True)  # CloudFormation allows anchors, not aliases
            data = yaml.load(text, Loader=_Loader)
    except json.JSONDecodeError as exc:
        raise TemplateSyntaxError(f"not valid JSON: {exc}") from exc
    except yaml.YAMLError as exc:
        raise TemplateSyntaxError(f"not valid YAML: {exc}") from exc
    except RecursionError:
        raise TemplateSyntaxError(f"nested more than {MAX_DEPTH} levels deep") from None
    if _depth(data) > MAX_DEPTH:  # JSON has no parser events to count: walk what was read
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
