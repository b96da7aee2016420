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


def parse_template(text: str) -> dict[str, Any]:
    """Parse a template body; raise TemplateSyntaxError with CloudFormation-like wording."""
    stripped = text.lstrip()
    try:
        data = json.loads(text) if stripped.startswith("{") else yaml.load(text, Loader=_Loader)
    except json.JSONDecodeError as exc:
        raise TemplateSyntaxError(f"not valid JSON: {exc}") from exc
    except yaml.YAMLError as exc:
        raise TemplateSyntaxError(f"not valid YAML: {exc}") from exc
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
