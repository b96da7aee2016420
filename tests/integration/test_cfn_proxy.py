"""The fault-injection proxy itself, driven by boto3 against moto behind it (real HTTP)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, WaiterError
from botocore.retries.standard import ExponentialBackoff

from syncd.emulator import Emulator, start_emulator
from tests.support.cfn_proxy import FaultProxy

ONE_TOPIC = json.dumps({"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}})
TWO_TOPICS = json.dumps(
    {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}, "Other": {"Type": "AWS::SNS::Topic"}}}
)
NO_WAIT = {"Delay": 0, "MaxAttempts": 20}


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Emulator, FaultProxy]]:
    emulator = start_emulator()
    proxy = FaultProxy(emulator.url).start()
    yield emulator, proxy
    proxy.stop()
    emulator.stop()


@pytest.fixture
def proxy(servers: tuple[Emulator, FaultProxy]) -> FaultProxy:
    emulator, proxy = servers
    emulator.reset()
    proxy.reset()
    return proxy


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's retry jitter (up to 1 s, 2 s, ... for throttling) is not what is under test."""
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)


def cfn(proxy: FaultProxy, attempts: int = 5) -> Any:
    # botocore's `max_attempts` counts retries: max_attempts=1 is two requests in all
    config = Config(retries={"mode": "standard", "max_attempts": attempts})
    return boto3.client(
        "cloudformation", endpoint_url=proxy.url, region_name="us-east-1", config=config
    )


def deploy(cf: Any, stack: str, kind: str = "CREATE", template: str = ONE_TOPIC) -> None:
    change_set = cf.create_change_set(
        StackName=stack,
        ChangeSetName=f"cs-{uuid.uuid4().hex[:8]}",
        ChangeSetType=kind,
        TemplateBody=template,
    )
    cf.execute_change_set(ChangeSetName=change_set["Id"])


