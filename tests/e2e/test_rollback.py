"""`syncd rollback STACK --to VERSION` against moto's server and a real Git repo: the earlier
version's template and parameters applied again as a new version, the stack suspended so that
`sync` leaves it alone, `resume` back to Git; and what it refuses."""

from __future__ import annotations

import os
import pwd
import shutil

import yaml

from syncd.core.ownership import OWNER_TAG
from tests.conftest import TOPIC_TEMPLATE, deployment, write_config
from tests.e2e.conftest import json_out, run_syncd
from tests.e2e.test_suspend import READER_TEMPLATE

USER = pwd.getpwuid(os.getuid()).pw_name

# The same topic with one more output: which template is deployed shows in the outputs.
TOPIC_WITH_EXTRA = TOPIC_TEMPLATE + "  Extra:\n    Value: extra\n"


def commit(repo, name: str, template: str = TOPIC_TEMPLATE, tags: dict | None = None) -> str:
    app = yaml.safe_load(deployment(Name=name)) | ({"tags": tags} if tags else {})
    return str(
        repo.commit({"templates/topic.yaml": template, "deployments/app.yaml": yaml.safe_dump(app)})
    )


def live_tags(aws, stack: str) -> dict[str, str]:
    """The stack's tags as CloudFormation shows them, syncd's own owner tag left out."""
    tags = {t["Key"]: t["Value"] for t in (aws.stack(stack) or {}).get("Tags", [])}
    assert tags.pop(OWNER_TAG) == "r"
    return tags


