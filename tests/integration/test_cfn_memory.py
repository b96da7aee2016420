"""The real `syncd sync` and `syncd status` against the in-memory CloudFormation
(`tests/support/cfn_memory.py`): a first deploy with a chain of stacks passing outputs, a no-op,
one changed parameter, one changed output travelling down the chain."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import yaml

from tests.conftest import write_config
from tests.e2e.conftest import json_out, run_syncd
from tests.support.cfn_memory import MemoryCloudFormation

NETWORK = """\
AWSTemplateFormatVersion: "2010-09-09"
Parameters:
  Env: {Type: String}
Resources:
  Vpc:
    Type: AWS::EC2::VPC
    Properties: {CidrBlock: 10.0.0.0/16}
Outputs:
  VpcId:
    Value: !Sub "vpc-${Env}"
  Where:
    Value: !Sub "${AWS::StackName}/${Env}"
"""
APP = json.dumps(
    {
        "Parameters": {"VpcId": {"Type": "String"}, "Size": {"Type": "String", "Default": "s"}},
        "Resources": {
            "Topic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": {"Ref": "VpcId"}}}
        },
        "Outputs": {"Seen": {"Value": {"Ref": "VpcId"}}, "Size": {"Value": {"Ref": "Size"}}},
    },
    indent=2,
)


def dep(template: str, **params: Any) -> str:
    return yaml.safe_dump({"template-file-path": template, "parameters": params})


@pytest.fixture(scope="module")
def memory() -> Iterator[MemoryCloudFormation]:
    with MemoryCloudFormation() as cfn:
        yield cfn


def test_sync_noop_push_and_status_against_the_memory_world(tmp_path, repo, memory):
    memory.reset()
    cfn = boto3.client("cloudformation", endpoint_url=memory.url, region_name="us-east-1")
    repo.commit(
        {
            "templates/network.yaml": NETWORK,
            "templates/app.json": APP,
            "deployments/network.yaml": dep("templates/network.yaml", Env="dev"),
            "deployments/app.yaml": dep(
                "templates/app.json", VpcId={"stack-output": "network.VpcId"}
            ),
            "deployments/edge.yaml": dep(
                "templates/app.json", VpcId={"stack-output": "app.Seen"}, Size="m"
            ),
            "deployments/solo.yaml": dep("templates/network.yaml", Env="solo"),
        }
    )
    config = str(write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], memory.url))

    def sync() -> dict[str, str]:
        memory.calls.clear()
        memory.log.clear()
        result = run_syncd("sync", "-c", config, "--format", "json")
        assert result.returncode == 0, result.stderr
        return {row["stack"]: row["outcome"] for row in json_out(result)}

    def outputs(stack: str) -> dict[str, str]:
        found = cfn.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])
        return {o["OutputKey"]: o["OutputValue"] for o in found}

    def changed() -> list[str | None]:
        return [stack for action, stack in memory.log if action == "CreateChangeSet"]

    # 1. first deploy: every stack, the chain in order, outputs passed along
    assert set(sync().values()) == {"succeeded"}
    assert sorted(changed()) == ["app", "edge", "network", "solo"]
    assert outputs("network") == {"VpcId": "vpc-dev", "Where": "network/dev"}
    assert outputs("app") == {"Seen": "vpc-dev", "Size": "s"}
    assert outputs("edge") == {"Seen": "vpc-dev", "Size": "m"}

    # 2. no-op: nothing to change, no change set
    sync()
    assert memory.calls["CreateChangeSet"] == 0, memory.log

    # 3. one changed parameter: one change set, for that stack only
    repo.commit({"deployments/solo.yaml": dep("templates/network.yaml", Env="solo2")})
    assert sync()["solo"] == "succeeded"
    assert changed() == ["solo"]
    assert {s for _, s in memory.log if s} == {"solo"}, memory.log
    assert outputs("solo")["VpcId"] == "vpc-solo2"

    # 4. a changed output travels down the chain, and only down it
    repo.commit({"deployments/network.yaml": dep("templates/network.yaml", Env="prod")})
    sync()
    assert changed() == ["network", "app", "edge"]
    assert outputs("edge")["Seen"] == "vpc-prod"

    # 5. status: every stack in sync
    status = json_out(run_syncd("status", "-c", config, "--format", "json"))
    assert {row["stack"]: row["state"] for row in status} == dict.fromkeys(
        ("app", "edge", "network", "solo"), "in_sync"
    )
