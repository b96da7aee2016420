"""The shared look against moto's server (through the fault proxy): many waiters, few calls."""

from __future__ import annotations

import threading
import time
from typing import Any

import boto3
import pytest

from syncd.cloudformation import CloudFormation
from syncd.errors import AwsError
from syncd.ratelimit import RateLimiter
from syncd.world import World
from tests.conftest import TOPIC_TEMPLATE, Aws
from tests.support.timing import PATIENCE, eventually


def make_stacks(aws: Aws, count: int) -> list[str]:
    names = [f"w{i:03d}" for i in range(count)]
    for name in names:
        aws.cfn.create_stack(
            StackName=name,
            TemplateBody=TOPIC_TEMPLATE,
            Parameters=[{"ParameterKey": "Name", "ParameterValue": name}],
        )
    return names


class Clock:
    """A monotonic clock that moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


def observe_together(world: World, names: list[str], clock: Clock) -> dict[str, Any]:
    """Each name asked about from its own thread, all in one look: the clock stands still (so
    the look waits its gap) until every caller is waiting, however late a busy machine starts
    its thread. What each got (the stack, or the error it met)."""
    got: dict[str, Any] = {}
    newer_than = clock()

    def wait(name: str) -> None:
        try:
            got[name] = world.observe(name, newer_than)[0]
        except AwsError as exc:
            got[name] = exc

    threads = [threading.Thread(target=wait, args=(n,), daemon=True) for n in names]
    for t in threads:
        t.start()
    try:
        eventually(lambda: world.waiting() == len(names))
    finally:
        clock.now += 60.0  # past the gap: the next caller to wake makes the look, for all
        for t in threads:
            t.join(PATIENCE)
    return got


@pytest.fixture
def world(aws: Aws) -> World:
    return World(CloudFormation(boto3.Session(region_name="us-east-1"), aws.endpoint))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def paced_world(aws: Aws, clock: Clock) -> World:
    """A world whose looks keep a gap (a call budget above what the tests use: a gap of
    20-40 ms, which a waiter sleeps between its checks) on a clock the test moves: callers
    gather for a look until the test lets it go."""
    cfn = CloudFormation(
        boto3.Session(region_name="us-east-1"), aws.endpoint, limiter=RateLimiter(100)
    )
    return World(cfn, clock=clock)


def test_many_waiters_share_one_look(aws, paced_world, clock):
    world = paced_world
    names = make_stacks(aws, 60)  # two pages on moto
    world.look_all()  # the start-up look: learns how many pages a listing takes
    aws.proxy.reset()
    seen = observe_together(world, names, clock)
    assert {n: s.status for n, s in seen.items()} == {n: "CREATE_COMPLETE" for n in names}
    # Every caller in one look: a listing of two pages.
    assert aws.proxy.count("DescribeStacks") == 2


def test_a_waiter_gets_a_look_newer_than_the_one_it_saw(aws, world):
    make_stacks(aws, 1)
    first, seen_at = world.observe("w000", time.monotonic())
    assert first is not None and first.status == "CREATE_COMPLETE"
    aws.proxy.hold("w000", "UPDATE_IN_PROGRESS")
    again, later = world.observe("w000", seen_at)
    assert again is not None and again.status == "UPDATE_IN_PROGRESS" and later > seen_at
    # An answer already newer than asked for costs nothing.
    calls = aws.proxy.count()
    assert world.observe("w000", seen_at)[0] == again
    assert aws.proxy.count() == calls


def test_few_waiters_are_asked_about_by_name(aws, world):
    make_stacks(aws, 3)
    world.look_all()
    aws.proxy.reset()
    observed, _ = world.observe("w001", time.monotonic())
    assert observed is not None and observed.name == "w001"
    assert aws.proxy.count("DescribeStacks") == 1
    assert world.observe("gone", time.monotonic())[0] is None


def test_a_listing_that_fails_falls_back_to_names_and_errors_stay_with_their_stack(
    aws, paced_world, clock
):
    world = paced_world
    names = make_stacks(aws, 4)
    world.look_all()  # the next look waits its gap: all four waiters are in it, so it lists
    # A listing failing with a non-retried error (as moto does for one odd stack): the wanted
    # stacks are then asked about by name.
    aws.proxy.error("DescribeStacks", 400, "ValidationError", 1, "one stack spoils the page")
    stacks = observe_together(world, names, clock)
    assert all(stacks[n] is not None and not isinstance(stacks[n], AwsError) for n in names)
    assert aws.proxy.calls[-4:] == ["DescribeStacks"] * 4  # after the failed listing: by name

    aws.proxy.error("DescribeStacks", 400, "AccessDenied", 1, "not yours")
    asked = clock()
    clock.now += 60.0
    with pytest.raises(AwsError, match="not yours") as first:
        world.observe("w000", asked)
    with pytest.raises(AwsError, match="not yours") as again:  # that look's failure, told again
        world.observe("w000", asked)
    # An exception of its own each time: the one kept, raised again and again, would carry
    # every caller's frames on its traceback for as long as the world keeps the failure.
    assert first.value is not again.value
    asked = clock()
    clock.now += 60.0
    assert world.observe("w000", asked)[0] is not None  # the next look is fine


def test_a_listing_spoiled_by_a_server_error_falls_back_to_names(aws, paced_world, clock):
    world = paced_world
    names = make_stacks(aws, 3)
    world.look_all()
    # moto answers 500 to a listing that holds some resource types: not a throttle, so the
    # stacks wanted are asked about by name (a look is made once: no botocore retry).
    aws.proxy.error("DescribeStacks", 500, "InternalFailure", 1)
    stacks = observe_together(world, names, clock)
    assert all(stacks[n] is not None and not isinstance(stacks[n], AwsError) for n in names)


def test_a_throttled_look_is_missed_for_every_waiter_and_not_retried(aws, paced_world, clock):
    world = paced_world
    names = make_stacks(aws, 3)
    world.look_all()
    aws.proxy.throttle("DescribeStacks", 1)
    aws.proxy.calls.clear()
    errors = list(observe_together(world, names, clock).values())
    assert len(errors) == 3 and all(isinstance(e, AwsError) and e.retryable for e in errors)
    assert aws.proxy.calls == ["DescribeStacks"]  # one throttled listing, no back-off retries
