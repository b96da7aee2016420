"""Drift checks in the pure core: the two stack options in the config (syncd.core.config), the
records a check journals folded into `status` (syncd.core.journal_state), and how a check's
findings are bounded before they reach the journal."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from syncd.core.config import OnDrift, StackOptions, parse_config
from syncd.core.journal_state import (
    DRIFT_PROPERTIES,
    DRIFT_RESOURCES,
    DriftResult,
    JournalState,
    Kind,
    Record,
    StackState,
    drift_block_reason,
    drift_fields,
    fold,
    schema_problem,
    status_rows,
)
from syncd.errors import ConfigError

# --- config --------------------------------------------------------------------------------

SOURCE = "/etc/syncd/syncd.yaml"


def config(text: str) -> Any:
    return parse_config(textwrap.dedent(text), SOURCE, Path("/etc/syncd"))


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config(text)
    return info.value.problems


def test_drift_checks_are_off_by_default_and_report_only() -> None:
    found = config(
        """
        state_dir: /s
        repos: [{name: r, url: /git/r}]
        """
    )
    assert found.defaults.drift_interval is None
    assert found.defaults.on_drift is OnDrift.REPORT
    assert found.repo("r").options_for("any") == StackOptions()


def test_drift_options_are_set_in_defaults_per_repo_and_per_stack() -> None:
    found = config(
        """
        state_dir: /s
        defaults: {drift_interval: 1h}
        repos:
          - name: r
            url: /git/r
            stack_prefix: team-
            on_drift: block
            stacks:
              db: {drift_interval: 30m, on_drift: report}
              scratch: {drift_interval: off}
          - name: other
            url: /git/other
            drift_interval: 24h
        """
    )
    r = found.repo("r")
    assert (r.options.drift_interval, r.options.on_drift) == (3600.0, OnDrift.BLOCK)
    db = r.options_for("team-db")
    assert (db.drift_interval, db.on_drift) == (1800.0, OnDrift.REPORT)
    scratch = r.options_for("team-scratch")
    assert (scratch.drift_interval, scratch.on_drift) == (None, OnDrift.BLOCK)
    other = found.repo("other").options_for("x")
    assert (other.drift_interval, other.on_drift) == (86400.0, OnDrift.REPORT)


def test_bad_drift_options_are_reported_where_they_are() -> None:
    found = problems(
        """
        state_dir: /s
        defaults: {drift_interval: 10, on_drift: blok}
        repos:
          - name: r
            url: /git/r
            drift_interval: 30s
            on_drfit: block
            stacks:
              db: {drift_interval: soon, on_drift: [block]}
        """
    )
    by_key = dict(p.split(": ", 1) for p in found)
    assert set(by_key) == {
        "defaults.drift_interval",
        "defaults.on_drift",
        "repos[0].drift_interval",
        "repos[0].on_drfit",
        "repos[0].stacks.db.drift_interval",
        "repos[0].stacks.db.on_drift",
    }
    assert "a duration like 5m, 1h or 24h, or off" in by_key["defaults.drift_interval"]
    assert by_key["defaults.on_drift"] == (
        "must be one of report, block, not 'blok' (did you mean 'block'?)"
    )
    assert by_key["repos[0].drift_interval"] == "must be at least 1m (or off), not '30s'"
    assert by_key["repos[0].on_drfit"] == "unknown key (did you mean 'on_drift'?)"
    assert "not a duration" in by_key["repos[0].stacks.db.drift_interval"]
    assert by_key["repos[0].stacks.db.on_drift"].startswith("must be one of report, block")


# --- the fold ------------------------------------------------------------------------------

REPO, STACK = "platform", "network"
TOPIC = {
    "logical_id": "Topic",
    "type": "AWS::SNS::Topic",
    "status": "MODIFIED",
    "properties": [{"path": "/TopicName", "difference": "NOT_EQUAL"}],
    "more_properties": 0,
}
QUEUE = {
    "logical_id": "Queue",
    "type": "AWS::SQS::Queue",
    "status": "DELETED",
    "properties": [],
    "more_properties": 0,
}


class Records:
    """Records as syncd appends them, a minute apart."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def add(self, kind: Kind, **data: Any) -> str:
        seq = len(self.records) + 1
        time = f"2026-12-01T{seq // 60:02d}:{seq % 60:02d}:00.000Z"
        self.records.append(Record(seq, time, kind, data))
        return time

    def state(self) -> JournalState:
        return fold(self.records)

    def deployed(self, version: int = 1, executed: bool = True) -> None:
        self.add(
            Kind.VERSION,
            repo=REPO,
            stack=STACK,
            version=version,
            commit=f"{version}" * 40,
            digest=f"d{version}",
            action="create" if version == 1 else "update",
        )
        if executed:
            self.add(Kind.EXECUTING, stack=STACK, change_set="arn:cs")
        result = "succeeded" if executed else "no_changes"
        self.add(Kind.RESULT, stack=STACK, result=result, stack_status="UPDATE_COMPLETE")

    def detecting(self, detection: str = "d-1") -> str:
        return self.add(Kind.DRIFT_DETECTING, repo=REPO, stack=STACK, detection=detection)

    def checked(self, result: str, *resources: dict[str, Any], **extra: Any) -> str:
        return self.add(
            Kind.DRIFT_CHECKED,
            repo=REPO,
            stack=STACK,
            detection=extra.pop("detection", "d-1"),
            result=result,
            resources=list(resources),
            more_resources=extra.pop("more_resources", 0),
            reason=extra.pop("reason", None),
        )


