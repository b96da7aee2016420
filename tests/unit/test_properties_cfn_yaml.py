"""Properties of syncd.core.cfn_yaml over inputs nobody planned for: whatever the text, reading
a template returns a template or says, on one printable line, what is wrong and where.

`parse_template` may only return a mapping with Resources, or raise TemplateSyntaxError (or
ParseBudgetExceeded past its budget); `check_yaml` may only return, or raise one of those or a
yaml.YAMLError that `yaml_error` can place at a line and column.
"""

from __future__ import annotations

import json
import re
import textwrap
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from syncd.core import capabilities
from syncd.core.cfn_yaml import (
    ParseBudget,
    ParseBudgetExceeded,
    TemplateSyntaxError,
    check_yaml,
    declared_parameters,
    no_echo_parameters,
    parse_template,
    yaml_error,
)
from syncd.core.text import printable
from tests.support.properties import (
    CFN_TAGS,
    bounded_settings,
    dump_yaml,
    hostile_text,
    json_values,
    scalar_values,
)

# Messages that are not syntax errors, so carry no column: what the template lacks, or a
# refusal check_yaml words itself (with the line it stopped at).
_SEMANTIC = [
    r"is not a mapping with a Resources section",
    r"is a Git LFS pointer, not the template itself: .*",
    r"has no Resources, or they are empty",
    r"nested more than 100 levels deep( at line \d+)?",
    r"YAML alias \*.* at line \d+: aliases are not allowed \(CloudFormation refuses them in "
    r"templates too\)",
    r"YAML anchor &.* at line \d+: anchors are not allowed in deployment files",
]
_LOCATED_YAML = re.compile(r"not valid YAML: line \d+, column \d+: \S")
_LOCATED_JSON = re.compile(r"not valid JSON: .*line \d+ column \d+")

# Each was a crash (KeyError, AttributeError, IndexError) or an error without a place before
# cfn_yaml's constructors and check_yaml were fixed; kept as fixed examples.
_FOUND = [
    "Resources: {A: !!bool foo}",
    "Resources: {A: !!timestamp foo}",
    "Resources: {A: !!int ''}",
    "Resources: {A: !!float ''}",
    "Resources: {A: !!int '-'}",
    "Resources: {A: 2001-13-45}",
    "Resources: {A: 1}\nB: a\x00b",
    "Resources: {A: 1}\nParameters: {P: {NoEcho: 0x" + "f" * 5000 + "}}",
    "Resources: {A: !!int " + "1:" * 2000 + "1}",
    '{"Resources": {"A": {"Type": "T", "Properties": {"V": ' + "1" * 5000 + "}}}}",
]


def assert_located(message: str) -> None:
    """One short printable line; a syntax error says its line and column."""
    assert message, "an empty message"
    assert printable(message) == message, message[:300]
    assert len(message) <= 600, message[:700]
    if message.startswith("not valid YAML:"):
        assert _LOCATED_YAML.match(message), message
    elif message.startswith("not valid JSON:"):
        assert _LOCATED_JSON.match(message), message
    else:
        assert any(re.fullmatch(p, message) for p in _SEMANTIC), message


def read_template(text: str, budget: ParseBudget | None = None) -> dict[str, Any] | None:
    """parse_template's outcome, checked: the template, or None after a located error."""
    try:
        template = parse_template(text, budget)
    except TemplateSyntaxError as exc:
        assert_located(str(exc))
        return None
    assert isinstance(template, dict)
    assert isinstance(template["Resources"], dict) and template["Resources"]
    return template


def _given_examples(texts: list[str], *rest: object) -> Any:
    def decorate(test: Any) -> Any:
        for text in texts:
            test = example(text, *rest)(test)
        return test

    return decorate


@bounded_settings(200)
@given(hostile_text())
@_given_examples(_FOUND)
def test_any_text_is_a_template_or_a_located_syntax_error(text: str) -> None:
    template = read_template(text)
    if template is not None:  # what the loader does next with any template must hold too
        assert isinstance(declared_parameters(template), frozenset)
        assert isinstance(no_echo_parameters(template), frozenset)
        capabilities.needed(template)


