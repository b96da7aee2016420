"""`syncd show STACK` against moto's server and a real Git repo: one version's change set,
parameters and tags before and after, template diff and events; with approval waiting, with
secrets, beside a running daemon, and with CloudFormation or the Git mirror out of reach."""

from __future__ import annotations

import shlex
import shutil
import signal

import yaml

from tests.conftest import TOPIC_TEMPLATE, write_config
from tests.e2e.conftest import REPO_ROOT, json_out, own_port, run_syncd, running_daemon, wait_for
from tests.support.gitrepo import git

# Version 2 adds a queue to the topic's template.
WITH_QUEUE = TOPIC_TEMPLATE.replace("Outputs:\n", "  Queue:\n    Type: AWS::SQS::Queue\nOutputs:\n")

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


def app_file(name: str, tags: dict[str, str] | None = None, **more: str) -> str:
    doc: dict[str, object] = {
        "template-file-path": "templates/topic.yaml",
        "parameters": {"Name": name, **more},
    }
    if tags:
        doc["tags"] = tags
    return yaml.safe_dump(doc)


def two_versions(tmp_path, repo, aws, **entry):
    """`team-app` created from one commit, then updated by a second: its parameter changed,
    a tag added, a resource added."""
    repos = [{"name": "r", "url": str(repo.bare), "stack_prefix": "team-", **entry}]
    config = write_config(tmp_path, repos, aws.endpoint)
    first = repo.commit(
        {"templates/topic.yaml": TOPIC_TEMPLATE, "deployments/app.yaml": app_file("t1")}
    )
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    second = repo.commit(
        {
            "templates/topic.yaml": WITH_QUEUE,
            "deployments/app.yaml": app_file("t2", {"team": "platform"}),
        }
    )
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    return config, first, second


def show(config, *args: str):
    return run_syncd("show", *args, "-c", str(config))


