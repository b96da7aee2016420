"""Drift checks through the `syncd` command: `sync` with drift_interval against the fault proxy
(which answers the drift calls moto lacks), `status`, `on_drift: block` and `syncd drift
accept`, with and without a daemon."""

from __future__ import annotations

import os
import pwd
import signal

from syncd.journal.store import lock_holder
from tests.conftest import topic_stack, write_config
from tests.e2e.conftest import journal_records, json_out, run_syncd, running_daemon, wait_for
from tests.support.cfn_proxy import Drifted

USER = pwd.getpwuid(os.getuid()).pw_name
SECRET = "s3cret-value-from-a-noecho-parameter"
DRIFT = [
    Drifted("Topic", "AWS::SNS::Topic", "MODIFIED", (("/TopicName", "NOT_EQUAL", SECRET, "x"),))
]


def sync(config, code: int = 0) -> dict[str, dict]:
    result = run_syncd("sync", "-c", str(config), "--format", "json")
    assert result.returncode == code, result.stdout + result.stderr
    return {row["stack"]: row for row in json_out(result)}


def status(config, code: int = 0) -> dict[str, dict]:
    result = run_syncd("status", "-c", str(config), "--format", "json")
    assert result.returncode == code, result.stdout + result.stderr
    return {row["stack"]: row for row in json_out(result)}


def change_sets(aws, stack: str) -> int:
    return sum(1 for c in aws.proxy.log if c.action == "CreateChangeSet" and c.stack == stack)


