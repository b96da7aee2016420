"""The "plain boto3 loop" peer: the simplest correct change-set deployer a team would write.

One process, one stack after the other, no threads, no state of its own:

1. list what is deployed: paginated DescribeStacks (one call per 50 stacks);
2. for each deployment file, read the template, parameters and tags;
   - stack deployed: GetTemplate, and compare template body, parameters and tags with the
     deployed ones; equal -> nothing to do (this is the whole no-op pass: no change sets);
   - otherwise CreateChangeSet (ChangeSetType CREATE or UPDATE, always given: moto makes a
     second stack of the same name without it), poll DescribeChangeSet until it settles,
     ExecuteChangeSet, poll DescribeStacks until the stack settles.

So a first deploy of N stacks costs 1 + 4N calls and a no-op pass 1 + N calls (on moto, where
everything is synchronous and every poll succeeds the first time).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import boto3
from workload import Stack, read_deployment

POLL_S = 0.5  # never reached on moto: its first poll already sees the final state


def make_client(endpoint_url: str, region: str = "us-east-1") -> Any:
    return boto3.session.Session().client(
        "cloudformation",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def deployed_stacks(cfn: Any) -> dict[str, dict[str, Any]]:
    """Every live stack by name (paginated DescribeStacks)."""
    stacks: dict[str, dict[str, Any]] = {}
    for page in cfn.get_paginator("describe_stacks").paginate():
        for stack in page["Stacks"]:
            if stack["StackStatus"] not in ("DELETE_COMPLETE", "REVIEW_IN_PROGRESS"):
                stacks[stack["StackName"]] = stack
    return stacks


def in_sync(
    cfn: Any, live: dict[str, Any], body: str, params: dict[str, str], tags: dict[str, str]
) -> bool:
    """True when the deployed stack already has this template, these parameters and tags."""
    live_params = {p["ParameterKey"]: p.get("ParameterValue") for p in live.get("Parameters", [])}
    live_tags = {t["Key"]: t["Value"] for t in live.get("Tags", [])}
    if live_tags != tags or any(live_params.get(k) != v for k, v in params.items()):
        return False
    deployed_body = cfn.get_template(StackName=live["StackName"])["TemplateBody"]
    return isinstance(deployed_body, str) and deployed_body.strip() == body.strip()


def wait_change_set(cfn: Any, arn: str) -> dict[str, Any]:
    while True:
        cs = cfn.describe_change_set(ChangeSetName=arn)
        if cs["Status"] not in ("CREATE_PENDING", "CREATE_IN_PROGRESS"):
            return dict(cs)
        time.sleep(POLL_S)


def wait_stack(cfn: Any, name: str) -> str:
    while True:
        status = cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"]
        if not status.endswith("_IN_PROGRESS"):
            return str(status)
        time.sleep(POLL_S)


def deploy(
    cfn: Any, name: str, body: str, params: dict[str, str], tags: dict[str, str], exists: bool
) -> None:
    """One change set: create, wait, execute, wait. Raises RuntimeError on failure."""
    resp = cfn.create_change_set(
        StackName=name,
        ChangeSetName=f"bench-{time.time_ns()}",
        ChangeSetType="UPDATE" if exists else "CREATE",
        TemplateBody=body,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
        Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    cs = wait_change_set(cfn, resp["Id"])
    if cs["Status"] != "CREATE_COMPLETE":
        raise RuntimeError(f"{name}: change set {cs['Status']}: {cs.get('StatusReason')}")
    cfn.execute_change_set(ChangeSetName=resp["Id"])
    status = wait_stack(cfn, name)
    if status not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        raise RuntimeError(f"{name}: stack ended in {status}")


def sync_all(repo: Path, stacks: list[Stack], endpoint_url: str) -> int:
    """Bring every stack in line with its deployment file; returns how many were deployed."""
    cfn = make_client(endpoint_url)
    live = deployed_stacks(cfn)
    deployed = 0
    for stack in stacks:
        body, params, tags = read_deployment(repo, stack.deployment_path)
        current = live.get(stack.name)
        if current is not None and in_sync(cfn, current, body, params, tags):
            continue
        deploy(cfn, stack.name, body, params, tags, exists=current is not None)
        deployed += 1
    return deployed
