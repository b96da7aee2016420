"""Many accounts and regions from one daemon: `aws` set per repo and per stack, against moto's
server behind the fault proxy.

moto 5 (checked 2026-12-01): one server keeps each region's stacks apart, and `sts:AssumeRole`
into `arn:aws:iam::222222222222:role/...` gives credentials that the server treats as account
222222222222 (its stacks are invisible to the default account, 123456789012). So two regions and
two accounts are four separate places on one server, as on AWS.
"""

from __future__ import annotations

from typing import Any

import boto3
import yaml

from tests.conftest import write_config
from tests.e2e.conftest import json_out, run_syncd

OTHER = "222222222222"
ROLE = f"arn:aws:iam::{OTHER}:role/syncd-deployer"

NETWORK = """\
Parameters:
  Tag:
    Type: String
Resources:
  Marker:
    Type: AWS::SSM::Parameter
    Properties:
      Name: !Sub "/${AWS::StackName}/tag"
      Type: String
      Value: !Ref Tag
Outputs:
  VpcId:
    Value: !Sub "vpc-${AWS::Region}-${AWS::AccountId}-${Tag}"
"""

APP = """\
Parameters:
  VpcId:
    Type: String
Resources:
  Uses:
    Type: AWS::SSM::Parameter
    Properties:
      Name: !Sub "/${AWS::StackName}/vpc"
      Type: String
      Value: !Ref VpcId
"""

PLACES = {  # repo name -> (region, role)
    "home": ("us-east-1", None),
    "eu": ("eu-west-1", None),
    "b-home": ("us-east-1", ROLE),
    "b-eu": ("eu-west-1", ROLE),
}


def cfn_at(aws: Any, region: str, role: str | None) -> Any:
    """CloudFormation in moto (not through the proxy) as that account and region sees it."""
    creds: dict[str, str] = {}
    if role:
        sts = boto3.client("sts", endpoint_url=aws.emulator.url, region_name=region)
        got = sts.assume_role(RoleArn=role, RoleSessionName="test")["Credentials"]
        creds = {
            "aws_access_key_id": got["AccessKeyId"],
            "aws_secret_access_key": got["SecretAccessKey"],
            "aws_session_token": got["SessionToken"],
        }
    return boto3.client(
        "cloudformation", endpoint_url=aws.emulator.url, region_name=region, **creds
    )


def parameters_at(aws: Any, region: str, role: str | None, stack: str) -> dict[str, str] | None:
    try:
        [found] = cfn_at(aws, region, role).describe_stacks(StackName=stack)["Stacks"]
    except Exception:
        return None
    return {p["ParameterKey"]: p["ParameterValue"] for p in found.get("Parameters", [])}


def four_places(repo: Any, tmp_path: Any, aws: Any, tags: dict[str, str] | None = None) -> Any:
    """One Git repo; a folder of deployment files per place; a repo entry per place."""
    files = {"templates/network.yaml": NETWORK, "templates/app.yaml": APP}
    for place in PLACES:
        tag = (tags or {}).get(place, "t1")
        files[f"deployments/{place}/network.yaml"] = yaml.safe_dump(
            {"template-file-path": "templates/network.yaml", "parameters": {"Tag": tag}}
        )
        files[f"deployments/{place}/app.yaml"] = yaml.safe_dump(
            {
                "template-file-path": "templates/app.yaml",
                "parameters": {"VpcId": {"stack-output": "network.VpcId"}},
            }
        )
    repo.commit(files)
    entries = []
    for place, (region, role) in PLACES.items():
        target: dict[str, str] = {"region": region}
        if role:
            target["role_arn"] = role
        entries.append(
            {
                "name": place,
                "url": str(repo.bare),
                "deployments": [f"deployments/{place}/*.yaml"],
                "aws": target,
            }
        )
    return write_config(tmp_path, entries, aws.endpoint)


