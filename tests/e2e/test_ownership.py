"""A repo can change and delete only its own stacks, told by the `syncd:repo` tag that
CloudFormation shows on each stack syncd made: replayed as a repo writer would try it, against
the `syncd` command, moto's server and a real Git repo."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import TOPIC_TEMPLATE, deployment, write_config
from tests.e2e.conftest import run_syncd

OWNER = "syncd:repo"


def make_by_hand(aws: Any, name: str, topic: str, tags: dict[str, str] | None = None) -> None:
    """A stack syncd did not create (another tool, a console user)."""
    aws.cfn.create_stack(
        StackName=name,
        TemplateBody=TOPIC_TEMPLATE,
        Parameters=[{"ParameterKey": "Name", "ParameterValue": topic}],
        Tags=[{"Key": k, "Value": v} for k, v in (tags or {}).items()],
    )


def tags(aws: Any, name: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in (aws.stack(name) or {}).get("Tags", [])}


def status_of(config: Any) -> dict[str, dict[str, Any]]:
    out = run_syncd("status", "--format", "json", "-c", str(config))
    return {row["stack"]: row for row in json.loads(out.stdout)}


def test_a_commit_naming_a_stack_syncd_did_not_create_changes_nothing(tmp_path, repo, aws):
    make_by_hand(aws, "prod-db", "precious")
    make_by_hand(aws, "other-app", "theirs", tags={OWNER: "other"})
    repo.commit(
        {
            "templates/topic.yaml": TOPIC_TEMPLATE,
            "deployments/grab.yaml": "stack-name: prod-db\n" + deployment(Name="hijacked"),
            "deployments/steal.yaml": "stack-name: other-app\n" + deployment(Name="hijacked"),
            "deployments/mine.yaml": deployment(Name="mine"),
        }
    )
    config = write_config(tmp_path, [{"name": "team2", "url": str(repo.bare)}], aws.endpoint)

    plan = run_syncd("plan", "--format", "json", "-c", str(config))
    shown = {s["stack"]: s for s in json.loads(plan.stdout)["stacks"]}
    assert shown["prod-db"]["error"] and "did not create it" in shown["prod-db"]["message"]
    assert (
        shown["other-app"]["error"] and "belongs to repo 'other'" in shown["other-app"]["message"]
    )
    assert shown["mine"]["action"] == "create"

    result = run_syncd("sync", "-c", str(config))
    assert result.returncode != 0
    # Nothing of theirs changed, and no change set was even made for them ...
    assert aws.parameters("prod-db") == {"Name": "precious"}
    assert aws.parameters("other-app") == {"Name": "theirs"}
    made = [c.stack for c in aws.proxy.log if c.action == "CreateChangeSet"]
    assert "prod-db" not in made and "other-app" not in made
    # ... while the repo's own stack was made, tagged as the repo's.
    assert aws.parameters("mine") == {"Name": "mine"}
    assert tags(aws, "mine") == {OWNER: "team2"}
    rows = status_of(config)
    assert rows["prod-db"]["state"] == "blocked"
    assert "adopt: true" in rows["prod-db"]["message"]
    assert rows["other-app"]["state"] == "blocked"
    assert rows["mine"]["state"] == "in_sync"


def test_adopt_true_takes_a_stack_over_and_tags_it(tmp_path, repo, aws):
    make_by_hand(aws, "legacy", "v1", tags={"team": "a"})
    repo.commit(
        {
            "templates/topic.yaml": TOPIC_TEMPLATE,
            "deployments/legacy.yaml": deployment(Name="v2"),
        }
    )
    repos = [{"name": "r", "url": str(repo.bare), "stacks": {"legacy": {"adopt": True}}}]
    config = write_config(tmp_path, repos, aws.endpoint)
    result = run_syncd("sync", "-c", str(config))
    assert result.returncode == 0, result.stderr[-2000:]
    assert aws.parameters("legacy") == {"Name": "v2"}
    assert tags(aws, "legacy")[OWNER] == "r"


def test_prune_deletes_only_a_stack_cloudformation_shows_as_the_repos(tmp_path, repo, aws):
    repo.commit(
        {
            "templates/topic.yaml": TOPIC_TEMPLATE,
            "deployments/a.yaml": deployment(Name="a"),
            "deployments/b.yaml": deployment(Name="b"),
        }
    )
    config = write_config(
        tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint, defaults={"prune": True}
    )
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    # Someone re-tags `b` as another repo's (or the journal claiming it was restored from a
    # backup of another daemon): CloudFormation decides, not the journal.
    aws.cfn.update_stack(
        StackName="b",
        UsePreviousTemplate=True,
        # (moto makes no tag-only update: the parameter changes too)
        Parameters=[{"ParameterKey": "Name", "ParameterValue": "b-theirs"}],
        Tags=[{"Key": OWNER, "Value": "other"}],
    )
    assert tags(aws, "b") == {OWNER: "other"}
    repo.commit({"deployments/a.yaml": None, "deployments/b.yaml": None})

    plan = run_syncd("plan", "--format", "json", "-c", str(config))
    shown = {s["stack"]: s for s in json.loads(plan.stdout)["stacks"]}
    assert shown["a"]["action"] == "delete"
    assert shown["b"]["action"] == "none" and "not pruned" in shown["b"]["message"]

    result = run_syncd("sync", "-c", str(config))
    assert result.returncode != 0
    assert aws.stack("a") is None
    assert aws.stack("b") is not None
    assert not [c for c in aws.proxy.log if c.action == "DeleteStack" and c.stack == "b"]
    rows = status_of(config)
    assert "not pruned" in rows["b"]["message"] and "'other'" in rows["b"]["message"]


def test_a_stack_syncd_deployed_before_it_tagged_stacks_is_still_updated_and_tagged(
    tmp_path, repo, aws
):
    repo.commit(
        {"templates/topic.yaml": TOPIC_TEMPLATE, "deployments/old.yaml": deployment(Name="v1")}
    )
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    aws.cfn.update_stack(  # as an earlier syncd left it: no ownership tag
        StackName="old",
        UsePreviousTemplate=True,
        Parameters=[{"ParameterKey": "Name", "ParameterValue": "v1-by-hand"}],
        Tags=[{"Key": "team", "Value": "a"}],  # (moto keeps the tags when given none)
    )
    assert OWNER not in tags(aws, "old")
    repo.commit({"deployments/old.yaml": deployment(Name="v2")})
    result = run_syncd("sync", "-c", str(config))
    assert result.returncode == 0, result.stderr[-2000:]
    assert aws.parameters("old") == {"Name": "v2"}
    assert tags(aws, "old")[OWNER] == "r"


ROLE_TEMPLATE = """\
Resources:
  Role:
    Type: AWS::IAM::Role
    Properties:
      RoleName: !Sub "${AWS::StackName}-role"
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Principal: {Service: lambda.amazonaws.com}
            Action: sts:AssumeRole
