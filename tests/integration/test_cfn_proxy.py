"""The fault-injection proxy itself, driven by boto3 against moto behind it (real HTTP)."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, WaiterError
from botocore.retries.standard import ExponentialBackoff

from syncd.emulator import Emulator, start_emulator
from tests.support.cfn_proxy import Call, FaultProxy
from tests.support.timing import PATIENCE

ONE_TOPIC = json.dumps({"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}})
TWO_TOPICS = json.dumps(
    {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}, "Other": {"Type": "AWS::SNS::Topic"}}}
)
NAMED = json.dumps(
    {
        "Parameters": {"Name": {"Type": "String"}},
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {"Name": {"Value": {"Ref": "Name"}}},
    }
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


class Clock:
    """A clock for the proxy that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clocked(servers: tuple[Emulator, FaultProxy]) -> Iterator[tuple[FaultProxy, Clock]]:
    """A proxy of its own on a test clock, in front of the same (reset) moto."""
    emulator, _ = servers
    emulator.reset()
    clock = Clock()
    proxy = FaultProxy(emulator.url, clock=clock).start()
    yield proxy, clock
    proxy.stop()


@pytest.fixture
def moto(servers: tuple[Emulator, FaultProxy]) -> Any:
    """moto itself, behind no proxy: what really happened."""
    return boto3.client("cloudformation", endpoint_url=servers[0].url, region_name="us-east-1")


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


# -- pace: CloudFormation's timing ------------------------------------------------------------


