"""Targets: where a stack lives, the key that names it, and the `aws` blocks of repos and stacks
that set it (config)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from syncd.core.config import parse_config
from syncd.core.targets import Place, Target, name_of, parse_key, resolve, stack_key
from syncd.errors import ConfigError

HOME = Place(None, "us-east-1")
OTHER = "222222222222"
ROLE = f"arn:aws:iam::{OTHER}:role/syncd"


# --- keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("place", "key"),
    [
        (HOME, "network"),
        (Place(None, "eu-west-1"), "eu-west-1/network"),
        (Place(OTHER, "us-east-1"), f"{OTHER}/us-east-1/network"),
        (Place(OTHER, "eu-west-1"), f"{OTHER}/eu-west-1/network"),
    ],
)
def test_a_key_names_the_place_only_away_from_home_and_reads_back(place, key) -> None:
    assert stack_key(place, "network", HOME) == key
    assert parse_key(key, HOME) == (place, "network")
    assert name_of(key) == "network"


def test_with_a_home_account_a_key_in_it_needs_no_account() -> None:
    home = Place("111111111111", "us-east-1")
    assert stack_key(Place("111111111111", "eu-west-1"), "db", home) == "eu-west-1/db"
    assert parse_key("eu-west-1/db", home) == (Place("111111111111", "eu-west-1"), "db")


@pytest.mark.parametrize(
    "key", ["a/b", "eu-west-1/", "1234/eu-west-1/x", f"{OTHER}/nowhere/x", "a/b/c/d"]
)
def test_what_is_not_a_key_is_refused_saying_what_a_key_is(key) -> None:
    with pytest.raises(ValueError, match="NAME, REGION/NAME or ACCOUNT/REGION/NAME"):
        parse_key(key, HOME)


@pytest.mark.parametrize(
    ("reference", "at", "key"),
    [
        ("network", HOME, "network"),
        ("network", Place(None, "eu-west-1"), "eu-west-1/network"),
        ("network", Place(OTHER, "eu-west-1"), f"{OTHER}/eu-west-1/network"),
        ("us-east-1/network", Place(None, "eu-west-1"), "network"),
        ("eu-west-1/network", Place(OTHER, "us-east-1"), f"{OTHER}/eu-west-1/network"),
        (f"{OTHER}/us-east-1/network", HOME, f"{OTHER}/us-east-1/network"),
    ],
)
def test_a_reference_is_relative_to_the_stack_that_makes_it(reference, at, key) -> None:
    assert resolve(reference, at, HOME) == key


def test_a_reference_that_names_no_place_is_refused() -> None:
    with pytest.raises(ValueError, match="REGION/NAME"):
        resolve("mars-1/network", HOME, HOME)


def test_a_target_s_account_is_its_role_s_or_its_account_id() -> None:
    assert Target(role_arn=ROLE).account == OTHER
    assert Target(account_id="333333333333").account == "333333333333"
    assert Target(profile="ops").account is None


# --- config ------------------------------------------------------------------------------------


def parse(text: str):
    return parse_config(textwrap.dedent(text), "syncd.yaml", Path("/etc/syncd"))


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return caught.value.problems


def test_repos_and_stacks_set_their_own_aws_and_inherit_the_rest() -> None:
    config = parse(
        f"""
        state_dir: /var/lib/syncd
        aws: {{region: us-east-1, template_bucket: "s3://tpl-use1/"}}
        repos:
          - name: eu
            url: https://git.example.com/infra.git
            aws: {{region: eu-west-1, template_bucket: "s3://tpl-euw1/"}}
            stacks:
              app: {{approval: manual, aws: {{role_arn: "{ROLE}", external_id: x-42}}}}
          - name: home
            url: https://git.example.com/infra.git
        """
    )
    eu, home = config.repos
    assert eu.options_for("db").target == Target(
        region="eu-west-1", template_bucket="s3://tpl-euw1/"
    )
    app = eu.options_for("app")
    assert app.approval == "manual"
    assert app.target == Target(
        region="eu-west-1", role_arn=ROLE, external_id="x-42", template_bucket="s3://tpl-euw1/"
    )
    assert app.target.place == Place(OTHER, "eu-west-1")
    assert home.options_for("db").target == config.aws.target


def test_a_template_bucket_is_not_inherited_into_another_region() -> None:
    config = parse(
        """
        state_dir: /s
        aws: {region: us-east-1, template_bucket: "s3://tpl-use1/"}
        repos:
          - {name: a, url: /r, aws: {region: eu-west-1}, stacks: {x: {aws: {region: us-west-2}}}}
          - {name: b, url: /r, aws: {role_arn: "arn:aws:iam::222222222222:role/r"}}
        """
    )
    a, b = config.repos
    assert a.options.target.template_bucket is None
    assert a.options_for("x").target.template_bucket is None
    assert b.options.target.template_bucket == "s3://tpl-use1/"


def test_a_new_role_names_its_own_account_over_an_inherited_account_id() -> None:
    config = parse(
        f"""
        state_dir: /s
        aws: {{region: us-east-1, profile: ops, account_id: "111111111111"}}
        repos:
          - {{name: a, url: /r, aws: {{role_arn: "{ROLE}"}}}}
        """
    )
    assert config.repos[0].options.target.account == OTHER


@pytest.mark.parametrize(
    ("aws", "says"),
    [
        ("{region: mars}", "repos[0].aws.region: 'mars' is not an AWS region such as eu-west-1"),
        ("{role_arn: deployer}", "repos[0].aws.role_arn: 'deployer' is not an IAM role ARN"),
        ("{account_id: 12}", "repos[0].aws.account_id: '12' is not a 12-digit AWS account id"),
        ("{external_id: x-1}", "repos[0].aws.external_id: needs role_arn"),
        ("{wait_poll: 1s}", "repos[0].aws.wait_poll: is set once, in the top-level aws block"),
        ("{regoin: eu-west-1}", "repos[0].aws.regoin: unknown key (did you mean 'region'?)"),
        (
            "{profile: prod}",
            "repos[0].aws.account_id: required with a profile of its own and no role_arn",
        ),
        (
            f'{{role_arn: "{ROLE}", account_id: "333333333333"}}',
            f"repos[0].aws.account_id: 333333333333 is not the account of role_arn ({OTHER})",
        ),
    ],
)
def test_a_bad_aws_block_says_what_and_where(aws: str, says: str) -> None:
    found = problems(
        f"""
        state_dir: /s
        aws: {{region: us-east-1}}
        repos:
          - {{name: a, url: /r, aws: {aws}}}
        """
    )
    assert any(p.startswith(says) for p in found), found


def test_another_region_needs_the_home_region_set() -> None:
    found = problems(
        """
        state_dir: /s
        repos:
          - {name: a, url: /r, stacks: {db: {aws: {region: eu-west-1}}}}
        """
    )
    assert found == [
        "aws.region: required when a repo or stack sets another region (repos[0].stacks.db.aws)"
    ]
