"""Drift checks in a repo's pass (drift_interval, on_drift), against moto's server behind the
fault proxy, which answers the drift calls for the stacks a test scripts (moto answers 500)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from syncd.apply import Outcome
from syncd.core.journal_state import Kind, StackState, status_rows
from syncd.metrics import Metrics
from tests.conftest import TOPIC_TEMPLATE, deployment, topic_stack
from tests.integration.conftest import Syncd
from tests.support.cfn_proxy import Drifted

SECRET = "hunter2-from-a-noecho-parameter"
TOPIC_DRIFT = Drifted(
    "Topic",
    "AWS::SNS::Topic",
    "MODIFIED",
    (("/TopicName", "NOT_EQUAL", SECRET, "changed-by-hand"), ("/Tags", "ADD", "", SECRET)),
)
GONE = Drifted("Queue", "AWS::SQS::Queue", "DELETED")


def drifting(syncd: Any, repo: Any, **options: Any) -> Syncd:
    """Stack `s` (and any other the repo holds) deployed by a syncd whose defaults check drift
    every hour (and `options`)."""
    topic_stack(repo, "s", "v1")
    s: Syncd = syncd({"r": repo}, defaults={"drift_interval": "1h", **options})
    outcomes = s.sync().outcomes
    assert outcomes["s"] is Outcome.SUCCEEDED and set(outcomes.values()) == {Outcome.SUCCEEDED}
    return s


def records(s: Syncd, kind: Kind) -> list[dict[str, Any]]:
    assert s.app is not None
    return [dict(r.data) for r in s.app.journal.records() if r.kind is kind]


def calls(aws: Any, action: str) -> int:
    return aws.proxy.count(action)


def rows(s: Syncd) -> dict[str, dict[str, Any]]:
    return {r["stack"]: r for r in status_rows(s.state)}


def advance(s: Syncd, by: timedelta) -> None:
    """The repo's clock, `by` ahead of the real one (the journal's times stay real)."""
    s.app.syncs["r"].drift.clock = lambda: datetime.now(UTC) + by


def journal_text(tmp_path: Path) -> str:
    return "".join(p.read_text() for p in sorted((tmp_path / "state" / "journal").glob("*")))


def test_drift_found_shows_the_stack_drifted_with_its_resources(repo, aws, syncd, tmp_path):
    s = drifting(syncd, repo)
    aws.proxy.drift("s", [TOPIC_DRIFT, GONE, Drifted("Other", status="IN_SYNC")])
    with structlog.testing.capture_logs() as logs:
        report = s.sync()
    assert report.ok and report.skipped  # nothing new in Git: only the drift check ran
    [asked] = records(s, Kind.DRIFT_DETECTING)
    [checked] = records(s, Kind.DRIFT_CHECKED)
    assert asked["stack"] == checked["stack"] == "s"
    assert checked["detection"] == asked["detection"]
    assert checked["result"] == "drifted"
    assert [(r["logical_id"], r["status"]) for r in checked["resources"]] == [
        ("Queue", "DELETED"),
        ("Topic", "MODIFIED"),
    ]
    assert checked["resources"][1]["properties"] == [
        {"path": "/Tags", "difference": "ADD"},
        {"path": "/TopicName", "difference": "NOT_EQUAL"},
    ]
    row = rows(s)["s"]
    assert row["state"] == "drifted"
    assert "Topic (AWS::SNS::Topic) modified: /Tags, /TopicName" in row["message"]
    assert "Queue (AWS::SQS::Queue) deleted" in row["message"]
    assert row["last_drift_check"] is not None and row["drift"]["result"] == "drifted"
    assert s.state.stacks["s"].state is StackState.IN_SYNC  # Git's state is still applied
    # Values CloudFormation sent (they can be secrets) are nowhere: journal, status, logs.
    assert SECRET not in journal_text(tmp_path) and SECRET not in str(row) + str(logs)
    # The log line names the drifted resources and, for each, the property paths that differ.
    [logged] = [e for e in logs if e["event"] == "drift.checked"]
    assert (logged["result"], logged["resources"]) == ("drifted", ["Queue", "Topic"])
    assert logged["properties"] == {"Topic": ["/Tags", "/TopicName"]}
    assert logged["more_resources"] is None and logged["more_properties"] is None

    metrics = Metrics(lambda: s.app).render().decode()
    assert 'syncd_drift_checks_total{repo="r",result="drifted"} 1.0' in metrics
    assert 'syncd_drift_checks_total{repo="r",result="unknown"} 0.0' in metrics
    assert 'syncd_stacks{repo="r",state="drifted"} 1.0' in metrics


def test_the_drift_log_line_names_a_few_property_paths_and_counts_the_rest(repo, aws, syncd):
    """Eight resources with 30 differing paths each: the log line names the first five
    resources and, within them, at most five paths each and fifteen in all."""
    s = drifting(syncd, repo)
    paths = tuple((f"/P{i:02d}", "NOT_EQUAL", "", "") for i in range(30))
    aws.proxy.drift("s", [Drifted(f"R{n}", differences=paths) for n in range(8)])
    with structlog.testing.capture_logs() as logs:
        s.sync()
    [logged] = [e for e in logs if e["event"] == "drift.checked"]
    assert logged["resources"] == ["R0", "R1", "R2", "R3", "R4"]
    assert logged["more_resources"] == 3
    first = ["/P00", "/P01", "/P02", "/P03", "/P04"]
    assert logged["properties"] == {"R0": first, "R1": first, "R2": first}
    assert logged["more_properties"] == 5 * 30 - 15  # of the five resources named
    # The stack's drift keeps more: status has every resource and 20 paths of each.
    drift = rows(s)["s"]["drift"]
    assert len(drift["resources"]) == 8 and len(drift["resources"][0]["properties"]) == 20


def test_no_drift_is_in_sync(repo, aws, syncd):
    s = drifting(syncd, repo)
    aws.proxy.drift("s", [Drifted("Topic", status="IN_SYNC")])
    s.sync()
    [checked] = records(s, Kind.DRIFT_CHECKED)
    assert (checked["result"], checked["resources"]) == ("in_sync", [])
    assert rows(s)["s"]["state"] == "in_sync" and rows(s)["s"]["message"] == ""
    assert calls(aws, "DescribeStackResourceDrifts") == 0  # CloudFormation said IN_SYNC


def test_a_detection_that_takes_several_looks_does_not_hold_the_pass(repo, aws, syncd):
    s = drifting(syncd, repo)
    aws.proxy.drift("s", [TOPIC_DRIFT], polls=3)
    report = s.sync()
    assert report.skipped  # the pass ended with the detection under way
    assert len(records(s, Kind.DRIFT_DETECTING)) == 1 and not records(s, Kind.DRIFT_CHECKED)
    assert calls(aws, "DescribeStackDriftDetectionStatus") == 1  # once, at the pass's end
    assert s.state.stacks["s"].drift_detection is not None
    s.sync()
    s.sync()  # each pass looks once more
    assert not records(s, Kind.DRIFT_CHECKED)
    s.sync()
    [checked] = records(s, Kind.DRIFT_CHECKED)
    assert checked["result"] == "drifted"
    assert calls(aws, "DetectStackDrift") == 1  # one detection, looked at four times
    assert calls(aws, "DescribeStackDriftDetectionStatus") == 4


def test_a_detection_under_way_is_taken_up_after_a_restart(repo, aws, syncd):
    s = drifting(syncd, repo)
    aws.proxy.drift("s", [GONE], polls=1)
    s.sync()
    s.restart()
    s.sync()
    [checked] = records(s, Kind.DRIFT_CHECKED)
    assert checked["result"] == "drifted" and calls(aws, "DetectStackDrift") == 1


def test_moto_answering_500_is_unknown_and_the_stack_still_applies(repo, aws, syncd):
    repo.commit(
        {"templates/topic.yaml": TOPIC_TEMPLATE, "deployments/t.yaml": deployment(Name="t1")}
    )
    s = drifting(syncd, repo)  # s and t; only s's drift is scripted: t's goes to moto
    aws.proxy.drift("s", [TOPIC_DRIFT])
    report = s.sync()
    assert report.ok
    checked = {r["stack"]: r for r in records(s, Kind.DRIFT_CHECKED)}
    assert checked["s"]["result"] == "drifted"
    assert checked["t"]["result"] == "unknown" and checked["t"]["detection"] is None
    assert "DetectStackDrift t" in checked["t"]["reason"]
    assert "500" in checked["t"]["reason"]
    t = rows(s)["t"]
    assert t["state"] == "in_sync"  # not failed, not drifted: only said
    assert t["message"].startswith("drift unknown (checked at ")

    repo.commit({"deployments/t.yaml": deployment(Name="t2")})
    assert s.sync().outcomes["t"] is Outcome.SUCCEEDED
    assert aws.parameters("t") == {"Name": "t2"}


def test_a_failed_detection_is_unknown_with_its_reason(repo, aws, syncd):
    s = drifting(syncd, repo)
    aws.proxy.drift("s", status="DETECTION_FAILED", reason="Access denied for Topic")
    s.sync()
    [checked] = records(s, Kind.DRIFT_CHECKED)
    assert checked["result"] == "unknown"
    assert checked["reason"] == "DETECTION_FAILED: Access denied for Topic"
    assert s.state.stacks["s"].state is StackState.IN_SYNC


def test_the_interval_counts_from_the_journal_across_passes_and_restarts(repo, aws, syncd):
    s = drifting(syncd, repo)
    aws.proxy.drift("s", [])
    s.sync()
    s.sync()
    assert calls(aws, "DetectStackDrift") == 1  # an hour has not passed
    advance(s, timedelta(minutes=59))
    s.sync()
    assert calls(aws, "DetectStackDrift") == 1
    advance(s, timedelta(minutes=61))
    s.sync()
    assert calls(aws, "DetectStackDrift") == 2

    s.restart()  # the journal says when it was last asked: not again at once
    s.sync()
    assert calls(aws, "DetectStackDrift") == 2
    advance(s, timedelta(hours=1, seconds=1))
    s.sync()
    assert calls(aws, "DetectStackDrift") == 3


def test_suspended_stacks_and_open_applies_are_not_checked(repo, aws, syncd):
    repo.commit(
        {"templates/topic.yaml": TOPIC_TEMPLATE, "deployments/t.yaml": deployment(Name="t1")}
    )
    s = drifting(syncd, repo)
    s.app.journal.append(Kind.SUSPENDED, repo="r", stack="s", reason="x", by="t@h")
    aws.proxy.reset()
    aws.proxy.drift("s", [TOPIC_DRIFT])
    aws.proxy.drift("t", [TOPIC_DRIFT])
    s.sync()
    assert aws.proxy.detections == ["t"]
    assert not [c for c in aws.proxy.log if c.stack == "s"]  # no call at all for s


def test_a_stack_with_an_apply_open_is_not_looked_at(repo, aws, syncd, tmp_path):
    from syncd.approvals import Approval, Approvals

    def approve() -> None:
        waiting = s.state.stacks["s"].attempt.change_set
        Approvals(tmp_path / "state").request(Approval("s", waiting, "ann@h"))

    topic_stack(repo, "s", "v1")
    s = syncd({"r": repo}, defaults={"drift_interval": "1h", "approval": "manual"})
    assert s.sync().outcomes["s"] is Outcome.AWAITING_APPROVAL
    aws.proxy.drift("s", [TOPIC_DRIFT], polls=1)
    s.sync()
    assert aws.proxy.detections == []  # never deployed: nothing to look at
    approve()
    assert s.sync().outcomes["s"] is Outcome.SUCCEEDED

    repo.commit({"deployments/s.yaml": deployment(Name="v2")})
    assert s.sync().outcomes["s"] is Outcome.AWAITING_APPROVAL
    assert aws.proxy.detections == ["s"]  # asked at the pass's start, before the change set
    looked = calls(aws, "DescribeStackDriftDetectionStatus")
    advance(s, timedelta(hours=2))
    s.sync()
    s.sync()  # its change set waits: no look at the detection, no new one
    assert calls(aws, "DescribeStackDriftDetectionStatus") == looked
    assert aws.proxy.detections == ["s"]
    approve()
    assert s.sync().outcomes["s"] is Outcome.SUCCEEDED
    assert s.state.stacks["s"].drift_detection is None  # from before the change: dropped
    assert not records(s, Kind.DRIFT_CHECKED)


def test_block_holds_a_new_commit_until_the_drift_is_accepted(repo, aws, syncd):
    s = drifting(syncd, repo, on_drift="block")
    aws.proxy.drift("s", [TOPIC_DRIFT])
    assert s.sync().ok
    assert rows(s)["s"]["state"] == "drifted"  # nothing to apply: shown, not blocked yet

    repo.commit({"deployments/s.yaml": deployment(Name="v2")})
    report = s.sync()
    assert report.outcomes == {"s": Outcome.BLOCKED} and not report.ok
    assert calls(aws, "CreateChangeSet") == 1  # the first deploy's only
    assert aws.parameters("s") == {"Name": "v1"}
    row = rows(s)["s"]
    assert row["state"] == "blocked"
    assert "Topic (AWS::SNS::Topic) modified" in row["message"]
    assert "syncd drift accept s -m REASON" in row["message"]
    assert s.sync().outcomes == {"s": Outcome.BLOCKED}
    assert len(records(s, Kind.BLOCKED)) == 1  # said once

    s.app.journal.append(Kind.DRIFT_ACCEPTED, repo="r", stack="s", by="ann@h", reason="hotfix")
    assert s.sync().outcomes == {"s": Outcome.SUCCEEDED}
    assert aws.parameters("s") == {"Name": "v2"}
    assert rows(s)["s"]["state"] == "in_sync" and s.state.stacks["s"].drift is None

    advance(s, timedelta(hours=2))  # a later check finds drift again: held again
    s.sync()
    assert rows(s)["s"]["state"] == "drifted"
    repo.commit({"deployments/s.yaml": deployment(Name="v3")})
    advance(s, timedelta(hours=2, minutes=1))
    assert s.sync().outcomes == {"s": Outcome.BLOCKED}


def test_report_shows_the_drift_and_applies_as_ever(repo, aws, syncd):
    s = drifting(syncd, repo)
    aws.proxy.drift("s", [TOPIC_DRIFT])
    s.sync()
    assert rows(s)["s"]["state"] == "drifted"
    repo.commit({"deployments/s.yaml": deployment(Name="v2")})
    assert s.sync().outcomes == {"s": Outcome.SUCCEEDED}
    assert aws.parameters("s") == {"Name": "v2"}
    assert rows(s)["s"]["state"] == "in_sync"  # the new version overwrote the drift


def test_a_stack_whose_options_turn_checks_off_is_not_checked(repo, aws, syncd):
    topic_stack(repo, "s", "v1")
    s = syncd(
        {"r": repo},
        defaults={"drift_interval": "1h"},
        repo_options={"r": {"stacks": {"s": {"drift_interval": "off"}}}},
    )
    s.sync()
    aws.proxy.drift("s", [TOPIC_DRIFT])
    s.sync()
    assert calls(aws, "DetectStackDrift") == 0


def test_the_detections_under_way_at_once_are_bounded(repo, aws, syncd, monkeypatch):
    from syncd import drift

    monkeypatch.setattr(drift, "DRIFT_UNDER_WAY", 1)
    repo.commit(
        {"templates/topic.yaml": TOPIC_TEMPLATE, "deployments/t.yaml": deployment(Name="t1")}
    )
    s = drifting(syncd, repo)
    aws.proxy.drift("s", [], polls=1)
    aws.proxy.drift("t", [], polls=1)
    s.sync()
    assert len(aws.proxy.detections) == 1  # the other is due too, and waits its turn
    s.sync()
    assert sorted(aws.proxy.detections) == ["s", "t"]
    assert len(records(s, Kind.DRIFT_CHECKED)) == 1
    s.sync()
    assert {r["stack"] for r in records(s, Kind.DRIFT_CHECKED)} == {"s", "t"}
