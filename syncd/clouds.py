"""Every target's CloudFormation behind one gateway, addressed by stack keys.

syncd speaks of a stack by its key (`network`, `eu-west-1/network`,
`222222222222/eu-west-1/network`: syncd.core.targets). `Gateways` has the methods of
`cloudformation.CloudFormation`, takes keys where that takes stack names, and sends each call to
the gateway of the stack's place (account and region) with the stack's own name; what comes
back names the stack by its key again. A StackId or change set ARN is sent to the place its
region and account name. `Worlds` does the same for `world.World`: one shared look per place,
so a start-up look is one paginated DescribeStacks per account and region, not one per stack,
and a place that cannot be reached leaves the others' looks whole.

With one place (no repo or stack sets its own `aws`) both are a thin pass-through.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from syncd.cloudformation import (
    ChangeSetInfo,
    CloudFormation,
    DriftDetection,
    ObservedStack,
    ResourceDrift,
    StackEvent,
)
from syncd.core.journal_state import Kind
from syncd.core.targets import Place, name_of, parse_key, stack_key
from syncd.errors import AwsError
from syncd.journal.store import Journal
from syncd.world import World


class UnknownPlace(AwsError):
    """A stack key or ARN names an account and region syncd has no target for."""


class TargetUnusable(AwsError):
    """No call is made to a place: its credentials cannot be had (a profile that is not
    there), or they reach another account than its config names."""


class Gateways:
    """CloudFormation per place, addressed by stack keys."""

    def __init__(
        self,
        home: Place,
        gateways: Mapping[Place, CloudFormation],
        unusable: Mapping[Place, str] | None = None,
    ) -> None:
        self.home = home
        self.by_place = dict(gateways)
        self.accounts: dict[Place, str] = {}  # as AWS answered (GetCallerIdentity)
        # The places no call is made to, and why (their stacks are blocked with it).
        self.unusable: dict[Place, str] = dict(unusable or {})
        self._identifying = threading.Lock()  # repo workers ask at once

    # --- routing -----------------------------------------------------------------------------

    def place_of(self, key: str) -> Place:
        place, _ = parse_key(key, self.home)
        return place

    def key(self, place: Place, name: str) -> str:
        return stack_key(place, name, self.home)

    def account_of(self, place: Place) -> str | None:
        return place.account or self.accounts.get(place)

    def identify(self, journal: Journal) -> dict[Place, str]:
        """Ask AWS which account each place's credentials reach, once per place, and journal
        it where it is new. A place whose credentials reach another account than its config
        names is refused from then on: no call is made there. Returns the places that could
        not be checked (their credentials failed), and why; they are asked again next time."""
        with self._identifying:
            return self._identify(journal)

    def _identify(self, journal: Journal) -> dict[Place, str]:
        failed: dict[Place, str] = {}
        for place, gateway in self.by_place.items():
            if place in self.accounts or place in self.unusable:
                continue
            label = place.label(self.home)
            try:
                account = gateway.account()
            except AwsError as exc:
                failed[place] = str(exc)
                continue
            if place.account is not None and account != place.account:
                self.unusable[place] = (
                    f"the credentials for {label} reach account {account}, not {place.account}: "
                    "nothing is deployed there until the config or the credentials are fixed"
                )
                continue
            self.accounts[place] = account
            seen = {"account": account, "region": gateway.region}
            if journal.state.targets.get(label) != seen:
                journal.append(Kind.TARGET, target=label, **seen)
        return failed

    def _gateway(self, place: Place) -> CloudFormation:
        if place in self.unusable:
            raise TargetUnusable(self.unusable[place])
        try:
            return self.by_place[place]
        except KeyError:
            raise UnknownPlace(f"no target is configured for {place.label(self.home)}") from None

    def _route(self, stack: str) -> tuple[Place, CloudFormation, str]:
        """The place and gateway of a stack key or StackId, and what to send as StackName."""
        if stack.startswith("arn:"):
            place = self._place_of_arn(stack)
            return place, self._gateway(place), stack
        place = self.place_of(stack)
        return place, self._gateway(place), name_of(stack)

    def _place_of_arn(self, arn: str) -> Place:
        parts = arn.split(":")
        region, account = (parts[3], parts[4]) if len(parts) > 5 else ("", "")
        here = [p for p in self.by_place if p.region in (region, None)]
        if len(here) == 1:
            return here[0]
        for place in here:
            if self.account_of(place) == account:
                return place
        raise UnknownPlace(f"no target is configured for the account and region of {arn}")

    def _rekeyed(self, place: Place, observed: ObservedStack | None) -> ObservedStack | None:
        if observed is None:
            return None
        return dataclasses.replace(observed, name=self.key(place, observed.name))

    # --- CloudFormation's methods, by key -----------------------------------------------------

    def describe(self, stack: str, *, once: bool = False) -> ObservedStack | None:
        place, gateway, name = self._route(stack)
        return self._rekeyed(place, gateway.describe(name, once=once))

    def delete_stack(self, stack: str) -> None:
        _, gateway, name = self._route(stack)
        gateway.delete_stack(name)

    def resources(self, stack: str) -> list[tuple[str, str]]:
        _, gateway, name = self._route(stack)
        return gateway.resources(name)

    def events(self, stack: str, since: datetime, *, once: bool = False) -> list[StackEvent]:
        _, gateway, name = self._route(stack)
        return gateway.events(name, since, once=once)

    def events_between(
        self, stack: str, since: datetime, until: datetime | None, *, max_pages: int = 20
    ) -> tuple[list[StackEvent], bool]:
        _, gateway, name = self._route(stack)
        return gateway.events_between(name, since, until, max_pages=max_pages)

    def create_change_set(self, *, stack: str, **kwargs: Any) -> str:
        _, gateway, name = self._route(stack)
        return gateway.create_change_set(stack=name, **kwargs)

    def describe_change_set(
        self, arn: str, stack: str | None = None, *, once: bool = False
    ) -> ChangeSetInfo | None:
        _, gateway, name = self._route(stack or arn)
        info = gateway.describe_change_set(arn, name if stack else None, once=once)
        if info is None or stack is None:
            return info
        return dataclasses.replace(info, stack=stack)

    def execute_change_set(self, arn: str, stack: str, token: str) -> None:
        _, gateway, name = self._route(stack)
        gateway.execute_change_set(arn, name, token)

    def delete_change_set(self, arn: str, stack: str) -> None:
        _, gateway, name = self._route(stack)
        gateway.delete_change_set(arn, name)

    def detect_drift(self, stack: str) -> str:
        """The detection's id; away from home, with the stack's key before a `#` (ids are per
        account and region, and `drift_detection` must know where to ask)."""
        place, gateway, name = self._route(stack)
        detection = gateway.detect_drift(name)
        return detection if place == self.home else f"{stack}#{detection}"

    def drift_detection(self, detection: str) -> DriftDetection:
        stack, _, bare = detection.rpartition("#")
        _, gateway, _ = self._route(stack) if stack else (None, self._gateway(self.home), "")
        return gateway.drift_detection(bare)

    def resource_drifts(self, stack: str) -> list[ResourceDrift]:
        _, gateway, name = self._route(stack)
        return gateway.resource_drifts(name)

    def template_problem(self, stack: str, template: str) -> str | None:
        _, gateway, name = self._route(stack)
        return gateway.template_problem(name, template)


class Worlds:
    """One `World` per place: the shared looks at CloudFormation, addressed by stack keys."""

    def __init__(self, gateways: Gateways, worlds: Mapping[Place, World]) -> None:
        self.gateways = gateways
        self.by_place = dict(worlds)
        self.unreachable: dict[Place, str] = {}  # the places the last look_all could not see

    @classmethod
    def of(cls, gateways: Gateways, make: Callable[[CloudFormation], World]) -> Worlds:
        return cls(gateways, {p: make(g) for p, g in gateways.by_place.items()})

    @property
    def looks(self) -> int:
        return sum(w.looks for w in self.by_place.values())

    def observe(self, stack: str, newer_than: float) -> tuple[ObservedStack | None, float]:
        place = self.gateways.place_of(stack)
        world = self.by_place.get(place)
        if world is None:
            self.gateways._gateway(place)  # raises why there is none
            raise UnknownPlace(f"no target is configured for {stack}")
        observed, started = world.observe(name_of(stack), newer_than)
        return self.gateways._rekeyed(place, observed), started

    def look_all(self) -> dict[str, ObservedStack]:
        """Every place's stacks by key. A place whose look fails is left out and named in
        `unreachable` (its stacks are not gone: they could not be seen); with one place the
        failure is raised, as a single World raises it."""
        found: dict[str, ObservedStack] = {}
        self.unreachable = {}
        for place, world in self.by_place.items():
            try:
                stacks = world.look_all()
            except AwsError as exc:
                if len(self.by_place) == 1:
                    raise
                self.unreachable[place] = str(exc)
                continue
            for name, observed in stacks.items():
                key = self.gateways.key(place, name)
                found[key] = dataclasses.replace(observed, name=key)
        return found

    def covers(self, keys: Iterable[str]) -> set[str]:
        """Of these keys, those whose place the last look_all saw."""
        unseen = self.unreachable.keys() | self.gateways.unusable.keys()
        return {k for k in keys if self.gateways.place_of(k) not in unseen}
