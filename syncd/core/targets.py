"""Where a stack lives: its target (an AWS account and region, and how to reach it), and the key
that names the stack everywhere syncd speaks of it.

A stack's identity is its account, region and name. Keys are written so that a journal from
before targets existed still reads: a stack of the default target (the top-level `aws`) is
keyed by its name alone, `network`; one in another region of the same account by
`eu-west-1/network`; one in another account by `222222222222/eu-west-1/network`. Stack names
and regions have no `/`, so a key reads back unambiguously (`parse_key`).

The account of a target is known from its config, before any call to AWS: the account of its
`role_arn`, or its `account_id`. A target with neither uses the default credentials' account
(the same account as the top-level `aws`). At start syncd asks AWS which account the
credentials reach, and refuses a target whose answer is another account.

`stack-output` references are relative to the stack that makes them: `network.VpcId` is the
stack `network` of the same target, `eu-west-1/network.VpcId` that of another region in the
same account, `222222222222/eu-west-1/network.VpcId` that of another account (`resolve`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")  # a CloudFormation stack name
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):role/[\w+=,.@/-]+$")


def account_of_role(role_arn: str) -> str:
    """The account id in an IAM role ARN; ValueError if it is not one."""
    match = _ROLE_ARN.match(role_arn)
    if not match:
        raise ValueError(f"{role_arn!r} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
    return match.group(1)


def is_account(text: str) -> bool:
    return bool(_ACCOUNT.match(text))


def is_region(text: str) -> bool:
    return bool(_REGION.match(text))


@dataclass(frozen=True)
class Target:
    """How to reach one account and region: the keys of an `aws` block that a repo or a stack
    may set. Two stacks with equal targets share one session and one look at the world."""

    region: str | None = None  # None: boto's default (AWS_DEFAULT_REGION, the profile's)
    profile: str | None = None
    role_arn: str | None = None
    external_id: str | None = None
    session_name: str | None = None
    account_id: str | None = None  # the account the target must reach, when not in role_arn
    template_bucket: str | None = None  # s3://bucket/prefix in the target's own region

    @property
    def account(self) -> str | None:
        """The account this target deploys to, as its config tells; None: the default
        credentials' account."""
        if self.role_arn:
            return account_of_role(self.role_arn)
        return self.account_id

    @property
    def place(self) -> Place:
        return Place(self.account, self.region)


@dataclass(frozen=True)
class Place:
    """An account (None: the default credentials' account) and a region."""

    account: str | None
    region: str | None

    def label(self, home: Place) -> str:
        """What a key puts before a stack's name: '' at home, the region in another region of
        the home account, else the account and the region."""
        if self == home:
            return ""
        if self.account == home.account:
            return self.region or "default"
        return f"{self.account or 'default'}/{self.region or 'default'}"


def stack_key(place: Place, name: str, home: Place) -> str:
    """The key of the stack `name` at `place`: its name at home, else prefixed."""
    label = place.label(home)
    return f"{label}/{name}" if label else name


def parse_key(key: str, home: Place) -> tuple[Place, str]:
    """A key back into (place, name); ValueError if it is not one."""
    *where, name = key.split("/")
    if _NAME.match(name):
        if not where:
            return home, name
        if len(where) == 1 and is_region(where[0]):
            return Place(home.account, where[0]), name
        account, region = where if len(where) == 2 else ("", "")
        if (is_account(account) or account == "default") and is_region(region):
            return Place(None if account == "default" else account, region), name
    raise ValueError(
        f"{key!r} is not a stack: NAME, REGION/NAME or ACCOUNT/REGION/NAME "
        "(a 12-digit account id and a region such as eu-west-1)"
    )


def name_of(key: str) -> str:
    """The CloudFormation stack name in a key."""
    return key.rsplit("/", 1)[-1]


def resolve(reference: str, at: Place, home: Place) -> str:
    """The key of the stack a `stack-output` reference names, made from a stack at `at`:
    `NAME` at the same place, `REGION/NAME` in the same account, `ACCOUNT/REGION/NAME`.
    ValueError if the reference is none of these."""
    *where, name = reference.split("/")
    if _NAME.match(name):
        if not where:
            return stack_key(at, name, home)
        if len(where) == 1 and is_region(where[0]):
            return stack_key(Place(at.account, where[0]), name, home)
        if len(where) == 2 and is_account(where[0]) and is_region(where[1]):
            return stack_key(Place(where[0], where[1]), name, home)
    raise ValueError(
        f"{reference!r}: name a stack as NAME, REGION/NAME or ACCOUNT/REGION/NAME "
        "(a 12-digit account id and a region such as eu-west-1)"
    )