def sync(config) -> dict[str, str]:
    result = run_syncd("sync", "-c", str(config), "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    return {row["stack"]: row["outcome"] for row in json_out(result)}


def history(config) -> list[dict]:
    result = run_syncd("history", "app", "-c", str(config), "--format", "json")
    assert result.returncode == 0, result.stderr
    return list(json_out(result))


def rollback(config, *args: str):
    return run_syncd("rollback", *args, "-c", str(config))


def test_rollback_applies_an_earlier_version_and_suspends_the_stack(tmp_path, repo, aws):
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    first = commit(repo, "t1", tags={"team": "a"})
    assert sync(config) == {"app": "succeeded"}
    commit(repo, "t2", TOPIC_WITH_EXTRA, tags={"team": "b", "extra": "x"})
    assert sync(config) == {"app": "succeeded"}
    commit(repo, "t3", TOPIC_WITH_EXTRA, tags={"team": "b", "extra": "x"})
    assert sync(config) == {"app": "succeeded"}
    assert aws.parameters("app") == {"Name": "t3"} and "Extra" in aws.outputs("app")
    assert live_tags(aws, "app") == {"team": "b", "extra": "x"}
    assert [h["version"] for h in history(config)] == [1, 2, 3]

    result = rollback(config, "app", "--to", "1", "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    out = json_out(result)
    assert (out["stack"], out["repo"], out["version"], out["rollback_of"]) == ("app", "r", 4, 1)
    assert (out["outcome"], out["commit"]) == ("succeeded", first)
    # v1's parameter value, v1's template (without the output v2 added) and v1's tags: the
    # tag v2 changed is back, the one v2 added is gone.
    assert aws.parameters("app") == {"Name": "t1"}
    assert "Extra" not in aws.outputs("app")
    assert live_tags(aws, "app") == {"team": "a"}

    rows = history(config)
    assert [(h["version"], h["rollback_of"]) for h in rows] == [
        (1, None),
        (2, None),
        (3, None),
        (4, 1),
    ]
    assert (rows[-1]["action"], rows[-1]["result"], rows[-1]["commit"]) == (
        "update",
        "succeeded",
        first,
    )
    text = run_syncd("history", "-c", str(config)).stdout
    assert "update (rollback to v1)" in text

    status = run_syncd("status", "-c", str(config), "--format", "json")
    assert status.returncode == 0, status.stderr
    [row] = json_out(status)
    assert (row["state"], row["version"]) == ("suspended", 4)
    assert row["message"].startswith(f"suspended by {USER}@")
    assert row["message"].endswith(f": rolled back to version 1 by {USER}@{os.uname().nodename}")

    # A new commit is not applied while the stack is suspended...
    aws.proxy.reset()
    commit(repo, "t4", TOPIC_WITH_EXTRA)
    assert sync(config) == {"app": "suspended"}
    assert not [c for c in aws.proxy.log if c.stack == "app"]
    assert aws.parameters("app") == {"Name": "t1"}

    # ... until it is resumed: then Git's state is applied, as a new version.
    resumed = run_syncd("resume", "app", "-c", str(config), "--format", "json")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert json_out(resumed)[0]["outcome"] == "succeeded"
    assert aws.parameters("app") == {"Name": "t4"} and "Extra" in aws.outputs("app")
    last = history(config)[-1]
    assert (last["version"], last["rollback_of"], last["result"]) == (5, None, "succeeded")


def test_rollback_refuses_unknown_and_deleted_versions(tmp_path, repo, aws):
    entry = {"name": "r", "url": str(repo.bare), "prune": True}
    config = write_config(tmp_path, [entry], aws.endpoint)
    commit(repo, "t1")
    assert sync(config) == {"app": "succeeded"}
    commit(repo, "t2")
    assert sync(config) == {"app": "succeeded"}

    result = rollback(config, "app", "--to", "9")
    assert result.returncode == 2
    assert "app has no version 9; the versions it can roll back to: 1, 2" in result.stderr
    missing = rollback(config, "nope", "--to", "1")
    assert missing.returncode == 2 and "no stack 'nope'" in missing.stderr
    usage = rollback(config, "app")
    assert usage.returncode == 2 and "--to" in usage.stderr

    # Pruned (version 3 deletes it), then made again from version 1.
    repo.commit({"deployments/app.yaml": None})
    assert sync(config) == {"app": "succeeded"}
    assert aws.stack("app") is None
    commit(repo, "t5")
    assert sync(config) == {"app": "succeeded"}
    assert [(h["version"], h["action"]) for h in history(config)] == [
        (1, "create"),
        (2, "update"),
        (3, "delete"),
        (1, "create"),
    ]
    deleted = rollback(config, "app", "--to", "3")
    assert deleted.returncode == 2
    assert "version 3 of app deleted the stack" in deleted.stderr
    before = rollback(config, "app", "--to", "2")
    assert before.returncode == 2
    assert "version 2 of app came before syncd deleted the stack" in before.stderr
    # Nothing was journaled by a refusal: the stack is not suspended.
    status = json_out(run_syncd("status", "-c", str(config), "--format", "json"))
    assert status[0]["state"] == "in_sync"


def test_rollback_refuses_a_commit_gone_from_the_mirror(tmp_path, repo, aws):
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    commit(repo, "t1")
    assert sync(config) == {"app": "succeeded"}
    commit(repo, "t2")
    assert sync(config) == {"app": "succeeded"}
    # The mirror loses v1's commit (a force-push, then gc, would do the same).
    mirror = tmp_path / "state" / "repos" / "r.git"
    shutil.rmtree(mirror)
    result = rollback(config, "app", "--to", "1")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no longer holds" in result.stderr
    assert aws.parameters("app") == {"Name": "t2"}


def test_a_rollback_is_its_own_approval(tmp_path, repo, aws):
    """With `approval: manual`, a new commit waits for `syncd approve`; a rollback does not."""
    entry = {"name": "r", "url": str(repo.bare), "stacks": {"app": {"approval": "manual"}}}
    config = write_config(tmp_path, [entry], aws.endpoint)
    commit(repo, "t1")
    assert sync(config) == {"app": "awaiting_approval"}
    assert run_syncd("approve", "app", "-c", str(config)).returncode == 0
    commit(repo, "t2")
    assert sync(config) == {"app": "awaiting_approval"}
    assert run_syncd("approve", "app", "-c", str(config)).returncode == 0
    assert aws.parameters("app") == {"Name": "t2"}

    result = rollback(config, "app", "--to", "1", "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json_out(result)["outcome"] == "succeeded"
    assert aws.parameters("app") == {"Name": "t1"}
    assert [h["rollback_of"] for h in history(config)][-1] == 1


def test_a_rollback_takes_stack_outputs_as_they_are_now(tmp_path, repo, aws):
    """The reader's version 1 read network's output `net1`; rolled back after network moved
    on to `net2`, it gets `net2`: a rollback resolves `stack-output` as a pass would now."""
    import yaml

    def push(network: str, env: str) -> None:
        reader = {
            "template-file-path": "templates/reader.yaml",
            "parameters": {"Upstream": {"stack-output": "network.TopicName"}, "Env": env},
        }
        repo.commit(
            {
                "templates/topic.yaml": TOPIC_TEMPLATE,
                "templates/reader.yaml": READER_TEMPLATE,
                "deployments/network.yaml": deployment(Name=network),
                "deployments/app.yaml": yaml.safe_dump(reader),
            }
        )

    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    push("net1", "a")
    assert sync(config) == {"network": "succeeded", "app": "succeeded"}
    push("net2", "b")
    assert sync(config) == {"network": "succeeded", "app": "succeeded"}
    assert aws.parameters("app") == {"Upstream": "net2", "Env": "b"}

    result = rollback(config, "app", "--to", "1", "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert aws.parameters("app") == {"Upstream": "net2", "Env": "a"}


# A template moto takes as a change set and refuses at its execute: the version fails.
REFUSED_TEMPLATE = TOPIC_TEMPLATE.replace("!Ref Name", "!GetAtt Nowhere.TopicName")


def test_rollback_refuses_a_failed_version_and_the_embedded_emulator_without_its_daemon(
    tmp_path, repo, aws
):
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    commit(repo, "t1")
    assert sync(config) == {"app": "succeeded"}
    commit(repo, "t2", REFUSED_TEMPLATE)
    failed = run_syncd("sync", "-c", str(config), "--format", "json")
    assert failed.returncode == 1 and json_out(failed)[0]["outcome"] == "failed"

    never = rollback(config, "app", "--to", "2")
    assert never.returncode == 2, never.stdout + never.stderr
    assert "version 2 of app was never applied successfully (failed)" in never.stderr
    assert "the versions it can roll back to: 1" in never.stderr

    # The same state_dir, with the stacks in the embedded emulator that only `syncd run` has.
    embedded = write_config(
        tmp_path, [{"name": "r", "url": str(repo.bare)}], aws={"embedded": True}
    )
    refused = rollback(embedded, "app", "--to", "1")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "embedded emulator, which lives only inside `syncd run`" in refused.stderr
    # Neither refusal journaled anything: the stack is not suspended.
    status = json_out(run_syncd("status", "-c", str(config), "--format", "json"))
    assert status[0]["state"] == "failed"