def section(text: str, title: str) -> list[str]:
    """The lines of one part of the text output, from its title to the blank line after it."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    end = next((i for i in range(start, len(lines)) if not lines[i]), len(lines))
    return lines[start + 1 : end]


def cells(line: str) -> list[str]:
    return line.split()


def test_show_the_latest_version_of_a_stack_updated_by_a_second_commit(tmp_path, repo, aws):
    config, first, second = two_versions(tmp_path, repo, aws)

    result = show(config, "app")  # without the repo's stack_prefix
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("team-app version 2 (repo r)\n")
    head = section(text, "team-app version 2")
    assert head[:5] == [
        "  action           update",
        f"  commit           {second}",
        "  deployment file  deployments/app.yaml",
        "  template file    templates/topic.yaml",
        "  result           succeeded (UPDATE_COMPLETE)",
    ]
    assert "awaiting approval" not in text

    changes = section(text, "resource changes (1)")
    assert cells(changes[0]) == ["ACTION", "LOGICAL", "ID", "TYPE", "REPLACEMENT", "SCOPE"]
    assert cells(changes[1]) == ["Add", "Queue", "AWS::SQS::Queue", "-", "-"]
    assert cells(section(text, "parameters (version 1 -> version 2)")[1]) == [
        "Name",
        "t1",
        "t2",
        "changed",
    ]
    assert cells(section(text, "tags (version 1 -> version 2)")[1]) == [
        "team",
        "(none)",
        "platform",
        "added",
    ]
    diff = section(text, "template diff (")
    assert diff[:2] == ["--- a/templates/topic.yaml", "+++ b/templates/topic.yaml"]
    assert [line for line in diff if line[:1] in "+-" and line[:3] not in ("---", "+++")] == [
        "+  Queue:",
        "+    Type: AWS::SQS::Queue",
    ]
    assert f"version 1 at {first[:12]}" in text and f"version 2 at {second[:12]}" in text
    events = section(text, "events (")
    assert cells(events[0])[:2] == ["TIME", "LOGICAL"]
    assert [cells(e)[1:4] for e in events[1:]] == [
        ["team-app", "AWS::CloudFormation::Stack", "UPDATE_IN_PROGRESS"],
        ["team-app", "AWS::CloudFormation::Stack", "UPDATE_COMPLETE"],
    ]

    out = json_out(show(config, "team-app", "--format", "json"))
    assert set(out) == {
        "stack", "repo", "version", "commit", "action", "deployment_file", "template_file",
        "result", "stack_status", "message", "started_at", "executing_at", "finished_at",
        "rollback_of", "change_set", "awaiting_approval", "approve", "approved_by", "changes",
        "before", "parameters", "tags", "template", "events", "drift",
    }  # fmt: skip
    assert (out["stack"], out["version"], out["commit"], out["result"]) == (
        "team-app",
        2,
        second,
        "succeeded",
    )
    assert out["change_set"]["name"].startswith("syncd-v2-")
    assert out["change_set"]["arn"].split("/")[-2] == out["change_set"]["name"]
    assert out["changes"] == [
        {
            "action": "Add",
            "logical_id": "Queue",
            "type": "AWS::SQS::Queue",
            "replacement": None,
            "scope": [],
        }
    ]
    assert out["before"] == {"version": 1, "commit": first}
    assert out["parameters"] == [
        {"key": "Name", "before": "t1", "after": "t2", "change": "changed"}
    ]
    assert out["tags"] == [{"key": "team", "before": None, "after": "platform", "change": "added"}]
    template = out["template"]
    assert template["before"] == {"version": 1, "commit": first, "file": "templates/topic.yaml"}
    assert template["after"] == {"version": 2, "commit": second, "file": "templates/topic.yaml"}
    assert "+    Type: AWS::SQS::Queue" in template["diff"]
    assert (template["more_lines"], template["note"]) == (0, None)
    # The window: from the execute to the result, a second wider each way for the clocks'
    # difference, but never back over version 1's apply (whose events are not shown).
    v1 = json_out(show(config, "app", "--version", "1", "--format", "json"))
    assert v1["finished_at"] <= out["events"]["since"] < out["executing_at"]
    assert out["finished_at"] < out["events"]["until"]
    assert [e["status"] for e in out["events"]["events"]] == [
        "UPDATE_IN_PROGRESS",
        "UPDATE_COMPLETE",
    ]
    assert out["events"]["note"] is None


def test_show_an_earlier_version_and_refuse_an_unknown_one(tmp_path, repo, aws):
    config, first, _ = two_versions(tmp_path, repo, aws)

    out = json_out(show(config, "app", "--version", "1", "--format", "json"))
    assert (out["version"], out["action"], out["commit"], out["before"]) == (
        1,
        "create",
        first,
        None,
    )
    assert out["parameters"] == [{"key": "Name", "before": None, "after": "t1", "change": "added"}]
    assert out["tags"] == []
    diff = out["template"]["diff"]
    assert diff[:2] == ["--- /dev/null", "+++ b/templates/topic.yaml"]
    assert "+      TopicName: !Ref Name" in diff
    assert "CREATE_COMPLETE" in [e["status"] for e in out["events"]["events"]]
    assert "UPDATE_COMPLETE" not in [e["status"] for e in out["events"]["events"]]

    text = show(config, "app", "--version", "1").stdout
    assert text.startswith("team-app version 1 (repo r)\n")
    assert "parameters (nothing deployed before)" in text

    unknown = show(config, "app", "--version", "9")
    assert unknown.returncode == 2
    assert "team-app has no version 9; its versions: 1, 2" in unknown.stderr
    assert unknown.stdout == ""
    nobody = show(config, "nope")
    assert nobody.returncode == 2
    assert "no stack 'nope' in the journal (it knows team-app)" in nobody.stderr
    typo = show(config, "ap")  # close to a name it knows, prefix or not
    assert typo.returncode == 2
    assert "no stack 'ap' in the journal (did you mean 'app'?)" in typo.stderr


def test_a_stack_syncd_deleted_shows_its_delete_and_its_events(tmp_path, repo, aws):
    config, _, second = two_versions(tmp_path, repo, aws, prune=True)
    repo.commit({"deployments/app.yaml": None})
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    assert aws.stack("team-app") is None

    out = json_out(show(config, "app", "--format", "json"))  # known by its history only
    assert (out["version"], out["action"], out["result"]) == (3, "delete", "succeeded")
    assert out["before"] == {"version": 2, "commit": second}
    assert [p["change"] for p in out["parameters"]] == ["removed"]
    assert out["template"]["note"] == "this version deletes the stack"
    assert out["template"]["after"] is None and out["template"]["before"]["version"] == 2
    statuses = [e["status"] for e in out["events"]["events"]]
    assert statuses[-1] == "DELETE_COMPLETE" and "UPDATE_COMPLETE" not in statuses


def test_noecho_values_show_as_stars_and_never_appear(tmp_path, repo, aws):
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    secret = {"templates/topic.yaml": SECRET_TEMPLATE}
    repo.commit({**secret, "deployments/app.yaml": app_file("s1", Token="hunter2")})
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    repo.commit({"deployments/app.yaml": app_file("s2", Token="correct-horse")})
    assert run_syncd("sync", "-c", str(config)).returncode == 0

    text = show(config, "app")
    as_json = show(config, "app", "--format", "json")
    for result in (text, as_json):
        assert result.returncode == 0, result.stderr
        assert "hunter2" not in result.stdout and "correct-horse" not in result.stdout
    rows = {cells(line)[0]: cells(line)[1:] for line in section(text.stdout, "parameters (")[1:]}
    assert rows["Token"] == ["****", "****", "not", "compared", "(NoEcho)"]
    assert rows["Name"] == ["s1", "s2", "changed"]
    params = {p["key"]: p for p in json_out(as_json)["parameters"]}
    assert params["Token"] == {
        "key": "Token",
        "before": "****",
        "after": "****",
        "change": "not_compared",
    }


def test_a_version_waiting_for_approval_shows_the_command_that_approves_it(tmp_path, repo, aws):
    repos = [{"name": "r", "url": str(repo.bare), "stack_prefix": "team-", "approval": "manual"}]
    config = write_config(tmp_path, repos, aws.endpoint)
    repo.commit({"templates/topic.yaml": TOPIC_TEMPLATE, "deployments/app.yaml": app_file("t1")})
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    status = json_out(run_syncd("status", "-c", str(config), "--format", "json"))
    assert status[0]["state"] == "awaiting_approval"

    out = json_out(show(config, "app", "--format", "json"))
    assert out["awaiting_approval"] is True and out["result"] == "awaiting_approval"
    name = out["change_set"]["name"]
    assert out["approve"] == f"syncd approve team-app --change-set {name}"
    assert out["events"]["events"] == [] and "waits for approval" in out["events"]["note"]
    text = show(config, "app").stdout
    assert f"  awaiting approval: run `syncd approve team-app --change-set {name}`" in text

    # The command shown is the one that works.
    approved = run_syncd(*shlex.split(out["approve"])[1:], "-c", str(config))
    assert approved.returncode == 0, approved.stdout + approved.stderr
    after = json_out(show(config, "app", "--version", str(out["version"]), "--format", "json"))
    assert (after["result"], after["approve"]) == ("succeeded", None)
    assert after["approved_by"]
    assert [e["status"] for e in after["events"]["events"]][-1].endswith("_COMPLETE")


def test_show_says_what_it_cannot_read_and_shows_the_rest(tmp_path, repo, aws):
    config, _, _ = two_versions(tmp_path, repo, aws)

    skipped = json_out(show(config, "app", "--no-events", "--format", "json"))
    assert skipped["events"]["events"] == []
    assert skipped["events"]["note"] == "not read (--no-events)"
    assert skipped["template"]["diff"]  # the rest is there

    # CloudFormation out of reach: nothing listens on that port.
    doc = yaml.safe_load(config.read_text())
    doc["aws"]["endpoint_url"] = "http://127.0.0.1:9"
    config.write_text(yaml.safe_dump(doc))
    unreachable = show(config, "app")
    assert unreachable.returncode == 0, unreachable.stderr
    note = section(unreachable.stdout, "events (")[0]
    assert note.startswith("  CloudFormation could not be read: DescribeStackEvents")
    assert cells(section(unreachable.stdout, "parameters (")[1]) == ["Name", "t1", "t2", "changed"]

    # The mirror lost the commits (a force-push and a gc): said plainly, not a crash.
    mirror = tmp_path / "state" / "repos" / "r.git"
    shutil.rmtree(mirror)
    lost = show(config, "app", "--no-events")
    assert lost.returncode == 0, lost.stderr
    assert f"there is no Git mirror of repo 'r' in {tmp_path / 'state'}" in lost.stdout
    git("init", "--quiet", "--bare", str(mirror), cwd=tmp_path)
    gone = json_out(show(config, "app", "--no-events", "--format", "json"))
    assert gone["template"]["diff"] == []
    assert "is gone from the mirror of repo 'r' (a force-push?)" in gone["template"]["note"]


def test_show_beside_a_running_daemon_on_the_embedded_emulator(tmp_path):
    shutil.copytree(REPO_ROOT / "config", tmp_path / "config")
    shutil.copytree(REPO_ROOT / "examples", tmp_path / "examples")
    config = str(own_port(tmp_path / "config" / "local.yaml"))

    def deployed() -> bool:
        rows = json_out(run_syncd("status", "-c", config, "--format", "json"))
        return len(rows) == 2 and {r["state"] for r in rows} == {"in_sync"}

    with running_daemon("-c", config) as daemon:
        wait_for(deployed, what="the sample deployed")
        result = run_syncd("show", "app", "-c", config, "--format", "json")  # no lock needed
        assert result.returncode == 0, result.stderr
        out = json_out(result)
        assert (out["stack"], out["version"], out["action"]) == ("demo-app", 1, "create")
        assert "CREATE_COMPLETE" in [e["status"] for e in out["events"]["events"]]
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    stopped = run_syncd("show", "app", "-c", config, "--format", "json")
    assert stopped.returncode == 0, stopped.stderr
    out = json_out(stopped)
    assert out["events"]["events"] == []
    assert "the emulator inside `syncd run`, which is not running" in out["events"]["note"]
    assert out["template"]["diff"][0] == "--- /dev/null"