def test_block_holds_a_drifted_stack_until_drift_accept(tmp_path, repo, aws):
    topic_stack(repo, "alpha", "a1")
    entry = {"name": "r", "url": str(repo.bare), "on_drift": "block"}
    config = write_config(tmp_path, [entry], aws.endpoint, defaults={"drift_interval": "1h"})
    assert sync(config)["alpha"]["outcome"] == "succeeded"

    aws.proxy.drift("alpha", DRIFT)
    sync(config)  # the check is due: asked for, and read at the pass's end
    row = status(config)["alpha"]
    assert row["state"] == "drifted"
    assert "Topic (AWS::SNS::Topic) modified: /TopicName" in row["message"]
    assert row["drift"]["resources"][0]["properties"] == [
        {"path": "/TopicName", "difference": "NOT_EQUAL"}
    ]
    assert row["last_drift_check"] == row["drift"]["checked_at"]

    aws.proxy.reset()
    topic_stack(repo, "alpha", "a2")
    rows = sync(config, code=1)
    assert rows["alpha"]["outcome"] == "blocked"
    assert "syncd drift accept alpha -m REASON" in rows["alpha"]["message"]
    assert change_sets(aws, "alpha") == 0 and aws.parameters("alpha") == {"Name": "a1"}
    row = status(config, code=1)["alpha"]
    assert row["state"] == "blocked" and "drifted outside syncd" in row["message"]
    text = run_syncd("status", "-c", str(config))
    assert text.returncode == 1 and "syncd drift accept alpha" in text.stdout

    # Refused, exit 2: no reason, a stack the journal does not know.
    assert run_syncd("drift", "accept", "alpha", "-c", str(config)).returncode == 2
    unknown = run_syncd("drift", "accept", "nope", "-m", "x", "-c", str(config))
    assert unknown.returncode == 2 and "no stack 'nope'" in unknown.stderr

    result = run_syncd(
        "drift", "accept", "alpha", "-m", "the fix is in Git", "-c", str(config), "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    [accepted] = json_out(result)
    assert (accepted["stack"], accepted["result"]) == ("alpha", "accepted")
    assert f"accepted by {USER}@" in accepted["message"]
    assert accepted["message"].endswith(": the fix is in Git")
    [record] = [r for r in journal_records(tmp_path / "state") if r["kind"] == "drift_accepted"]
    assert record["data"]["by"].startswith(f"{USER}@")
    assert record["data"]["reason"] == "the fix is in Git"

    assert sync(config)["alpha"]["outcome"] == "succeeded"
    assert aws.parameters("alpha") == {"Name": "a2"} and change_sets(aws, "alpha") == 1
    row = status(config)["alpha"]
    assert (row["state"], row["drift"]) == ("in_sync", None)
    again = run_syncd("drift", "accept", "alpha", "-m", "x", "-c", str(config))
    assert again.returncode == 2 and "no drift to accept" in again.stderr
    journal = (tmp_path / "state" / "journal" / "segment-000000000001.jsonl").read_text()
    assert SECRET not in journal


def test_report_shows_the_drift_and_applies(tmp_path, repo, aws):
    topic_stack(repo, "alpha", "a1")
    entry = {"name": "r", "url": str(repo.bare), "drift_interval": "1h"}
    config = write_config(tmp_path, [entry], aws.endpoint)
    sync(config)
    aws.proxy.drift("alpha", DRIFT)
    sync(config)
    row = status(config)["alpha"]
    assert row["state"] == "drifted" and row["drift"]["result"] == "drifted"
    # `show` of the deployed version shows it too: the resource and the property path, never
    # the value.
    shown = run_syncd("show", "alpha", "--no-events", "-c", str(config), "--format", "json")
    assert shown.returncode == 0, shown.stderr
    drift = json_out(shown)["drift"]
    assert drift["result"] == "drifted" and drift["resources"][0]["logical_id"] == "Topic"
    text = run_syncd("show", "alpha", "--no-events", "-c", str(config)).stdout
    assert "drift (last checked at" in text and "/TopicName (NOT_EQUAL)" in text
    assert SECRET not in shown.stdout + text

    topic_stack(repo, "alpha", "a2")
    assert sync(config)["alpha"]["outcome"] == "succeeded"
    assert aws.parameters("alpha") == {"Name": "a2"}
    assert status(config)["alpha"]["state"] == "in_sync"


def test_moto_answering_500_shows_drift_unknown(tmp_path, repo, aws):
    topic_stack(repo, "alpha", "a1")
    entry = {"name": "r", "url": str(repo.bare), "drift_interval": "1h"}
    config = write_config(tmp_path, [entry], aws.endpoint)
    sync(config)
    sync(config)  # nothing scripted: moto's 500
    row = status(config)["alpha"]
    assert row["state"] == "in_sync"
    assert row["message"].startswith("drift unknown") and "DetectStackDrift" in row["message"]
    refused = run_syncd("drift", "accept", "alpha", "-m", "x", "-c", str(config))
    assert refused.returncode == 2 and "could not say" in refused.stderr


def test_with_a_daemon_drift_accept_goes_through_a_request(tmp_path, repo, aws):
    topic_stack(repo, "alpha", "a1")
    entry = {"name": "r", "url": str(repo.bare), "poll_interval": "200ms", "on_drift": "block"}
    config = write_config(tmp_path, [entry], aws.endpoint, defaults={"drift_interval": "1h"})
    state = tmp_path / "state"
    aws.proxy.drift("alpha", DRIFT)

    def kinds() -> list[str]:
        return [r["kind"] for r in journal_records(state)]

    with running_daemon("-c", str(config)) as daemon:
        wait_for(lambda: "drift_checked" in kinds(), what="the first drift check")
        topic_stack(repo, "alpha", "a2")
        wait_for(lambda: "blocked" in kinds(), what="the new commit held")
        assert aws.parameters("alpha") == {"Name": "a1"}

        result = run_syncd(
            "drift", "accept", "alpha", "-m", "ok", "-c", str(config), "--format", "json"
        )
        assert result.returncode == 0, result.stderr
        assert [r["result"] for r in json_out(result)] == ["accepted"]  # recorded, not queued
        wait_for(lambda: aws.parameters("alpha") == {"Name": "a2"}, what="alpha applied")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    assert "request.drift_accept" in daemon.stderr_text
    assert "drift.checked" in daemon.stderr_text


def test_a_rollback_waits_for_drift_accept_as_any_apply_does(tmp_path, repo, aws):
    """Standalone, then the same refusal from a running daemon (the rollback is its ask)."""
    topic_stack(repo, "alpha", "a1")
    entry = {"name": "r", "url": str(repo.bare), "on_drift": "block", "poll_interval": "1h"}
    config = write_config(tmp_path, [entry], aws.endpoint)  # no checks while it is built
    assert sync(config)["alpha"]["outcome"] == "succeeded"
    topic_stack(repo, "alpha", "a2")
    assert sync(config)["alpha"]["outcome"] == "succeeded"
    aws.proxy.drift("alpha", DRIFT)
    config = write_config(tmp_path, [entry], aws.endpoint, defaults={"drift_interval": "1h"})
    sync(config)
    assert status(config)["alpha"]["state"] == "drifted"
    aws.proxy.reset()

    def refused_rollback() -> str:
        refused = run_syncd("rollback", "alpha", "--to", "1", "-c", str(config))
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "cannot roll alpha back now: drifted outside syncd" in refused.stderr
        assert "syncd drift accept alpha -m REASON" in refused.stderr
        assert change_sets(aws, "alpha") == 0 and aws.parameters("alpha") == {"Name": "a2"}
        assert status(config)["alpha"]["state"] == "drifted"  # not suspended either
        return refused.stderr

    assert "asking the running daemon" not in refused_rollback()
    with running_daemon("-c", str(config)) as daemon:
        wait_for(lambda: lock_holder(tmp_path / "state").held, what="the daemon's lock")
        assert "asking the running daemon" in refused_rollback()
        accept = run_syncd("drift", "accept", "alpha", "-m", "rolling back", "-c", str(config))
        assert accept.returncode == 0, accept.stderr
        done = run_syncd("rollback", "alpha", "--to", "1", "-c", str(config))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "asking the running daemon" in done.stderr
        assert aws.parameters("alpha") == {"Name": "a1"}
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    assert status(config)["alpha"]["state"] == "suspended"