"""


def test_a_template_that_creates_iam_waits_for_the_config_to_allow_it(tmp_path, repo, aws):
    repo.commit(
        {
            "templates/role.yaml": ROLE_TEMPLATE,
            "deployments/fn.yaml": "template-file-path: templates/role.yaml\n",
        }
    )
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    result = run_syncd("sync", "-c", str(config))
    assert result.returncode != 0
    assert aws.proxy.count("CreateChangeSet") == 0  # refused before any call
    row = status_of(config)["fn"]
    assert row["state"] == "blocked"
    assert "CAPABILITY_NAMED_IAM for Role (AWS::IAM::Role with RoleName)" in row["message"]

    allowed = [{"name": "r", "url": str(repo.bare), "capabilities": ["CAPABILITY_NAMED_IAM"]}]
    config = write_config(tmp_path, allowed, aws.endpoint)
    result = run_syncd("sync", "-c", str(config))
    assert result.returncode == 0, result.stderr[-2000:]
    assert aws.stack("fn")["StackStatus"] == "CREATE_COMPLETE"
    assert status_of(config)["fn"]["state"] == "in_sync"


def test_stack_prefix_bounds_the_names_a_repo_may_use(tmp_path, repo, aws):
    make_by_hand(aws, "prod-db", "precious", tags={OWNER: "team2"})  # even tagged as its own
    repo.commit(
        {
            "templates/topic.yaml": TOPIC_TEMPLATE,
            "deployments/grab.yaml": "stack-name: prod-db\n" + deployment(Name="hijacked"),
            "deployments/app.yaml": deployment(Name="app"),
        }
    )
    repos = [{"name": "team2", "url": str(repo.bare), "stack_prefix": "team2-"}]
    config = write_config(tmp_path, repos, aws.endpoint)
    result = run_syncd("sync", "-c", str(config))
    assert result.returncode != 0
    assert aws.parameters("prod-db") == {"Name": "precious"}
    assert aws.parameters("team2-app") == {"Name": "app"}
    row = status_of(config)["prod-db"]
    assert row["state"] == "failed" and "not one of this repo's stacks" in row["message"]
