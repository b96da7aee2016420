"""An execute whose outcome cannot be read (DescribeStacks failing after ExecuteChangeSet, as a
transient AWS or network error would): the stack is not left `applying` without a word. It says
`outcome unknown: ...; looking again by T`, `sync` exits 1 while it lasts, and syncd looks again
(a daemon by T, with no commit and no poll) and records what happened. Against moto's server
behind the fault proxy, which makes the update slow and then fails the looks."""

from __future__ import annotations

import json
import signal

from tests.conftest import deployment, topic_stack, write_config
from tests.e2e.conftest import (
    journal_records,
    json_out,
    run_syncd,
    running_daemon,
    start_syncd,
    wait_for,
)


def kinds(state) -> list[str]:
    return [r["kind"] for r in journal_records(state)]


def status_row(config, stack: str) -> dict:
    rows = json_out(run_syncd("status", "-c", str(config), "--format", "json"))
    return next(r for r in rows if r["stack"] == stack)


def fail_looks_after_the_execute(aws) -> None:
    """Once the update is executing (and slow), every DescribeStacks fails."""
    wait_for(lambda: aws.proxy.count("ExecuteChangeSet") == 1, what="the execute")
    aws.proxy.error("DescribeStacks", 500, "InternalFailure", times=100_000)


def test_sync_says_the_outcome_is_unknown_exits_1_and_the_next_sync_finds_it(tmp_path, repo, aws):
    topic_stack(repo, "app", "v1")
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    aws.proxy.reset()
    repo.commit({"deployments/app.yaml": deployment(Name="v2")})
    aws.proxy.slow("app", polls=3)
    proc = start_syncd("sync", "-c", str(config), "--format", "json")
    fail_looks_after_the_execute(aws)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    rows = {r["stack"]: r for r in json.loads(out)}
    assert rows["app"]["outcome"] == "outcome_unknown"
    row = status_row(config, "app")
    assert row["state"] == "applying"
    assert row["message"].startswith("outcome unknown: DescribeStacks")
    assert "looking again by" in row["message"]
    history = json_out(run_syncd("history", "app", "-c", str(config), "--format", "json"))
    assert history[-1]["result"] == "in_progress"

    aws.proxy.reset()  # the looks answer again
    result = run_syncd("sync", "-c", str(config), "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [r["outcome"] for r in json_out(result)] == ["succeeded"]
    assert aws.proxy.count("ExecuteChangeSet") == 0  # observed, never executed again
    assert status_row(config, "app")["state"] == "in_sync"
    assert aws.parameters("app") == {"Name": "v2"}


def test_a_daemon_looks_again_by_the_time_it_said(tmp_path, repo, aws):
    topic_stack(repo, "app", "v1")
    entry = {"name": "r", "url": str(repo.bare), "poll_interval": "1h"}
    config = write_config(tmp_path, [entry], aws.endpoint)
    state = tmp_path / "state"
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    aws.proxy.reset()
    repo.commit({"deployments/app.yaml": deployment(Name="v2")})
    aws.proxy.slow("app", polls=3)
    with running_daemon("-c", str(config)) as daemon:
        fail_looks_after_the_execute(aws)
        wait_for(lambda: "outcome_unknown" in kinds(state), timeout=60, what="outcome unknown")
        aws.proxy.reset()
        # No commit, no poll (hourly), no signal: the daemon's own look, by the time it said.
        wait_for(lambda: kinds(state)[-1] == "result", timeout=60, what="the result")
        [result] = [r for r in journal_records(state) if r["kind"] == "result"][-1:]
        assert result["data"]["result"] == "succeeded"
        assert aws.proxy.count("ExecuteChangeSet") == 0
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    assert "apply.outcome_unknown" in daemon.stderr_text


def test_a_look_that_fails_before_anything_is_journaled_blocks_and_is_tried_again(
    tmp_path, repo, aws
):
    """The look before a change fails (DescribeStacks, as an AWS outage would): the stack is
    `blocked` with the reason, not left `in_sync` with the old parameters and no pass trying
    again. Found by bench/campaign.py's fault matrix (DescribeStacks with 5xx)."""
    topic_stack(repo, "app", "v1")
    entry = {"name": "r", "url": str(repo.bare), "poll_interval": "200ms"}
    config = write_config(tmp_path, [entry], aws.endpoint)
    state = tmp_path / "state"
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    aws.proxy.reset()
    repo.commit({"deployments/app.yaml": deployment(Name="v2")})
    aws.proxy.error("DescribeStacks", 500, "InternalFailure", times=40)

    def blocked() -> list[dict]:
        return [r for r in journal_records(state) if r["kind"] == "blocked"]

    with running_daemon("-c", str(config)):
        wait_for(blocked, timeout=60, what="the blocked record")
        assert blocked()[0]["data"]["reason"].startswith("could not start: DescribeStacks")
        # The errors run out: a later pass applies the commit. (Wait for its journaled result,
        # not for the stack: moto is updated before the daemon has looked and journaled.)
        wait_for(
            lambda: (
                status_row(config, "app")["state"] == "in_sync"
                and aws.parameters("app") == {"Name": "v2"}
            ),
            timeout=60,
            what="v2 in sync",
        )