def until(check: Callable[[], bool], timeout: float = PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def named(cf: Any, stack: str, kind: str, value: str) -> str:
    """A change set of the NAMED template with Name (parameter, output and tag) = value."""
    return str(
        cf.create_change_set(
            StackName=stack,
            ChangeSetName=f"cs-{uuid.uuid4().hex[:8]}",
            ChangeSetType=kind,
            TemplateBody=NAMED,
            Parameters=[{"ParameterKey": "Name", "ParameterValue": value}],
            Tags=[{"Key": "v", "Value": value}],
        )["Id"]
    )


def shown(cf: Any, stack: str) -> tuple[str, str, str | None, str]:
    """(status, parameter, output or None, tag) as DescribeStacks shows them."""
    found = cf.describe_stacks(StackName=stack)["Stacks"][0]
    outputs = [o["OutputValue"] for o in found.get("Outputs", [])]
    return (
        found["StackStatus"],
        found["Parameters"][0]["ParameterValue"],
        outputs[0] if outputs else None,
        found["Tags"][0]["Value"],
    )


def history(cf: Any, stack: str) -> list[str]:
    """The stack's event statuses, newest first."""
    return [e["ResourceStatus"] for e in cf.describe_stack_events(StackName=stack)["StackEvents"]]


def summaries(cf: Any, *statuses: str) -> dict[str, str]:
    filtered = {"StackStatusFilter": list(statuses)} if statuses else {}
    return {s["StackName"]: s["StackStatus"] for s in cf.list_stacks(**filtered)["StackSummaries"]}


def refusal(call: Callable[[], Any]) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as raised:
        call()
    error = raised.value.response
    return (
        error["Error"]["Code"],
        error["Error"]["Message"],
        error["ResponseMetadata"]["HTTPStatusCode"],
    )


def test_a_paced_change_set_is_pending_then_available(
    clocked: tuple[FaultProxy, Clock],
) -> None:
    proxy, clock = clocked
    cf = cfn(proxy, attempts=0)
    proxy.pace(change_set=10, operation=60)
    arn = cf.create_change_set(
        StackName="alpha", ChangeSetName="first", ChangeSetType="CREATE", TemplateBody=ONE_TOPIC
    )["Id"]

    def seen() -> tuple[str, str, int]:
        by_arn = cf.describe_change_set(ChangeSetName=arn)
        by_name = cf.describe_change_set(ChangeSetName="first", StackName="alpha")
        [summary] = cf.list_change_sets(StackName="alpha")["Summaries"]
        views = [(v["Status"], v["ExecutionStatus"]) for v in (by_arn, by_name, summary)]
        assert views == [views[0]] * 3
        assert "StatusReason" not in by_arn
        return by_arn["Status"], by_arn["ExecutionStatus"], len(by_arn.get("Changes", []))

    assert seen() == ("CREATE_PENDING", "UNAVAILABLE", 0)
    clock.advance(1)
    assert seen() == ("CREATE_PENDING", "UNAVAILABLE", 0)
    clock.advance(2)
    assert seen() == ("CREATE_IN_PROGRESS", "UNAVAILABLE", 0)
    clock.advance(6)
    assert seen() == ("CREATE_IN_PROGRESS", "UNAVAILABLE", 0)
    clock.advance(1)
    assert seen() == ("CREATE_COMPLETE", "AVAILABLE", 1)  # moto's answer, its Add change

    cf.execute_change_set(ChangeSetName=arn)
    clock.advance(60)
    same = cf.create_change_set(  # no changes: moto's FAILED change set, after the wait too
        StackName="alpha", ChangeSetName="same", ChangeSetType="UPDATE", TemplateBody=ONE_TOPIC
    )["Id"]
    assert cf.describe_change_set(ChangeSetName=same)["Status"] == "CREATE_PENDING"
    clock.advance(10)
    failed = cf.describe_change_set(ChangeSetName=same)
    assert (failed["Status"], failed["ExecutionStatus"]) == ("FAILED", "UNAVAILABLE")
    assert "didn't contain changes" in failed["StatusReason"]


def test_executing_a_change_set_too_early_is_refused(
    clocked: tuple[FaultProxy, Clock], moto: Any
) -> None:
    proxy, clock = clocked
    cf = cfn(proxy, attempts=0)
    proxy.pace(change_set=10, operation=60)
    arn = cf.create_change_set(
        StackName="alpha", ChangeSetName="early", ChangeSetType="CREATE", TemplateBody=ONE_TOPIC
    )["Id"]
    assert refusal(lambda: cf.execute_change_set(ChangeSetName=arn)) == (
        "InvalidChangeSetStatus",
        f"ChangeSet [{arn}] cannot be executed in its current status of [CREATE_PENDING]",
        400,
    )
    clock.advance(5)
    code, message, _ = refusal(
        lambda: cf.execute_change_set(ChangeSetName="early", StackName="alpha")
    )
    assert code == "InvalidChangeSetStatus"
    assert message.endswith("cannot be executed in its current status of [CREATE_IN_PROGRESS]")
    assert proxy.refused_early == [("ExecuteChangeSet", "alpha")] * 2
    assert proxy.refused_busy == []
    # neither reached moto
    assert moto.describe_stacks(StackName="alpha")["Stacks"][0]["StackStatus"] == (
        "REVIEW_IN_PROGRESS"
    )
    clock.advance(5)
    cf.execute_change_set(ChangeSetName=arn)
    assert status(cf, "alpha") == "CREATE_IN_PROGRESS"


def test_a_paced_update_shows_the_old_outputs_until_it_completes(
    clocked: tuple[FaultProxy, Clock],
) -> None:
    """On the test's clock: 0.6 s of UPDATE_IN_PROGRESS, whatever the machine's speed."""
    proxy, clock = clocked
    cf = cfn(proxy)
    proxy.pace(change_set=0.1, operation=0.6)

    def apply(kind: str, value: str) -> str:
        arn = named(cf, "alpha", kind, value)
        assert cf.describe_change_set(ChangeSetName=arn)["Status"] == "CREATE_PENDING"
        clock.advance(0.1)
        assert cf.describe_change_set(ChangeSetName=arn)["Status"] == "CREATE_COMPLETE"
        cf.execute_change_set(ChangeSetName=arn, StackName="alpha")
        return arn

    apply("CREATE", "v1")
    clock.advance(0.6)
    assert shown(cf, "alpha")[0] == "CREATE_COMPLETE"
    arn = apply("UPDATE", "v2")
    assert shown(cf, "alpha") == ("UPDATE_IN_PROGRESS", "v1", "v1", "v1")
    assert cf.describe_change_set(ChangeSetName=arn)["ExecutionStatus"] == "EXECUTE_IN_PROGRESS"
    newest = cf.describe_stack_events(StackName="alpha")["StackEvents"][0]
    assert (newest["ResourceStatus"], newest["ResourceStatusReason"]) == (
        "UPDATE_IN_PROGRESS",
        "User Initiated",
    )
    assert "UPDATE_COMPLETE" not in history(cf, "alpha")  # moto's, at once: not shown
    clock.advance(0.5)
    assert shown(cf, "alpha")[0] == "UPDATE_IN_PROGRESS"
    clock.advance(0.1)
    assert shown(cf, "alpha") == ("UPDATE_COMPLETE", "v2", "v2", "v2")
    assert cf.describe_change_set(ChangeSetName=arn)["ExecutionStatus"] == "EXECUTE_COMPLETE"
    assert history(cf, "alpha") == [
        "UPDATE_COMPLETE",
        "UPDATE_IN_PROGRESS",
        "CREATE_COMPLETE",
        "CREATE_IN_PROGRESS",
        "REVIEW_IN_PROGRESS",  # moto's
    ]


def test_a_paced_create_shows_no_outputs_while_in_progress(
    clocked: tuple[FaultProxy, Clock], moto: Any
) -> None:
    proxy, clock = clocked
    cf = cfn(proxy)
    proxy.pace(change_set=0, operation=30)
    cf.execute_change_set(ChangeSetName=named(cf, "alpha", "CREATE", "v1"))
    assert moto.describe_stacks(StackName="alpha")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    assert shown(cf, "alpha") == ("CREATE_IN_PROGRESS", "v1", None, "v1")
    assert listed(cf) == {"alpha": "CREATE_IN_PROGRESS"}
    assert summaries(cf) == {"alpha": "CREATE_IN_PROGRESS"}
    assert summaries(cf, "CREATE_IN_PROGRESS") == {"alpha": "CREATE_IN_PROGRESS"}
    assert summaries(cf, "CREATE_COMPLETE") == {}
    assert history(cf, "alpha") == ["CREATE_IN_PROGRESS", "REVIEW_IN_PROGRESS"]
    clock.advance(29)
    assert shown(cf, "alpha") == ("CREATE_IN_PROGRESS", "v1", None, "v1")
    clock.advance(1)
    assert shown(cf, "alpha") == ("CREATE_COMPLETE", "v1", "v1", "v1")
    assert summaries(cf, "CREATE_COMPLETE") == {"alpha": "CREATE_COMPLETE"}
    assert history(cf, "alpha") == ["CREATE_COMPLETE", "CREATE_IN_PROGRESS", "REVIEW_IN_PROGRESS"]


def test_a_paced_delete_stays_visible_until_it_is_done(clocked: tuple[FaultProxy, Clock]) -> None:
    proxy, clock = clocked
    cf = cfn(proxy)
    proxy.pace(change_set=0, operation=20)
    deploy(cf, "alpha")
    deploy(cf, "bystander")
    clock.advance(20)
    stack_id = cf.describe_stacks(StackName="alpha")["Stacks"][0]["StackId"]
    cf.delete_stack(StackName="alpha")
    assert status(cf, "alpha") == status(cf, stack_id) == "DELETE_IN_PROGRESS"
    assert listed(cf) == {"alpha": "DELETE_IN_PROGRESS", "bystander": "CREATE_COMPLETE"}
    assert summaries(cf) == {"alpha": "DELETE_IN_PROGRESS", "bystander": "CREATE_COMPLETE"}
    assert history(cf, "alpha")[0] == "DELETE_IN_PROGRESS"  # by name, though moto forgot it
    cf.delete_stack(StackName="alpha")  # again: accepted, and nothing more happens
    assert proxy.refused_busy == []
    clock.advance(19)
    assert status(cf, "alpha") == "DELETE_IN_PROGRESS"
    clock.advance(1)
    with pytest.raises(ClientError, match="does not exist"):
        status(cf, "alpha")
    assert status(cf, stack_id) == "DELETE_COMPLETE"
    assert listed(cf) == {"bystander": "CREATE_COMPLETE"}
    assert summaries(cf, "DELETE_COMPLETE") == {"alpha": "DELETE_COMPLETE"}
    assert history(cf, stack_id) == [
        "DELETE_COMPLETE",
        "DELETE_IN_PROGRESS",
        "CREATE_COMPLETE",
        "CREATE_IN_PROGRESS",
        "REVIEW_IN_PROGRESS",
    ]


def test_a_busy_stack_refuses_changes_until_its_operation_ends(
    clocked: tuple[FaultProxy, Clock], moto: Any
) -> None:
    proxy, clock = clocked
    cf = cfn(proxy, attempts=0)
    proxy.pace(change_set=0, operation=30)
    deploy(cf, "alpha")
    deploy(cf, "bystander")
    clock.advance(30)
    stack_id = cf.describe_stacks(StackName="alpha")["Stacks"][0]["StackId"]

    def change_set(name: str) -> Any:
        return cf.create_change_set(
            StackName="alpha", ChangeSetName=name, ChangeSetType="UPDATE", TemplateBody=TWO_TOPICS
        )["Id"]

    grow, spare = change_set("grow"), change_set("spare")
    cf.execute_change_set(ChangeSetName=grow, ClientRequestToken="once")
    cf.execute_change_set(ChangeSetName=grow, ClientRequestToken="once")  # a retry: fine
    busy = (
        "ValidationError",
        f"Stack:{stack_id} is in UPDATE_IN_PROGRESS state and can not be updated.",
        400,
    )
    assert refusal(lambda: change_set("late")) == busy
    assert refusal(lambda: cf.execute_change_set(ChangeSetName=spare)) == busy
    assert refusal(lambda: cf.update_stack(StackName="alpha", TemplateBody=ONE_TOPIC)) == busy
    assert refusal(lambda: cf.delete_stack(StackName=stack_id)) == (
        "ValidationError",
        f"Stack [{stack_id}] cannot be deleted while in status UPDATE_IN_PROGRESS",
        400,
    )
    assert proxy.refused_busy == [
        ("CreateChangeSet", "alpha"),
        ("ExecuteChangeSet", "alpha"),
        ("UpdateStack", "alpha"),
        ("DeleteStack", "alpha"),
    ]
    # none of them reached moto
    sets = {
        c["ChangeSetName"]: c["ExecutionStatus"]
        for c in moto.list_change_sets(StackName="alpha")["Summaries"]
    }
    assert "late" not in sets and sets["spare"] == "AVAILABLE"
    assert moto.describe_stacks(StackName="alpha")["Stacks"][0]["StackStatus"] == "UPDATE_COMPLETE"

    deploy(cf, "bystander", "UPDATE", TWO_TOPICS)  # only the busy stack refuses
    clock.advance(30)
    assert status(cf, "alpha") == "UPDATE_COMPLETE"
    cf.delete_stack(StackName="alpha")
    assert status(cf, "alpha") == "DELETE_IN_PROGRESS"
    assert len(proxy.refused_busy) == 4


def test_delete_during_a_paced_create_cancels_it(clocked: tuple[FaultProxy, Clock]) -> None:
    proxy, clock = clocked
    cf = cfn(proxy)
    proxy.pace(change_set=0, operation=30)
    deploy(cf, "alpha")
    clock.advance(10)
    stack_id = cf.describe_stacks(StackName="alpha")["Stacks"][0]["StackId"]
    cf.delete_stack(StackName="alpha")  # CloudFormation takes it: it cancels the create
    assert (status(cf, "alpha"), proxy.refused_busy) == ("DELETE_IN_PROGRESS", [])
    clock.advance(30)
    assert listed(cf) == {}
    assert history(cf, stack_id) == [
        "DELETE_COMPLETE",
        "DELETE_IN_PROGRESS",
        "CREATE_IN_PROGRESS",
        "REVIEW_IN_PROGRESS",
    ]


def test_a_paced_failure_rolls_back_after_the_operation(clocked: tuple[FaultProxy, Clock]) -> None:
    proxy, clock = clocked
    cf = cfn(proxy, attempts=0)
    proxy.pace(change_set=0, operation=10)
    cf.execute_change_set(ChangeSetName=named(cf, "alpha", "CREATE", "v1"))
    clock.advance(10)
    proxy.fail("alpha", reason="Bad property")
    arn = named(cf, "alpha", "UPDATE", "v2")
    cf.execute_change_set(ChangeSetName=arn)
    assert shown(cf, "alpha") == ("UPDATE_IN_PROGRESS", "v1", "v1", "v1")
    clock.advance(10)
    assert shown(cf, "alpha") == ("UPDATE_ROLLBACK_IN_PROGRESS", "v1", "v1", "v1")
    assert refusal(lambda: cf.delete_stack(StackName="alpha"))[1].endswith(
        "cannot be deleted while in status UPDATE_ROLLBACK_IN_PROGRESS"
    )
    clock.advance(10)
    assert [shown(cf, "alpha") for _ in range(2)] == [
        ("UPDATE_ROLLBACK_COMPLETE", "v1", "v1", "v1")
    ] * 2
    assert cf.describe_change_set(ChangeSetName=arn)["ExecutionStatus"] == "EXECUTE_FAILED"
    events = cf.describe_stack_events(StackName="alpha")["StackEvents"]
    assert [e["ResourceStatus"] for e in events[:4]] == [
        "UPDATE_ROLLBACK_COMPLETE",
        "UPDATE_ROLLBACK_IN_PROGRESS",
        "UPDATE_FAILED",
        "UPDATE_IN_PROGRESS",
    ]
    assert events[2]["ResourceStatusReason"] == "Bad property"


def test_hold_and_scripts_refuse_changes_too_unless_turned_off(proxy: FaultProxy) -> None:
    cf = cfn(proxy, attempts=0)
    deploy(cf, "alpha")
    proxy.hold("alpha", "UPDATE_IN_PROGRESS")
    code, message, _ = refusal(lambda: deploy(cf, "alpha", "UPDATE", TWO_TOPICS))
    assert code == "ValidationError"
    assert message.endswith(" is in UPDATE_IN_PROGRESS state and can not be updated.")
    proxy.release("alpha")
    proxy.slow("alpha", 1)
    deploy(cf, "alpha", "UPDATE", TWO_TOPICS)  # one poll of UPDATE_IN_PROGRESS to go
    assert refusal(lambda: cf.delete_stack(StackName="alpha"))[0] == "ValidationError"
    assert proxy.refused_busy == [("CreateChangeSet", "alpha"), ("DeleteStack", "alpha")]
    proxy.refuse_busy = False  # as before busy refusal: the calls reach moto
    deploy(cf, "alpha", "UPDATE", ONE_TOPIC)
    assert status(cf, "alpha") == "UPDATE_IN_PROGRESS"
    assert status(cf, "alpha") == "UPDATE_COMPLETE"
    assert len(proxy.refused_busy) == 2


# -- throttling and the call log --------------------------------------------------------------


def test_throttle_rate_throttles_that_share_of_all_calls(proxy: FaultProxy) -> None:
    cf = cfn(proxy, attempts=0)  # no retries
    proxy.throttle_rate(1.0)
    for call in (cf.list_stacks, cf.describe_stacks, lambda: status(cf, "alpha")):
        assert refusal(call) == ("Throttling", "Rate exceeded", 400)
    assert [(c.action, c.stack) for c in proxy.throttled] == [
        ("ListStacks", None),
        ("DescribeStacks", None),
        ("DescribeStacks", "alpha"),
    ]
    proxy.throttle_rate(0.0)
    for _ in range(10):
        cf.describe_stacks()
    assert len(proxy.throttled) == 3

    def outcomes(seed: int) -> list[bool]:
        proxy.throttle_rate(0.3, seed=seed)
        throttled = []
        for _ in range(100):
            try:
                cf.describe_stacks()
                throttled.append(False)
            except ClientError as exc:
                assert exc.response["Error"]["Code"] == "Throttling"
                throttled.append(True)
        return throttled

    first = outcomes(7)
    rng = random.Random(7)
    assert first == [rng.random() < 0.3 for _ in range(100)]  # the seeded RNG picks them
    assert 20 <= sum(first) <= 40
    assert outcomes(7) == first
    assert len(proxy.throttled) == 3 + 2 * sum(first)


def test_throttle_above_is_a_token_bucket(clocked: tuple[FaultProxy, Clock]) -> None:
    proxy, clock = clocked
    cf = cfn(proxy, attempts=0)
    proxy.throttle_above(calls_per_second=2, burst=3)

    def calls(n: int, client: Any = cf) -> list[str]:
        results = []
        for _ in range(n):
            try:
                client.describe_stacks()
                results.append("ok")
            except ClientError as exc:
                results.append(exc.response["Error"]["Code"])
        return results

    assert calls(5) == ["ok"] * 3 + ["Throttling"] * 2  # the burst, then nothing left
    clock.advance(0.5)  # one token back
    assert calls(2) == ["ok", "Throttling"]
    clock.advance(60)  # full again, no fuller than the burst
    assert calls(4) == ["ok"] * 3 + ["Throttling"]
    elsewhere = boto3.client(
        "cloudformation", endpoint_url=proxy.url, region_name="eu-west-1", config=cf.meta.config
    )
    assert calls(1, elsewhere) == ["ok"]  # each region has its own bucket
    assert len(proxy.throttled) == 4
    assert proxy.count("DescribeStacks") == 12


def test_throttling_with_retries_and_backoff_gets_through(
    proxy: FaultProxy, no_backoff: None
) -> None:
    cf = cfn(proxy, attempts=9)
    proxy.throttle_rate(0.5, seed=1)
    for _ in range(10):
        cf.describe_stacks()
    assert len(proxy.throttled) > 0
    assert proxy.count("DescribeStacks") == 10 + len(proxy.throttled)


def test_the_log_has_clock_times_actions_and_stacks(clocked: tuple[FaultProxy, Clock]) -> None:
    proxy, clock = clocked
    cf = cfn(proxy, attempts=0)
    arn = cf.create_change_set(
        StackName="alpha", ChangeSetName="first", ChangeSetType="CREATE", TemplateBody=ONE_TOPIC
    )["Id"]
    clock.advance(1.5)
    cf.execute_change_set(ChangeSetName=arn)  # by ARN alone: still alpha's
    clock.advance(0.5)
    stack_id = cf.describe_stacks()["Stacks"][0]["StackId"]
    proxy.throttle("DescribeStacks", 1)
    refusal(lambda: cf.describe_stacks(StackName=stack_id))
    assert proxy.log == [
        (1000.0, "CreateChangeSet", "alpha"),
        (1001.5, "ExecuteChangeSet", "alpha"),
        (1002.0, "DescribeStacks", None),
        (1002.0, "DescribeStacks", "alpha"),
    ]
    assert proxy.log[1] == Call(at=1001.5, action="ExecuteChangeSet", stack="alpha")
    assert proxy.throttled == proxy.log[3:]
    assert proxy.calls == [c.action for c in proxy.log]


def test_reset_forgets_pace_throttling_refusals_and_the_log(
    clocked: tuple[FaultProxy, Clock],
) -> None:
    proxy, clock = clocked
    cf = cfn(proxy, attempts=0)
    proxy.pace(change_set=10, operation=10)
    arn = cf.create_change_set(
        StackName="alpha", ChangeSetName="first", ChangeSetType="CREATE", TemplateBody=ONE_TOPIC
    )["Id"]
    refusal(lambda: cf.execute_change_set(ChangeSetName=arn))
    clock.advance(10)
    cf.execute_change_set(ChangeSetName=arn)
    refusal(lambda: deploy(cf, "alpha", "UPDATE", TWO_TOPICS))
    proxy.throttle_rate(1.0)
    proxy.throttle_above(1, 1)
    proxy.refuse_busy = False
    refusal(cf.list_stacks)
    assert (len(proxy.log), len(proxy.throttled), proxy.refused_early, proxy.refused_busy) == (
        5,
        1,
        [("ExecuteChangeSet", "alpha")],
        [("CreateChangeSet", "alpha")],
    )
    proxy.reset()
    assert (proxy.log, proxy.throttled, proxy.refused_early, proxy.refused_busy) == ([], [], [], [])
    assert proxy.refuse_busy
    assert status(cf, "alpha") == "CREATE_COMPLETE"  # the paced create is forgotten
    deploy(cf, "beta")  # no pace, no throttling
    assert status(cf, "beta") == "CREATE_COMPLETE"
    assert [s["StackName"] for s in cf.list_stacks()["StackSummaries"]] == ["alpha", "beta"]
