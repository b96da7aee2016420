"""`syncd suspend` and `syncd resume` against moto's server and real Git repos: with and without
a daemon, a whole repo, prune, and stacks that read a suspended stack's outputs."""

from __future__ import annotations

import os
import pwd
import re
import signal

import yaml

from tests.conftest import TOPIC_TEMPLATE, deployment, write_config
from tests.e2e.conftest import journal_records, json_out, run_syncd, running_daemon, wait_for
from tests.e2e.test_daemon import http_get
from tests.support.gitrepo import free_port

USER = pwd.getpwuid(os.getuid()).pw_name


def change_sets(aws, stack: str) -> int:
    return sum(1 for c in aws.proxy.log if c.action == "CreateChangeSet" and c.stack == stack)


def passes(port: int) -> float:
    """Passes the daemon has made, from /metrics (summed over repos)."""
    found = re.findall(r"^syncd_passes_total\{[^}]*\} (\S+)$", http_get(port, "/metrics"), re.M)
    return sum(float(n) for n in found)


def status(config) -> dict[str, dict]:
    result = run_syncd("status", "-c", str(config), "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr  # suspended is not a failure
    return {row["stack"]: row for row in json_out(result)}


def sync(config) -> dict[str, str]:
    result = run_syncd("sync", "-c", str(config), "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    return {row["stack"]: row["outcome"] for row in json_out(result)}


def two_topics(repo, alpha: str = "a1", beta: str = "b1") -> str:
    return repo.commit(
        {
            "templates/topic.yaml": TOPIC_TEMPLATE,
            "deployments/alpha.yaml": deployment(Name=alpha),
            "deployments/beta.yaml": deployment(Name=beta),
        }
    )


def test_a_suspended_stack_is_left_alone_by_sync_until_resumed(tmp_path, repo, aws):
    two_topics(repo)
    repos = [{"name": "r", "url": str(repo.bare), "stack_prefix": "team-"}]
    config = write_config(tmp_path, repos, aws.endpoint)
    assert sync(config) == {"team-alpha": "succeeded", "team-beta": "succeeded"}

    # Without its prefix, as history takes it; with a reason.
    result = run_syncd("suspend", "alpha", "-m", "audit", "-c", str(config), "--format", "json")
    assert result.returncode == 0, result.stderr
    [row] = json_out(result)
    assert (row["stack"], row["repo"], row["result"]) == ("team-alpha", "r", "suspended")
    assert row["message"].startswith(f"suspended by {USER}@") and row["message"].endswith(": audit")

    aws.proxy.reset()
    two_topics(repo, alpha="a2", beta="b2")
    assert sync(config) == {"team-alpha": "suspended", "team-beta": "succeeded"}
    assert (change_sets(aws, "team-alpha"), change_sets(aws, "team-beta")) == (0, 1)
    assert not [c for c in aws.proxy.log if c.stack == "team-alpha"]  # no AWS call at all
    assert aws.parameters("team-alpha") == {"Name": "a1"}
    rows = status(config)
    assert rows["team-alpha"]["state"] == "suspended"
    assert f"by {USER}@" in rows["team-alpha"]["message"]
    assert rows["team-alpha"]["message"].endswith(": audit")
    assert rows["team-beta"]["state"] == "in_sync"
    text = run_syncd("status", "-c", str(config)).stdout
    assert "suspended" in text and "audit" in text

    # A plan still shows the change, and says it waits.
    plan = run_syncd("plan", "-c", str(config), "--format", "json")
    assert plan.returncode == 0, plan.stderr
    planned = {s["stack"]: s for s in json_out(plan)["stacks"]}
    assert planned["team-alpha"]["action"] == "update"
    assert planned["team-alpha"]["message"].startswith(f"suspended (by {USER}@")
    assert not planned["team-beta"]["message"].startswith("suspended")

    aws.proxy.reset()
    result = run_syncd("resume", "team-alpha", "-c", str(config), "--format", "json")
    assert result.returncode == 0, result.stderr
    [row] = json_out(result)
    assert (row["stack"], row["result"], row["outcome"]) == ("team-alpha", "resumed", "succeeded")
    assert aws.parameters("team-alpha") == {"Name": "a2"}
    assert change_sets(aws, "team-alpha") == 1 and change_sets(aws, "team-beta") == 0
    assert {r["state"] for r in status(config).values()} == {"in_sync"}
    kinds = [r["kind"] for r in journal_records(tmp_path / "state")]
    assert kinds.count("suspended") == 1 and kinds.count("resumed") == 1

    # Usage errors: a stack the journal does not know, a repo not in the config, both or none.
    for args in (("nope",), ("--repo", "nope"), ("alpha", "--repo", "r"), ()):
        result = run_syncd("suspend", *args, "-c", str(config))
        assert result.returncode == 2, (args, result.stderr)
    assert "no stack 'nope'" in run_syncd("resume", "nope", "-c", str(config)).stderr

    # Several stacks in one command, named with or without the prefix.
    args = ("-c", str(config), "--format", "json")
    result = run_syncd("suspend", "alpha", "team-beta", "-m", "both", *args)
    assert result.returncode == 0, result.stderr
    assert {(r["stack"], r["result"]) for r in json_out(result)} == {
        ("team-alpha", "suspended"),
        ("team-beta", "suspended"),
    }
    assert {r["state"] for r in status(config).values()} == {"suspended"}
    result = run_syncd("resume", "alpha", "beta", *args)
    assert result.returncode == 0, result.stderr
    assert {(r["stack"], r["result"]) for r in json_out(result)} >= {
        ("team-alpha", "resumed"),
        ("team-beta", "resumed"),
    }
    assert {r["state"] for r in status(config).values()} == {"in_sync"}


def test_with_a_daemon_suspend_and_resume_go_through_requests(tmp_path, repo, aws):
    two_topics(repo)
    entry = {"name": "r", "url": str(repo.bare), "poll_interval": "200ms"}
    port = free_port()
    config = write_config(tmp_path, [entry], aws.endpoint, http={"listen": f"127.0.0.1:{port}"})
    state = tmp_path / "state"

    def applied(stack: str, name: str) -> bool:
        return aws.parameters(stack) == {"Name": name}

    def results(stack: str) -> int:
        records = journal_records(state)
        return sum(1 for r in records if r["kind"] == "result" and r["data"]["stack"] == stack)

    with running_daemon("-c", str(config)) as daemon:
        wait_for(lambda: applied("alpha", "a1") and applied("beta", "b1"), what="first deploy")
        result = run_syncd("suspend", "alpha", "-m", "hold", "-c", str(config), "--format", "json")
        assert result.returncode == 0, result.stderr
        assert [r["result"] for r in json_out(result)] == ["suspended"]  # recorded, not queued
        assert not list((state / "requests").glob("*.json"))

        aws.proxy.reset()
        commit = two_topics(repo, alpha="a2", beta="b2")
        wait_for(lambda: applied("beta", "b2"), what="beta's change")
        seen = [r for r in journal_records(state) if r["kind"] == "commit"]
        assert seen[-1]["data"]["commit"] == commit
        before = passes(port)
        wait_for(lambda: passes(port) >= before + 3, what="three more passes")
        assert change_sets(aws, "alpha") == 0 and applied("alpha", "a1")  # nothing for alpha
        assert 'syncd_stacks{repo="r",state="suspended"} 1.0' in http_get(port, "/metrics")

        alpha_results = results("alpha")
        result = run_syncd("resume", "alpha", "-c", str(config), "--format", "json")
        assert result.returncode == 0, result.stderr
        assert [r["result"] for r in json_out(result)] == ["resumed"]
        wait_for(lambda: applied("alpha", "a2"), what="alpha applied on resume")
        # moto has the parameters before the journal has the result: wait for the result.
        wait_for(lambda: results("alpha") == alpha_results + 1, what="alpha's result")
        assert change_sets(aws, "alpha") == 1
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    assert "request.suspend" in daemon.stderr_text and "request.resume" in daemon.stderr_text
    assert status(config)["alpha"]["state"] == "in_sync"


def test_a_request_no_daemon_answers_is_queued_and_recorded_by_the_next_sync(tmp_path, repo, aws):
    from syncd.journal.store import lock_state_dir

    two_topics(repo)
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    sync(config)
    # Something holds the state that never reads requests (a `syncd sync`): here, this test.
    previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    lock = lock_state_dir(tmp_path / "state")
    try:
        result = run_syncd(
            "suspend", "alpha", "-m", "queued", "-c", str(config), "--format", "json"
        )
    finally:
        lock.close()
        signal.signal(signal.SIGUSR1, previous)
    assert result.returncode == 0, result.stderr
    [row] = json_out(result)
    assert row["result"] == "queued" and "requests" in row["message"]

    aws.proxy.reset()
    two_topics(repo, alpha="a2", beta="b2")
    assert sync(config) == {"alpha": "suspended", "beta": "succeeded"}
    assert change_sets(aws, "alpha") == 0
    assert status(config)["alpha"]["message"].endswith(": queued")
    assert not list((tmp_path / "state" / "requests").glob("*"))


def test_a_repo_suspension_covers_a_stack_added_after_it(tmp_path, repo, aws):
    two_topics(repo)
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    sync(config)
    result = run_syncd("suspend", "--repo", "r", "-m", "release freeze", "-c", str(config))
    assert result.returncode == 0, result.stderr

    aws.proxy.reset()
    repo.commit({"deployments/gamma.yaml": deployment(Name="g1")})
    outcomes = sync(config)
    assert outcomes == {"alpha": "suspended", "beta": "suspended", "gamma": "suspended"}
    assert aws.proxy.count("CreateChangeSet") == 0 and aws.stack("gamma") is None
    assert {r["state"] for r in status(config).values()} == {"suspended"}
    assert "repo r: suspended by" in run_syncd("status", "-c", str(config)).stdout

    result = run_syncd("resume", "--repo", "r", "-c", str(config), "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = {r["stack"]: (r["result"], r["outcome"]) for r in json_out(result)}
    assert rows == {
        None: ("resumed", None),
        "alpha": ("resumed", "in_sync"),
        "beta": ("resumed", "in_sync"),
        "gamma": ("resumed", "succeeded"),
    }
    assert aws.parameters("gamma") == {"Name": "g1"}


def test_a_suspended_stack_whose_file_is_removed_is_not_pruned(tmp_path, repo, aws):
    two_topics(repo)
    entry = {"name": "r", "url": str(repo.bare), "prune": True}
    config = write_config(tmp_path, [entry], aws.endpoint)
    sync(config)
    assert run_syncd("suspend", "alpha", "-c", str(config)).returncode == 0

    aws.proxy.reset()
    repo.commit({"deployments/alpha.yaml": None})
    assert sync(config) == {"alpha": "suspended", "beta": "in_sync"}
    assert aws.proxy.count("DeleteStack") == 0 and aws.stack("alpha") is not None
    assert status(config)["alpha"]["state"] == "suspended"
    records = journal_records(tmp_path / "state")
    since = max(i for i, r in enumerate(records) if r["kind"] == "suspended")
    assert [r["kind"] for r in records[since + 1 :]] == ["commit"]  # nothing for alpha

    # Resumed: Git's state is applied, and Git says it is gone (prune: true).
    result = run_syncd("resume", "alpha", "-c", str(config), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert [(r["stack"], r["outcome"]) for r in json_out(result)] == [("alpha", "succeeded")]
    assert aws.stack("alpha") is None


READER_TEMPLATE = """\
Parameters:
  Upstream:
    Type: String
  Env:
    Type: String
Resources:
  Topic:
    Type: AWS::SNS::Topic
    Properties:
      TopicName: !Sub "${Upstream}-${Env}"
"""


def test_a_stack_reading_a_suspended_stacks_output_gets_the_deployed_one(tmp_path, repo, aws):
    def commit(network: str, env: str) -> None:
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

    commit("net1", "a")
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    sync(config)
    assert aws.parameters("app") == {"Upstream": "net1", "Env": "a"}
    assert run_syncd("suspend", "network", "-c", str(config)).returncode == 0

    aws.proxy.reset()
    commit("net2", "b")  # both change: the reader is applied with the deployed output
    assert sync(config) == {"app": "succeeded", "network": "suspended"}
    assert change_sets(aws, "network") == 0
    assert aws.parameters("app") == {"Upstream": "net1", "Env": "b"}

    # Resumed (no daemon): the repo's pass applies the network, then its reader.
    result = run_syncd("resume", "network", "-c", str(config), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert {r["stack"]: r["outcome"] for r in json_out(result)} == {
        "network": "succeeded",
        "app": "succeeded",
    }
    assert aws.parameters("app") == {"Upstream": "net2", "Env": "b"}
