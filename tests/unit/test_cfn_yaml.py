"""syncd.core.cfn_yaml: templates as CloudFormation reads them, and their NoEcho parameters."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

from syncd.core.cfn_yaml import (
    ParseBudget,
    ParseBudgetExceeded,
    TemplateSyntaxError,
    declared_parameters,
    no_echo_parameters,
    parse_template,
)


def template_with(value: str) -> str:
    """A template whose one resource property is `value` (YAML)."""
    return textwrap.dedent(
        f"""\
        Resources:
          Thing:
            Type: AWS::CloudFormation::WaitConditionHandle
            Properties:
              Value: {value}
        """
    )


def property_of(text: str) -> Any:
    return parse_template(text)["Resources"]["Thing"]["Properties"]["Value"]


@pytest.mark.parametrize(
    ("short", "long"),
    [
        ("!Ref Env", {"Ref": "Env"}),
        ("!Ref AWS::Region", {"Ref": "AWS::Region"}),
        ("!Sub '${Env}-queue'", {"Fn::Sub": "${Env}-queue"}),
        (
            "!Sub ['${Name}-x', {Name: !Ref Env}]",
            {"Fn::Sub": ["${Name}-x", {"Name": {"Ref": "Env"}}]},
        ),
        ("!GetAtt Bucket.Arn", {"Fn::GetAtt": ["Bucket", "Arn"]}),
        ("!GetAtt Nested.Outputs.VpcId", {"Fn::GetAtt": ["Nested", "Outputs.VpcId"]}),
        ("!GetAtt [Bucket, Arn]", {"Fn::GetAtt": ["Bucket", "Arn"]}),
        ("!If [IsProd, 1, 2]", {"Fn::If": ["IsProd", 1, 2]}),
        (
            "!If [IsProd, !Ref Big, !Ref AWS::NoValue]",
            {"Fn::If": ["IsProd", {"Ref": "Big"}, {"Ref": "AWS::NoValue"}]},
        ),
        ("!Join ['', [a, !Ref B]]", {"Fn::Join": ["", ["a", {"Ref": "B"}]]}),
        ("!Select [0, !GetAZs '']", {"Fn::Select": [0, {"Fn::GetAZs": ""}]}),
        ("!Split [',', 'a,b']", {"Fn::Split": [",", "a,b"]}),
        ("!FindInMap [Map, Key, Value]", {"Fn::FindInMap": ["Map", "Key", "Value"]}),
        ("!Base64 hello", {"Fn::Base64": "hello"}),
        ("!ImportValue shared-VpcId", {"Fn::ImportValue": "shared-VpcId"}),
        ("!Cidr [10.0.0.0/16, 4, 8]", {"Fn::Cidr": ["10.0.0.0/16", 4, 8]}),
        ("!Equals [!Ref Env, prod]", {"Fn::Equals": [{"Ref": "Env"}, "prod"]}),
        (
            "!And [!Equals [a, b], !Not [!Equals [c, d]]]",
            {"Fn::And": [{"Fn::Equals": ["a", "b"]}, {"Fn::Not": [{"Fn::Equals": ["c", "d"]}]}]},
        ),
        ("!Or [!Equals [a, b], true]", {"Fn::Or": [{"Fn::Equals": ["a", "b"]}, True]}),
        (
            "!Transform {Name: AWS::Include, Parameters: {Location: s3://b/k}}",
            {"Fn::Transform": {"Name": "AWS::Include", "Parameters": {"Location": "s3://b/k"}}},
        ),
    ],
)
def test_short_tags_become_their_long_form(short: str, long: object) -> None:
    assert property_of(template_with(short)) == long


def test_condition_short_tag_is_the_condition_function() -> None:
    # CloudFormation's `!Condition IsProd` (inside Fn::And / Fn::Or / Fn::Not) is
    # {"Condition": "IsProd"}, like !Ref -> {"Ref": ...}; there is no "Fn::Condition".
    assert property_of(template_with("!Not [!Condition IsProd]")) == {
        "Fn::Not": [{"Condition": "IsProd"}]
    }


def test_long_form_yaml_is_unchanged() -> None:
    assert property_of(template_with("{Fn::GetAtt: [Bucket, Arn]}")) == {
        "Fn::GetAtt": ["Bucket", "Arn"]
    }


def test_a_full_yaml_template_parses() -> None:
    text = textwrap.dedent(
        """\
        AWSTemplateFormatVersion: "2010-09-09"
        Description: app
        Parameters:
          Env:
            Type: String
            AllowedValues: [dev, prod]
        Conditions:
          IsProd: !Equals [!Ref Env, prod]
        Resources:
          Queue:
            Type: AWS::SQS::Queue
            Condition: IsProd
            Properties:
              QueueName: !Sub "${AWS::StackName}-${Env}"
        Outputs:
          QueueArn:
            Value: !GetAtt Queue.Arn
            Export:
              Name: !Sub "${AWS::StackName}-QueueArn"
        """
    )
    template = parse_template(text)
    assert template["Conditions"] == {"IsProd": {"Fn::Equals": [{"Ref": "Env"}, "prod"]}}
    assert template["Resources"]["Queue"]["Condition"] == "IsProd"
    assert template["Outputs"]["QueueArn"]["Value"] == {"Fn::GetAtt": ["Queue", "Arn"]}


@pytest.mark.parametrize("prefix", ["", "\n", "   \n\t"])
def test_json_templates_parse(prefix: str) -> None:
    body = {
        "Parameters": {"Env": {"Type": "String"}},
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
    }
    assert parse_template(prefix + json.dumps(body, indent=2)) == body


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        pytest.param('{"Resources": {', "not valid JSON", id="broken-json"),
        pytest.param("Resources: [unclosed\n", "not valid YAML", id="broken-yaml"),
        pytest.param("Resources:\n  A: !Ref\n    - [\n", "not valid YAML", id="broken-tagged-yaml"),
        pytest.param("", "is not a mapping", id="empty"),
        pytest.param("- Resources\n", "is not a mapping", id="list"),
        pytest.param("just text\n", "is not a mapping", id="scalar"),
        pytest.param("[1, 2]", "is not a mapping", id="json-list"),
        pytest.param("Parameters: {}\n", "no Resources", id="no-resources"),
        pytest.param("Resources: {}\n", "no Resources", id="empty-resources"),
        pytest.param("Resources: [A]\n", "no Resources", id="resources-a-list"),
        pytest.param('{"Resources": {}}', "no Resources", id="json-empty-resources"),
    ],
)
def test_what_is_not_a_template_is_refused(text: str, needle: str) -> None:
    with pytest.raises(TemplateSyntaxError, match=needle):
        parse_template(text)


def test_template_syntax_error_is_a_value_error() -> None:
    assert issubclass(TemplateSyntaxError, ValueError)


def test_python_object_tags_are_refused_not_constructed() -> None:
    text = template_with("!!python/object/apply:os.system ['echo pwned']")
    with pytest.raises(TemplateSyntaxError, match="not valid YAML"):
        parse_template(text)


PARAMS = {
    "Parameters": {
        "Plain": {"Type": "String"},
        "BoolSecret": {"Type": "String", "NoEcho": True},
        "StringSecret": {"Type": "String", "NoEcho": "true"},
        "TitleSecret": {"Type": "String", "NoEcho": "True"},
        "ExplicitlyNot": {"Type": "String", "NoEcho": False},
        "StringNot": {"Type": "String", "NoEcho": "false"},
    },
    "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
}


def test_no_echo_parameters() -> None:
    assert no_echo_parameters(PARAMS) == frozenset({"BoolSecret", "StringSecret", "TitleSecret"})


def test_no_echo_from_yaml_text() -> None:
    text = textwrap.dedent(
        """\
        Parameters:
          Password:
            Type: String
            NoEcho: true
          User:
            Type: String
        Resources:
          Topic:
            Type: AWS::SNS::Topic
        """
    )
    assert no_echo_parameters(parse_template(text)) == frozenset({"Password"})


@pytest.mark.parametrize(
    "template",
    [
        {"Resources": {}},
        {"Parameters": None},
        {"Parameters": ["Password"]},
        {"Parameters": {"Password": "NoEcho"}},
    ],
)
def test_no_echo_without_parameter_mappings_is_empty(template: dict[str, Any]) -> None:
    assert no_echo_parameters(template) == frozenset()


def test_declared_parameters() -> None:
    assert declared_parameters(PARAMS) == frozenset(PARAMS["Parameters"])
    assert declared_parameters({"Resources": {}}) == frozenset()
    assert declared_parameters({"Parameters": ["A"]}) == frozenset()


def _laughs(levels: int = 9) -> str:
    lines = ['a0: &a0 "lol"']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\nResources: {T: {Type: AWS::SNS::Topic}}\n"


def test_yaml_aliases_are_refused_before_anything_is_expanded():
    # Refused at the first alias, while walking events: expanded, it would not end.
    with pytest.raises(TemplateSyntaxError, match=r"alias \*a0 at line 2: aliases are not"):
        parse_template(_laughs())  # 9^8 strings if expanded


def test_yaml_anchors_without_aliases_are_accepted_in_templates():
    data = parse_template("Resources:\n  T: &t\n    Type: AWS::SNS::Topic\n")
    assert data["Resources"]["T"] == {"Type": "AWS::SNS::Topic"}


@pytest.mark.parametrize(
    "text",
    [
        "Resources: " + "[" * 100_000,  # YAML, not even closed
        '{"Resources": ' + "[" * 100_000 + "]" * 100_000 + "}",  # JSON past the recursion limit
        '{"Resources": {"T": ' + "[" * 150 + "]" * 150 + "}}",  # JSON that parses, too deep
        "Resources:\n  T: " + "[" * 150 + "]" * 150 + "\n",
    ],
)
def test_nesting_deeper_than_a_hundred_levels_is_a_located_error_not_a_crash(text):
    with pytest.raises(TemplateSyntaxError, match=r"nested more than 100 levels|not valid"):
        parse_template(text)


# --- the parse budget and bounded errors ----------------------------------------------------


def test_check_yaml_counts_events_against_the_budget_and_stops_at_it() -> None:
    text = "Resources: {T: {Type: X}}\nPad: [" + ",".join(["1"] * 50_000) + "]\n"
    budget = ParseBudget(1_000_000)
    parse_template(text, budget)
    used = budget.limit - budget.left
    assert 50_000 < used < 50_100  # one event a scalar, and the mappings' and lists' own
    small = ParseBudget(10_000)
    with pytest.raises(ParseBudgetExceeded) as caught:
        parse_template(text, small)
    assert caught.value.limit == 10_000
    # Stopped while walking events, at the batch that crossed the limit: not after counting
    # all 50,000, and before loading anything.
    assert -1_000 <= small.left < 0


def test_a_json_template_counts_its_values_against_the_budget() -> None:
    text = json.dumps({"Resources": {"T": {"Type": "X"}}, "Pad": [[1, 2]] * 1000})
    budget = ParseBudget(100_000)
    parse_template(text, budget)
    assert 3000 < budget.limit - budget.left < 3100
    with pytest.raises(ParseBudgetExceeded):
        parse_template(text, ParseBudget(1000))


def test_a_budget_is_shared_by_the_files_of_a_commit() -> None:
    text = "Resources: {T: {Type: X}}\nPad: [" + ",".join(["1"] * 4000) + "]\n"
    budget = ParseBudget(10_000)
    parse_template(text, budget)
    parse_template(text, budget)
    with pytest.raises(ParseBudgetExceeded):
        parse_template(text, budget)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"Resources: !{'t' * 500_000}!x y\n", id="tag-handle"),
        pytest.param(f"Resources: *{'a' * 500_000}\n", id="alias-name"),
        pytest.param("Resources:\n  A: 1\n B: [" + "x" * 500_000, id="long-line"),
        pytest.param('{"Resources": ' + "1" * 500_000 + "x}", id="json"),
    ],
)
def test_syntax_errors_quote_at_most_a_few_hundred_characters(text: str) -> None:
    with pytest.raises(TemplateSyntaxError) as caught:
        parse_template(text)
    message = str(caught.value)
    assert len(message) <= 500, message[:600]
    assert "\n" not in message


@pytest.mark.parametrize(
    "value",
    ["1" * 5000, "2001-13-45", "!!int x", "!!float x", "!!timestamp 2001-02-30"],
)
def test_a_value_that_does_not_construct_is_a_syntax_error_not_a_crash(value: str) -> None:
    with pytest.raises(TemplateSyntaxError, match="has a value that cannot be read"):
        parse_template(template_with(value))
    with pytest.raises(TemplateSyntaxError, match="cannot be read"):
        parse_template('{"Resources": {"A": ' + "1" * 5000 + "}}")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &x 1\nResources: {T: *x}\n", "YAML alias *x at line 2: aliases are not allowed"),
        ("Resources:" + " [" * 200, "nested more than 100 levels deep at line 1"),
    ],
)
def test_check_yamls_own_refusals_keep_their_words(text: str, message: str) -> None:
    with pytest.raises(TemplateSyntaxError) as caught:
        parse_template(text)
    assert str(caught.value).startswith(message)


def test_base_60_numbers_stay_strings_and_cost_nothing() -> None:
    # YAML 1.1 reads `1:30` as 90, building it with arithmetic that grows with the square of
    # its length (a 1 MiB scalar took 53 s). CloudFormation has no such numbers: strings.
    huge = ":".join(["1"] * 300_000)  # 600 KB
    template = parse_template(f"Resources:\n  X:\n    Type: {huge}\nOutputs:\n  T: 1:30\n")
    assert template["Resources"]["X"]["Type"] == huge
    assert template["Outputs"]["T"] == "1:30"
    numbers = parse_template("Resources: {X: {Type: T}}\nA: 12\nB: 0x1f\nC: 1.5\nD: 017\n")
    assert [numbers[k] for k in "ABCD"] == [12, 31, 1.5, 15]  # the other numbers are as before
