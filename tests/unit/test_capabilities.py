"""The capabilities a template needs, and the message when the config does not allow them."""

from __future__ import annotations

from syncd.core.capabilities import AUTO_EXPAND, IAM, NAMED_IAM, missing, needed

TOPIC = {"Resources": {"T": {"Type": "AWS::SNS::Topic"}}}
ROLE = {
    "Resources": {"R": {"Type": "AWS::IAM::Role", "Properties": {"AssumeRolePolicyDocument": {}}}}
}
NAMED = {"Resources": {"R": {"Type": "AWS::IAM::Role", "Properties": {"RoleName": "admin"}}}}
SAM = {"Transform": "AWS::Serverless-2016-10-31", "Resources": {}}


def test_what_each_template_needs():
    assert needed(TOPIC) == {}
    assert set(needed(ROLE)) == {IAM}
    assert set(needed(NAMED)) == {IAM, NAMED_IAM}
    assert set(needed(SAM)) == {AUTO_EXPAND}
    snippet = {"Resources": {"B": {"Type": "AWS::S3::Bucket", "Properties": {"Fn::Transform": {}}}}}
    assert set(needed(snippet)) == {AUTO_EXPAND}


def test_nothing_is_acknowledged_unless_allowed():
    assert missing(needed(TOPIC), ()) is None
    why = missing(needed(NAMED), ())
    assert why is not None
    assert "CAPABILITY_IAM for R (AWS::IAM::Role)" in why
    assert "CAPABILITY_NAMED_IAM for R (AWS::IAM::Role with RoleName)" in why
    assert "add CAPABILITY_IAM, CAPABILITY_NAMED_IAM to its capabilities" in why
    assert missing(needed(ROLE), (IAM,)) is None
    assert missing(needed(NAMED), (IAM,)) is not None  # a name needs NAMED_IAM
    assert missing(needed(NAMED), (NAMED_IAM,)) is None  # which covers IAM, as on CloudFormation
    assert missing(needed(SAM), (IAM,)) is not None


def test_odd_shapes_are_not_errors():
    assert needed({"Resources": ["not", "a", "mapping"]}) == {}
    assert needed({"Resources": {"X": "text", "Y": {"Type": 7}}}) == {}