def status(cf: Any, stack: str) -> str:
    return str(cf.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"])


def listed(cf: Any) -> dict[str, str]:
    """Every stack's status, from the paginated DescribeStacks listing."""
    pages = cf.get_paginator("describe_stacks").paginate()
    return {s["StackName"]: s["StackStatus"] for page in pages for s in page["Stacks"]}


def test_calls_are_recorded_in_order_and_reset_clears_everything(proxy: FaultProxy) -> None:
    cf = cfn(proxy, attempts=0)
    deploy(cf, "alpha")
    status(cf, "alpha")
    assert proxy.calls == ["CreateChangeSet", "ExecuteChangeSet", "DescribeStacks"]
    assert (proxy.count(), proxy.count("DescribeStacks"), proxy.count("DeleteStack")) == (3, 1, 0)
    proxy.throttle("DescribeStacks", 1)
    proxy.hold("alpha", "UPDATE_IN_PROGRESS")
    proxy.slow("alpha", 1)
    proxy.reset()
    assert (proxy.calls, proxy.count()) == ([], 0)
    deploy(cf, "alpha", "UPDATE", TWO_TOPICS)
    assert status(cf, "alpha") == "UPDATE_COMPLETE"  # no throttle, hold or slow left


def test_throttle_is_retried_by_boto3_and_counted(proxy: FaultProxy, no_backoff: None) -> None:
    cf = cfn(proxy, attempts=5)
    deploy(cf, "alpha")
    proxy.throttle("DescribeStacks", 2)
    response = cf.describe_stacks(StackName="alpha")
    assert response["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    assert response["ResponseMetadata"]["RetryAttempts"] == 2
    assert proxy.count("DescribeStacks") == 3
    assert proxy.count("CreateChangeSet") == 1  # other actions are left alone


def test_throttle_beyond_the_retries_raises_throttling(proxy: FaultProxy, no_backoff: None) -> None:
    cf = cfn(proxy, attempts=1)
    proxy.throttle("ListStacks", 2)
    with pytest.raises(ClientError) as raised:
        cf.list_stacks()
    error = raised.value.response
    assert error["Error"]["Code"] == "Throttling"
    assert error["Error"]["Message"] == "Rate exceeded"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert proxy.count("ListStacks") == 2
    assert cf.list_stacks()["StackSummaries"] == []  # only `times` requests are throttled
    assert proxy.count("ListStacks") == 3


def test_error_injects_server_errors(proxy: FaultProxy, no_backoff: None) -> None:
    proxy.error("DescribeStacks", 500, "InternalFailure", 2)
    with pytest.raises(ClientError) as raised:
        cfn(proxy, attempts=1).describe_stacks()
    assert raised.value.response["Error"]["Code"] == "InternalFailure"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500

    proxy.error("DescribeStacks", 503, "ServiceUnavailable", 2)
    assert cfn(proxy, attempts=5).describe_stacks()["Stacks"] == []
    assert proxy.count("DescribeStacks") == 5


def test_slow_create_shows_in_progress_for_exactly_n_polls(proxy: FaultProxy) -> None:
    cf = cfn(proxy)
    deploy(cf, "bystander")
    proxy.slow("alpha", 3)
    deploy(cf, "bystander", "UPDATE", TWO_TOPICS)  # another stack's execute does not trigger it
    assert status(cf, "bystander") == "UPDATE_COMPLETE"
    deploy(cf, "alpha")
    assert status(cf, "alpha") == "CREATE_IN_PROGRESS"
    assert listed(cf) == {"alpha": "CREATE_IN_PROGRESS", "bystander": "UPDATE_COMPLETE"}
    assert status(cf, "alpha") == "CREATE_IN_PROGRESS"
    assert [status(cf, "alpha") for _ in range(2)] == ["CREATE_COMPLETE"] * 2


def test_slow_update_is_seen_by_a_waiter(proxy: FaultProxy) -> None:
    cf = cfn(proxy)
    deploy(cf, "alpha")
    proxy.slow("alpha", 2)
    # ExecuteChangeSet by name plus StackName, not by ARN
    cf.create_change_set(
        StackName="alpha", ChangeSetName="grow", ChangeSetType="UPDATE", TemplateBody=TWO_TOPICS
    )
    cf.execute_change_set(ChangeSetName="grow", StackName="alpha")
    before = proxy.count("DescribeStacks")
    assert status(cf, "alpha") == "UPDATE_IN_PROGRESS"
    cf.get_waiter("stack_update_complete").wait(StackName="alpha", WaiterConfig=NO_WAIT)
    assert proxy.count("DescribeStacks") - before == 3  # one in progress, then the waiter's two
    assert status(cf, "alpha") == "UPDATE_COMPLETE"


def test_slow_delete_shows_the_stack_until_it_is_gone(proxy: FaultProxy) -> None:
    cf = cfn(proxy)
    deploy(cf, "alpha")
    proxy.slow("alpha", 2)
    cf.delete_stack(StackName="alpha")
    assert status(cf, "alpha") == "DELETE_IN_PROGRESS"
    assert listed(cf) == {"alpha": "DELETE_IN_PROGRESS"}
    with pytest.raises(ClientError, match="does not exist"):
        status(cf, "alpha")
    assert listed(cf) == {}


def test_fail_create_ends_in_rollback_complete_until_deleted(proxy: FaultProxy) -> None:
    cf = cfn(proxy)
    deploy(cf, "bystander")
    proxy.fail("alpha", polls=1, reason="Topic quota exceeded")
    deploy(cf, "alpha")
    moto_events = cf.describe_stack_events(StackName="alpha")["StackEvents"]
    seen = [status(cf, "alpha"), status(cf, "alpha")]
    with pytest.raises(WaiterError, match="ROLLBACK_COMPLETE"):
        cf.get_waiter("stack_create_complete").wait(StackName="alpha", WaiterConfig=NO_WAIT)
    assert seen == ["CREATE_IN_PROGRESS", "ROLLBACK_IN_PROGRESS"]
    assert [status(cf, "alpha") for _ in range(3)] == ["ROLLBACK_COMPLETE"] * 3
    assert listed(cf) == {"alpha": "ROLLBACK_COMPLETE", "bystander": "CREATE_COMPLETE"}

    events = cf.describe_stack_events(StackName="alpha")["StackEvents"]
    added = events[: len(events) - len(moto_events)]
    assert [e["ResourceStatus"] for e in added] == [
        "ROLLBACK_COMPLETE",
        "ROLLBACK_IN_PROGRESS",
        "CREATE_FAILED",
    ]
    assert events[len(added) :] == moto_events
    failed = added[2]
    assert (failed["LogicalResourceId"], failed["ResourceStatusReason"]) == (
        "Failing",
        "Topic quota exceeded",
    )
    assert min(e["Timestamp"] for e in added) > max(e["Timestamp"] for e in moto_events)

    cf.delete_stack(StackName="alpha")
    with pytest.raises(ClientError, match="does not exist"):
        status(cf, "alpha")
    deploy(cf, "alpha")  # the same name again: a clean stack
    assert status(cf, "alpha") == "CREATE_COMPLETE"
    events = cf.describe_stack_events(StackName="alpha")["StackEvents"]
    assert "CREATE_FAILED" not in [e["ResourceStatus"] for e in events]


def test_fail_update_ends_in_update_rollback_complete(proxy: FaultProxy) -> None:
    cf = cfn(proxy)
    deploy(cf, "alpha")
    proxy.fail("alpha", polls=0, reason="Bad property")
    deploy(cf, "alpha", "UPDATE", TWO_TOPICS)
    assert status(cf, "alpha") == "UPDATE_ROLLBACK_IN_PROGRESS"
    assert [status(cf, "alpha") for _ in range(2)] == ["UPDATE_ROLLBACK_COMPLETE"] * 2
    assert listed(cf) == {"alpha": "UPDATE_ROLLBACK_COMPLETE"}
    top = cf.describe_stack_events(StackName="alpha")["StackEvents"][:3]
    assert [e["ResourceStatus"] for e in top] == [
        "UPDATE_ROLLBACK_COMPLETE",
        "UPDATE_ROLLBACK_IN_PROGRESS",
        "UPDATE_FAILED",
    ]
    assert top[2]["ResourceStatusReason"] == "Bad property"

    deploy(cf, "alpha", "UPDATE", ONE_TOPIC)  # a later successful update clears it
    assert status(cf, "alpha") == "UPDATE_COMPLETE"


def test_a_rolled_back_update_shows_the_parameters_from_before(proxy: FaultProxy) -> None:
    cf = cfn(proxy)
    template = json.dumps(
        {
            "Parameters": {"Name": {"Type": "String"}},
            "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {"Name": {"Value": {"Ref": "Name"}}},
        }
    )

    def update(kind: str, name: str) -> None:
        change_set = cf.create_change_set(
            StackName="alpha",
            ChangeSetName=f"cs-{uuid.uuid4().hex[:8]}",
            ChangeSetType=kind,
            TemplateBody=template,
            Parameters=[{"ParameterKey": "Name", "ParameterValue": name}],
            Tags=[{"Key": "v", "Value": name}],
        )
        cf.execute_change_set(ChangeSetName=change_set["Id"], StackName="alpha")

    def shown() -> tuple[str, str, str, str]:
        stack = cf.describe_stacks(StackName="alpha")["Stacks"][0]
        return (
            stack["StackStatus"],
            stack["Parameters"][0]["ParameterValue"],
            stack["Outputs"][0]["OutputValue"],
            stack["Tags"][0]["Value"],
        )

    update("CREATE", "v1")
    proxy.fail("alpha", polls=1)
    update("UPDATE", "v2")
    assert shown() == ("UPDATE_IN_PROGRESS", "v2", "v2", "v2")
    assert shown() == ("UPDATE_ROLLBACK_IN_PROGRESS", "v1", "v1", "v1")
    assert shown() == ("UPDATE_ROLLBACK_COMPLETE", "v1", "v1", "v1")
    update("UPDATE", "v3")
    assert shown() == ("UPDATE_COMPLETE", "v3", "v3", "v3")


def test_hold_shows_a_status_until_release(proxy: FaultProxy) -> None:
    cf = cfn(proxy)
    deploy(cf, "alpha")
    deploy(cf, "bystander")
    proxy.hold("alpha", "UPDATE_IN_PROGRESS")
    assert [status(cf, "alpha") for _ in range(3)] == ["UPDATE_IN_PROGRESS"] * 3
    assert listed(cf) == {"alpha": "UPDATE_IN_PROGRESS", "bystander": "CREATE_COMPLETE"}
    proxy.release("alpha")
    assert status(cf, "alpha") == "CREATE_COMPLETE"
    assert listed(cf) == {"alpha": "CREATE_COMPLETE", "bystander": "CREATE_COMPLETE"}


def test_s3_passes_through(proxy: FaultProxy) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=proxy.url,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    s3.create_bucket(Bucket="templates")
    body = b"Resources: {}\n" * 1000
    s3.put_object(Bucket="templates", Key="dir/stack.yaml", Body=body)
    assert s3.get_object(Bucket="templates", Key="dir/stack.yaml")["Body"].read() == body
    assert s3.head_object(Bucket="templates", Key="dir/stack.yaml")["ContentLength"] == len(body)
    listing = s3.list_objects_v2(Bucket="templates", Prefix="dir/")
    assert [o["Key"] for o in listing["Contents"]] == ["dir/stack.yaml"]
    assert proxy.count() == 0