@pytest.fixture
def journal() -> Records:
    records = Records()
    records.deployed()
    return records


def row(state: JournalState) -> dict[str, Any]:
    [found] = status_rows(state)
    return found


def test_a_detection_under_way_is_remembered_with_the_time_it_was_asked_for(journal) -> None:
    asked = journal.detecting("d-7")
    view = journal.state().stacks[STACK]
    assert (view.drift_detection, view.drift_asked_at) == ("d-7", asked)
    assert view.drift is None and row(journal.state())["state"] == "in_sync"


def test_drift_found_shows_the_stack_drifted_naming_its_resources(journal) -> None:
    journal.detecting()
    at = journal.checked("drifted", TOPIC, QUEUE)
    state = journal.state()
    view = state.stacks[STACK]
    assert view.state is StackState.IN_SYNC  # Git's state is applied: the drift is beside it
    assert view.drift_detection is None and view.drift_checked_at == at
    shown = row(state)
    assert shown["state"] == "drifted"
    assert shown["message"] == (
        f"drifted outside syncd (found at {at}): Topic (AWS::SNS::Topic) modified: /TopicName;"
        " Queue (AWS::SQS::Queue) deleted"
    )
    assert shown["last_drift_check"] == at
    assert shown["drift"] == {
        "result": "drifted",
        "checked_at": at,
        "reason": None,
        "found_at": at,
        "resources": [TOPIC, QUEUE],
        "more_resources": 0,
        "accepted": None,
    }
    assert state.drift_checks == {REPO: {"drifted": 1}}


def test_a_check_in_sync_clears_the_drift(journal) -> None:
    journal.checked("drifted", TOPIC)
    at = journal.checked("in_sync")
    shown = row(journal.state())
    assert (shown["state"], shown["message"]) == ("in_sync", "")
    assert shown["drift"]["result"] == "in_sync" and shown["drift"]["resources"] == []
    assert shown["last_drift_check"] == at
    assert journal.state().drift_checks == {REPO: {"drifted": 1, "in_sync": 1}}


def test_drift_unknown_is_said_but_the_stack_is_not_drifted(journal) -> None:
    at = journal.checked("unknown", reason="DETECTION_FAILED: no access", detection=None)
    state = journal.state()
    shown = row(state)
    assert shown["state"] == "in_sync"
    assert shown["message"] == f"drift unknown (checked at {at}): DETECTION_FAILED: no access"
    # DetectStackDrift itself failed: that attempt counts for the interval
    assert state.stacks[STACK].drift_asked_at == at


def test_a_check_that_cannot_say_keeps_the_drift_found_before(journal) -> None:
    found = journal.checked("drifted", TOPIC)
    later = journal.checked("unknown", reason="Throttling")
    state = journal.state()
    drift = state.stacks[STACK].drift
    assert drift is not None and drift.blocks and drift.found_at == found
    assert drift.result is DriftResult.UNKNOWN
    shown = row(state)
    assert shown["state"] == "drifted"
    assert shown["message"].endswith(f"the last check (at {later}) could not say: Throttling")


def test_a_new_version_applied_clears_drift_and_drops_a_detection_under_way(journal) -> None:
    journal.checked("drifted", TOPIC)
    journal.detecting("d-2")
    journal.deployed(version=2)
    view = journal.state().stacks[STACK]
    assert view.drift is None and view.drift_detection is None
    assert view.drift_checked_at is not None  # when it was last checked stays known
    assert row(journal.state())["state"] == "in_sync"


def test_a_change_set_without_changes_leaves_the_drift(journal) -> None:
    journal.checked("drifted", TOPIC)
    journal.deployed(version=1, executed=False)  # nothing was executed: nothing overwritten
    assert row(journal.state())["state"] == "drifted"


def test_accepting_drift_lasts_until_other_drift_is_found(journal) -> None:
    journal.checked("drifted", TOPIC)
    at = journal.add(Kind.DRIFT_ACCEPTED, repo=REPO, stack=STACK, by="ann@h", reason="hotfix")
    drift = journal.state().stacks[STACK].drift
    assert drift is not None and drift.accepted is not None and not drift.blocks
    assert row(journal.state())["message"].endswith(f"accepted by ann@h at {at}: hotfix")
    assert row(journal.state())["drift"]["accepted"] == {
        "reason": "hotfix",
        "by": "ann@h",
        "at": at,
    }

    journal.checked("drifted", TOPIC)  # the same drift, found again: still accepted
    assert not journal.state().stacks[STACK].drift.blocks
    journal.checked("drifted", TOPIC, QUEUE)  # more: held again
    assert journal.state().stacks[STACK].drift.blocks


