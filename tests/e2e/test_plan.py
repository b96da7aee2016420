"""`syncd plan` against moto over HTTP and a real Git repo: a branch that changes one stack, adds
one and removes two (one pruned, one left alone), shown in every format, leaving nothing behind."""

from __future__ import annotations

import json

import yaml

from tests.conftest import TOPIC_TEMPLATE, deployment, write_config
from tests.e2e.conftest import json_out, run_syncd
from tests.support.gitrepo import git

SECRET_TEMPLATE = """\
Parameters:
  Name:
    Type: String
  Token:
    Type: String
    NoEcho: true
Resources:
  Topic:
    Type: AWS::SNS::Topic
    Properties:
      TopicName: !Ref Name
"""


def setup(tmp_path, repo, aws):
    repo.commit(
        {
            "templates/topic.yaml": TOPIC_TEMPLATE,
            "templates/secret.yaml": SECRET_TEMPLATE,
            "deployments/app.yaml": yaml.safe_dump(
                {
                    "template-file-path": "templates/secret.yaml",
                    "parameters": {"Name": "app-v1", "Token": "hunter2"},
                    "tags": {"team": "a"},
                }
            ),
            "deployments/old.yaml": deployment(Name="old"),
            "deployments/kept.yaml": deployment(Name="kept"),
        }
    )
    config = write_config(
        tmp_path,
        [
            {
                "name": "r",
                "url": str(repo.bare),
                "stacks": {"old": {"prune": True}},
            }
        ],
        aws.endpoint,
    )
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    git("checkout", "--quiet", "-b", "feature", cwd=repo.work)
    repo.write(
        {
            "deployments/app.yaml": yaml.safe_dump(
                {
                    "template-file-path": "templates/secret.yaml",
                    "parameters": {"Name": "app-v2", "Token": "hunter3"},
                    "tags": {"team": "b"},
                }
            ),
            "deployments/cache.yaml": deployment(Name="cache"),
            "deployments/old.yaml": None,
            "deployments/kept.yaml": None,
        }
    )
    git("add", "--all", cwd=repo.work)
    git("commit", "--quiet", "-m", "feature", cwd=repo.work)
    git("push", "--quiet", "origin", "feature", cwd=repo.work)
    return config


def test_a_plan_shows_every_kind_of_change_and_leaves_nothing_behind(tmp_path, repo, aws):
    config = setup(tmp_path, repo, aws)
    journal_before = sorted((tmp_path / "state" / "journal").glob("segment-*"))[-1].read_bytes()
    aws.proxy.reset()

    result = run_syncd(
        "plan", "--ref", "feature", "--format", "json", "--detailed-exitcode", "-c", str(config)
    )
    assert result.returncode == 2, result.stderr
    plan = json_out(result)
    assert plan["ref"] == "feature" and len(plan["commit"]) == 40
    by_stack = {s["stack"]: s for s in plan["stacks"]}
    assert {name: s["action"] for name, s in by_stack.items()} == {
        "app": "update",
        "cache": "create",
        "old": "delete",
        "kept": "none",
    }
    assert {"action": "Add", "logical_id": "Topic", "type": "AWS::SNS::Topic"}.items() <= (
        by_stack["cache"]["changes"][0].items()
    )
    assert [c["action"] for c in by_stack["old"]["changes"]] == ["Remove"]
    assert "left alone" in by_stack["kept"]["message"]
    params = {p["key"]: (p["old"], p["new"]) for p in by_stack["app"]["parameters"]}
    assert params["Name"] == ("app-v1", "app-v2")
    assert by_stack["app"]["tags"] == [{"key": "team", "old": "a", "new": "b"}]
    assert "hunter" not in result.stdout  # NoEcho values are never shown

    # Never executed, nothing left behind, no version written.
    assert aws.proxy.count("ExecuteChangeSet") == 0
    assert aws.proxy.count("CreateChangeSet") == 2  # app and cache; old and kept need none
    assert aws.proxy.count("DeleteChangeSet") == 2
    for stack in ("app", "old", "kept"):  # (moto keeps executed change sets; AWS does not)
        names = [c["ChangeSetName"] for c in aws.cfn.list_change_sets(StackName=stack)["Summaries"]]
        assert not [n for n in names if n.startswith("syncd-plan-")], names
    assert aws.stack("cache") is None  # the CREATE change set's stack was removed
    assert aws.parameters("app")["Name"] == "app-v1"
    journal_after = sorted((tmp_path / "state" / "journal").glob("segment-*"))[-1].read_bytes()
    assert journal_after == journal_before

    markdown = run_syncd("plan", "--ref", "feature", "--format", "markdown", "-c", str(config))
    assert markdown.returncode == 0, markdown.stderr
    text = markdown.stdout
    assert text.startswith("### syncd plan: `r` at `feature`")
    assert "1 to create, 1 to update, 1 to delete, 1 unchanged" in text
    assert "| `cache` | + create |" in text and "<details>" in text
    assert "hunter" not in text

    plain = run_syncd("plan", "--ref", "feature", "-c", str(config))
    assert plain.returncode == 0 and "~ app: update" in plain.stdout

    same = run_syncd("plan", "--detailed-exitcode", "-c", str(config), "--format", "json")
    assert same.returncode == 0, same.stdout  # main itself: nothing would change
    assert {s["action"] for s in json.loads(same.stdout)["stacks"]} == {"none"}


def test_a_plan_with_a_broken_file_says_which_and_exits_1(tmp_path, repo, aws):
    config = setup(tmp_path, repo, aws)
    repo.write({"deployments/cache.yaml": "template-file-path: [oops\n"})
    git("commit", "--quiet", "-am", "broken", cwd=repo.work)
    git("push", "--quiet", "origin", "feature", cwd=repo.work)
    result = run_syncd("plan", "--ref", "feature", "--detailed-exitcode", "-c", str(config))
    assert result.returncode == 1
    assert "! cache: none - deployments/cache.yaml:" in result.stdout


def test_a_plan_without_the_journal_still_sees_the_stacks_a_ref_removes(tmp_path, repo, aws):
    config = setup(tmp_path, repo, aws)
    ci = tmp_path / "ci"
    ci.mkdir()
    doc = yaml.safe_load(config.read_text())
    doc["state_dir"] = str(ci / "state")  # a CI runner: no journal at all
    ci_config = ci / "syncd.yaml"
    ci_config.write_text(yaml.safe_dump(doc))
    result = run_syncd(
        "plan", "--ref", "feature", "--format", "json", "--detailed-exitcode", "-c", str(ci_config)
    )
    assert result.returncode == 2, result.stderr
    actions = {s["stack"]: s["action"] for s in json_out(result)["stacks"]}
    assert actions == {"app": "update", "cache": "create", "old": "delete", "kept": "none"}
    assert aws.stack("old")["StackStatus"] == "CREATE_COMPLETE"  # shown, never done