@bounded_settings(100)
@given(hostile_text(), st.integers(0, 60))
def test_past_its_budget_a_template_is_refused_by_the_budget_alone(text: str, left: int) -> None:
    budget = ParseBudget(left)
    try:
        read_template(text, budget)
    except ParseBudgetExceeded as exc:
        assert exc.limit == left
        assert budget.left < 0


@bounded_settings(200)
@given(hostile_text(), st.booleans())
@_given_examples(_FOUND, True)
def test_check_yaml_returns_or_places_the_problem(text: str, anchors: bool) -> None:
    try:
        check_yaml(text, anchors=anchors, budget=ParseBudget(10_000))
    except TemplateSyntaxError as exc:
        assert_located(str(exc))
    except yaml.YAMLError as exc:
        assert_located(f"not valid YAML: {yaml_error(exc)}")


# --- what parses, parses as written -----------------------------------------------------------


def templates() -> st.SearchStrategy[dict[str, Any]]:
    resource = st.fixed_dictionaries(
        {"Type": st.sampled_from(["AWS::SNS::Topic", "AWS::SQS::Queue"])},
        optional={
            "Properties": st.dictionaries(
                st.text(min_size=1, max_size=8), json_values(max_leaves=8), max_size=3
            )
        },
    )
    return st.fixed_dictionaries(
        {
            "Resources": st.dictionaries(
                st.text(min_size=1, max_size=8), resource, min_size=1, max_size=3
            )
        },
        optional={
            "Parameters": st.dictionaries(
                st.from_regex(r"[A-Za-z0-9]{1,20}", fullmatch=True),
                st.fixed_dictionaries(
                    {"Type": st.just("String")},
                    optional={"NoEcho": st.booleans(), "Default": st.text(max_size=5)},
                ),
                max_size=4,
            ),
            "Outputs": st.dictionaries(
                st.text(min_size=1, max_size=8), json_values(max_leaves=4), max_size=3
            ),
        },
    )


@bounded_settings(200)
@given(templates(), st.booleans())
def test_a_template_written_as_yaml_or_json_reads_back_unchanged(
    template: dict[str, Any], as_json: bool
) -> None:
    # (allow_unicode=False: PyYAML writes U+0085 raw inside quotes, where its reader takes it
    # for a line break)
    text = json.dumps(template) if as_json else dump_yaml(template)
    assert parse_template(text) == template
    params = template.get("Parameters", {})
    assert declared_parameters(template) == frozenset(params)
    assert no_echo_parameters(template) == {k for k, v in params.items() if v.get("NoEcho")}


@bounded_settings(200)
@given(st.sampled_from(CFN_TAGS), scalar_values().filter(lambda v: isinstance(v, str)))
def test_a_short_tag_reads_as_its_long_form(tag: str, value: str) -> None:
    written = dump_yaml({"V": value}, width=10**9).replace("V: ", f"V: {tag} ", 1)
    text = "Resources:\n  A:\n    Type: T\n    Properties:\n" + textwrap.indent(written, " " * 6)
    suffix = tag[1:]
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    expected: Any = value.split(".", 1) if suffix == "GetAtt" else value
    assert parse_template(text)["Resources"]["A"]["Properties"] == {"V": {name: expected}}


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("Resources: {A: !!bool foo}", "line 1, column 16: "),
        ("Resources:\n  A: !!timestamp 2001-02-30", "line 2, column 6: "),
        ("Resources: {A: 1}\nB: a\x00b", "line 2, column 5: "),
        ("Resources: {A: 1}\n\u00e9\u00e9: \x07", "line 2, column 5: "),
    ],
)
def test_a_value_or_character_yaml_cannot_read_is_placed_where_it_is(text: str, where: str) -> None:
    with pytest.raises(TemplateSyntaxError) as caught:
        parse_template(text)
    assert str(caught.value).startswith("not valid YAML: " + where), str(caught.value)