def test_accepting_where_no_drift_was_found_changes_nothing(journal) -> None:
    journal.checked("in_sync")
    journal.add(Kind.DRIFT_ACCEPTED, repo=REPO, stack=STACK, by="ann@h", reason="")
    drift = journal.state().stacks[STACK].drift
    assert drift is not None and drift.accepted is None


def test_a_blocked_stack_says_why_and_what_to_run(journal) -> None:
    journal.checked("drifted", TOPIC, more_resources=3)
    drift = journal.state().stacks[STACK].drift
    assert drift is not None
    reason = drift_block_reason("team-network", drift)
    assert "Topic (AWS::SNS::Topic) modified: /TopicName; and 3 more resource(s)" in reason
    assert reason.endswith("until `syncd drift accept team-network -m REASON`")


def test_records_of_unknown_stacks_are_folded_without_error() -> None:
    records = Records()
    records.detecting()
    records.checked("drifted", TOPIC)
    records.add(Kind.DRIFT_ACCEPTED, repo=REPO, stack=STACK, by="x", reason="")
    state = records.state()
    assert state.stacks == {} and state.drift_checks == {REPO: {"drifted": 1}}


def test_the_snapshot_keeps_drift(journal) -> None:
    journal.checked("drifted", TOPIC)
    journal.add(Kind.DRIFT_ACCEPTED, repo=REPO, stack=STACK, by="ann@h", reason="why")
    journal.detecting("d-2")
    state = journal.state()
    snapshot = json.loads(json.dumps(state.to_snapshot()))
    restored = JournalState.from_snapshot(snapshot)
    assert restored.to_snapshot() == snapshot
    assert restored.stacks[STACK] == state.stacks[STACK]
    assert restored.drift_checks == state.drift_checks


def test_a_snapshot_from_before_drift_checks_still_reads() -> None:
    records = Records()
    records.deployed()
    snapshot = json.loads(json.dumps(records.state().to_snapshot()))
    del snapshot["drift_checks"]
    for view in snapshot["stacks"]:
        for key in ("drift", "drift_detection", "drift_asked_at", "drift_checked_at"):
            del view[key]
    restored = JournalState.from_snapshot(snapshot)
    assert restored.stacks[STACK].drift is None and restored.drift_checks == {}


@pytest.mark.parametrize(
    ("kind", "data", "problem"),
    [
        (Kind.DRIFT_DETECTING, {"repo": "r", "stack": "s"}, "no 'detection'"),
        (Kind.DRIFT_CHECKED, {"repo": "r", "stack": "s", "result": "odd"}, "unknown result"),
        (
            Kind.DRIFT_CHECKED,
            {"repo": "r", "stack": "s", "result": "drifted", "resources": "Topic"},
            "resources of the wrong shape",
        ),
        (
            Kind.DRIFT_CHECKED,
            {"repo": "r", "stack": "s", "result": "drifted", "resources": [{"properties": 1}]},
            "resources of the wrong shape",
        ),
        (Kind.DRIFT_ACCEPTED, {"repo": "r", "stack": "s"}, "no 'by'"),
    ],
)
def test_damaged_drift_records_are_named(kind: Kind, data: dict[str, Any], problem: str) -> None:
    found = schema_problem(kind, data)
    assert found is not None and problem in found


# --- bounding ------------------------------------------------------------------------------


def test_drift_fields_keep_paths_and_difference_types_only() -> None:
    fields = drift_fields(
        [
            ("Topic", "AWS::SNS::Topic", "MODIFIED", [("/TopicName", "NOT_EQUAL")]),
            ("Bucket", "AWS::S3::Bucket", "DELETED", []),
        ]
    )
    assert fields == {
        "resources": [
            {
                "logical_id": "Bucket",
                "type": "AWS::S3::Bucket",
                "status": "DELETED",
                "properties": [],
                "more_properties": 0,
            },
            {
                "logical_id": "Topic",
                "type": "AWS::SNS::Topic",
                "status": "MODIFIED",
                "properties": [{"path": "/TopicName", "difference": "NOT_EQUAL"}],
                "more_properties": 0,
            },
        ],
        "more_resources": 0,
    }


def test_drift_fields_are_bounded_and_count_the_rest() -> None:
    paths = [(f"/Tags/{i}/Value", "NOT_EQUAL") for i in range(DRIFT_PROPERTIES + 7)]
    resources = [
        (f"R{i:03d}", "AWS::SNS::Topic", "MODIFIED", paths) for i in range(DRIFT_RESOURCES + 5)
    ]
    resources.append(("Z\x1b[2J" + "x" * 1000, "AWS::SNS::Topic", "MODIFIED", []))
    fields = drift_fields(resources)
    assert len(fields["resources"]) == DRIFT_RESOURCES
    assert fields["more_resources"] == 6
    first = fields["resources"][0]
    assert len(first["properties"]) == DRIFT_PROPERTIES and first["more_properties"] == 7
    assert len(json.dumps(fields)) < 400_000
    odd = drift_fields(resources[-1:])["resources"][0]["logical_id"]
    assert odd.startswith("Z\\x1b[2J") and len(odd) <= 255
