"""Gateways and Worlds route stack keys to the gateway of the stack's account and region, with
the stack's own name; what comes back is keyed again. Recording gateways stand in for
CloudFormation (the routing is what is tested; the calls themselves are tested against moto)."""

from __future__ import annotations

from typing import Any

import pytest

from syncd.cloudformation import ObservedStack
from syncd.clouds import Gateways, TargetUnusable, UnknownPlace, Worlds
from syncd.core.targets import Place
from syncd.errors import AwsError

HOME = Place(None, "us-east-1")
EU = Place(None, "eu-west-1")
OTHER = Place("222222222222", "eu-west-1")


class Recording:
    """A CloudFormation stand-in that records what it was asked, by stack name."""

    def __init__(self, region: str, stacks: tuple[str, ...] = (), fails: bool = False) -> None:
        self.region = region
        self.calls: list[tuple[str, ...]] = []
        self.stacks = stacks
        self.fails = fails
        self.looks = 0

    def describe(self, name: str, *, once: bool = False) -> ObservedStack | None:
        self.calls.append(("describe", name))
        return ObservedStack(name, f"arn:aws:cloudformation:{self.region}:1:stack/{name}/x", "OK")

    def execute_change_set(self, arn: str, stack: str, token: str) -> None:
        self.calls.append(("execute", arn, stack))

    def detect_drift(self, stack: str) -> str:
        self.calls.append(("detect", stack))
        return "d-1"

    def drift_detection(self, detection: str) -> Any:
        self.calls.append(("detection", detection))
        return detection

    def delete_stack(self, name: str) -> None:
        self.calls.append(("delete", name))

    def account(self) -> str:
        return "123456789012"


class World:
    def __init__(self, gateway: Recording) -> None:
        self.gateway = gateway
        self.looks = 0

    def look_all(self) -> dict[str, ObservedStack]:
        self.looks += 1
        if self.gateway.fails:
            raise AwsError("DescribeStacks: AccessDenied")
        return {n: ObservedStack(n, "id", "OK") for n in self.gateway.stacks}

    def observe(self, name: str, newer_than: float) -> tuple[ObservedStack | None, float]:
        return ObservedStack(name, "id", "OK"), 1.0


def three() -> tuple[Gateways, dict[Place, Recording]]:
    by_place = {
        HOME: Recording("us-east-1", ("network", "app")),
        EU: Recording("eu-west-1", ("network",)),
        OTHER: Recording("eu-west-1", ("network",), fails=True),
    }
    return Gateways(HOME, by_place), by_place  # type: ignore[arg-type]


def test_a_key_reaches_its_place_with_the_stack_s_own_name_and_comes_back_keyed() -> None:
    gateways, at = three()
    found = gateways.describe("222222222222/eu-west-1/network")
    assert at[OTHER].calls == [("describe", "network")]
    assert found is not None and found.name == "222222222222/eu-west-1/network"
    gateways.execute_change_set("arn:cs", "eu-west-1/network", "t")
    assert at[EU].calls == [("execute", "arn:cs", "network")]
    assert at[HOME].calls == []


def test_a_stack_id_is_sent_to_the_place_its_region_and_account_name() -> None:
    gateways, at = three()
    gateways.accounts[HOME] = gateways.accounts[EU] = "123456789012"
    gateways.delete_stack("arn:aws:cloudformation:eu-west-1:222222222222:stack/network/abc")
    gateways.delete_stack("arn:aws:cloudformation:eu-west-1:123456789012:stack/network/abc")
    assert at[OTHER].calls == [
        ("delete", "arn:aws:cloudformation:eu-west-1:222222222222:stack/network/abc")
    ]
    assert at[EU].calls == [
        ("delete", "arn:aws:cloudformation:eu-west-1:123456789012:stack/network/abc")
    ]
    with pytest.raises(UnknownPlace):
        gateways.delete_stack("arn:aws:cloudformation:ap-south-1:1:stack/network/abc")


def test_a_drift_detection_away_from_home_says_where_to_ask_about_it() -> None:
    gateways, at = three()
    assert gateways.detect_drift("network") == "d-1"  # as before targets: the journal's ids
    away = gateways.detect_drift("eu-west-1/network")
    assert away == "eu-west-1/network#d-1"
    gateways.drift_detection(away)
    gateways.drift_detection("d-1")
    assert at[EU].calls[-1] == ("detection", "d-1")
    assert at[HOME].calls[-1] == ("detection", "d-1")


def test_an_unusable_place_is_never_called_and_says_why() -> None:
    gateways = Gateways(HOME, {HOME: Recording("us-east-1")}, {EU: "no credentials: no profile"})  # type: ignore[dict-item]
    with pytest.raises(TargetUnusable, match="no profile"):
        gateways.describe("eu-west-1/network")
    with pytest.raises(UnknownPlace):
        gateways.describe("333333333333/us-west-2/network")


def test_the_look_at_start_is_one_per_place_and_a_failed_place_hides_nothing_as_gone() -> None:
    gateways, _ = three()
    worlds = Worlds.of(gateways, World)  # type: ignore[arg-type]
    seen = worlds.look_all()
    assert sorted(seen) == ["app", "eu-west-1/network", "network"]
    assert all(seen[k].name == k for k in seen)
    assert [w.looks for w in worlds.by_place.values()] == [1, 1, 1]
    assert worlds.unreachable == {OTHER: "DescribeStacks: AccessDenied"}
    keys = ["network", "eu-west-1/network", "222222222222/eu-west-1/network"]
    assert worlds.covers(keys) == {"network", "eu-west-1/network"}


def test_with_one_place_a_failed_look_is_raised_as_before() -> None:
    gateway = Recording("us-east-1", fails=True)
    worlds = Worlds.of(Gateways(HOME, {HOME: gateway}), World)  # type: ignore[dict-item, arg-type]
    with pytest.raises(AwsError, match="AccessDenied"):
        worlds.look_all()