def test_one_repo_deploys_to_two_regions_and_two_accounts(tmp_path, repo, aws):
    config = four_places(repo, tmp_path, aws)
    result = run_syncd("sync", "-c", str(config), "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr

    rows = json_out(run_syncd("status", "-c", str(config), "--format", "json"))
    seen = {(r["stack"], r["account"], r["region"], r["state"]) for r in rows}
    assert seen == {
        ("network", "123456789012", "us-east-1", "in_sync"),
        ("app", "123456789012", "us-east-1", "in_sync"),
        ("eu-west-1/network", "123456789012", "eu-west-1", "in_sync"),
        ("eu-west-1/app", "123456789012", "eu-west-1", "in_sync"),
        (f"{OTHER}/us-east-1/network", OTHER, "us-east-1", "in_sync"),
        (f"{OTHER}/us-east-1/app", OTHER, "us-east-1", "in_sync"),
        (f"{OTHER}/eu-west-1/network", OTHER, "eu-west-1", "in_sync"),
        (f"{OTHER}/eu-west-1/app", OTHER, "eu-west-1", "in_sync"),
    }
    # Each app took its own place's VpcId.
    for region, role in PLACES.values():
        account = OTHER if role else "123456789012"
        assert parameters_at(aws, region, role, "app") == {"VpcId": f"vpc-{region}-{account}-t1"}

    # A change to one place's parameters updates that place's stacks alone.
    aws.proxy.reset()
    four_places(repo, tmp_path, aws, tags={"b-eu": "t2"})
    result = run_syncd("sync", "-c", str(config), "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    changed = {r["stack"] for r in json_out(result) if r["outcome"] == "succeeded"}
    assert changed == {f"{OTHER}/eu-west-1/network", f"{OTHER}/eu-west-1/app"}
    assert aws.proxy.count("ExecuteChangeSet") == 2
    assert parameters_at(aws, "eu-west-1", ROLE, "app") == {"VpcId": f"vpc-eu-west-1-{OTHER}-t2"}
    assert parameters_at(aws, "eu-west-1", None, "app") == {
        "VpcId": "vpc-eu-west-1-123456789012-t1"
    }


def test_a_target_whose_role_cannot_be_assumed_blocks_its_stacks_alone(tmp_path, repo, aws):
    config = four_places(repo, tmp_path, aws)
    aws.proxy.error("AssumeRole", 403, "AccessDenied", times=1_000, message="not for you")
    result = run_syncd("sync", "-c", str(config), "--format", "json")
    assert result.returncode == 1, result.stdout + result.stderr
    rows = {
        r["stack"]: r for r in json_out(run_syncd("status", "-c", str(config), "--format", "json"))
    }
    for key, row in rows.items():
        if key.startswith(OTHER):
            assert row["state"] == "blocked", row
            if key.endswith("/network"):
                assert "AccessDenied" in row["message"], row
                assert "not for you" in row["message"], row
            else:  # its app waits for it
                assert row["message"].startswith(f"waits for stack {key[:-3]}network"), row
        else:
            assert row["state"] == "in_sync", row
    assert len(rows) == 8

    aws.proxy.reset()  # the role can be assumed again: the next sync deploys there too
    result = run_syncd("sync", "-c", str(config), "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    states = {
        r["state"] for r in json_out(run_syncd("status", "-c", str(config), "--format", "json"))
    }
    assert states == {"in_sync"}


def test_credentials_that_reach_another_account_than_configured_deploy_nothing(tmp_path, repo, aws):
    repo.commit(
        {
            "templates/network.yaml": NETWORK,
            "deployments/network.yaml": yaml.safe_dump(
                {"template-file-path": "templates/network.yaml", "parameters": {"Tag": "t"}}
            ),
        }
    )
    # moto's default credentials reach 123456789012; the config says another account.
    entry = {
        "name": "r",
        "url": str(repo.bare),
        "aws": {"region": "eu-west-1", "account_id": "333333333333"},
    }
    config = write_config(tmp_path, [entry], aws.endpoint)
    result = run_syncd("sync", "-c", str(config), "--format", "json")
    assert result.returncode == 1, result.stdout + result.stderr
    [row] = json_out(run_syncd("status", "-c", str(config), "--format", "json"))
    assert row["stack"] == "333333333333/eu-west-1/network"
    assert row["state"] == "blocked"
    assert "reach account 123456789012, not 333333333333" in row["message"]
    assert aws.proxy.count("CreateChangeSet") == 0


def test_an_output_of_another_region_orders_and_reapplies_across_targets(tmp_path, repo, aws):
    """One repo, its app stack set to eu-west-1 (`stacks.app.aws`), reading us-east-1's network
    (`us-east-1/network.VpcId`): one sync applies network first and gives the app its value;
    a new value of that output updates the app in the same sync."""

    def files(tag: str) -> dict[str, str]:
        network = {"template-file-path": "templates/network.yaml", "parameters": {"Tag": tag}}
        app = {
            "template-file-path": "templates/app.yaml",
            "parameters": {"VpcId": {"stack-output": "us-east-1/network.VpcId"}},
        }
        return {
            "templates/network.yaml": NETWORK,
            "templates/app.yaml": APP,
            "deployments/network.yaml": yaml.safe_dump(network),
            "deployments/app.yaml": yaml.safe_dump(app),
        }

    repo.commit(files("t1"))
    entry = {
        "name": "r",
        "url": str(repo.bare),
        "stacks": {"app": {"aws": {"region": "eu-west-1"}}},
    }
    config = write_config(tmp_path, [entry], aws.endpoint)
    assert run_syncd("validate", "-c", str(config)).returncode == 0
    result = run_syncd("sync", "-c", str(config), "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [r["stack"] for r in json_out(result)] == ["eu-west-1/app", "network"]
    assert parameters_at(aws, "eu-west-1", None, "app") == {
        "VpcId": "vpc-us-east-1-123456789012-t1"
    }
    assert parameters_at(aws, "us-east-1", None, "app") is None  # not in the home region

    repo.commit(files("t2"))
    result = run_syncd("sync", "-c", str(config), "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    outcomes = {r["stack"]: r["outcome"] for r in json_out(result)}
    assert outcomes == {"network": "succeeded", "eu-west-1/app": "succeeded"}
    assert parameters_at(aws, "eu-west-1", None, "app") == {
        "VpcId": "vpc-us-east-1-123456789012-t2"
    }


def test_validate_refuses_an_output_read_from_a_place_no_target_reaches(tmp_path, repo, aws):
    app = {
        "template-file-path": "templates/app.yaml",
        "parameters": {"VpcId": {"stack-output": "ap-south-1/network.VpcId"}},
    }
    repo.commit({"templates/app.yaml": APP, "deployments/app.yaml": yaml.safe_dump(app)})
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    result = run_syncd("validate", "-c", str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "error: ap-south-1/network (read by app) is in an account and region no repo or stack "
        "deploys to" in result.stdout
    )
