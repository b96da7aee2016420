"""syncd.core.show: a stack's applies folded from its records, the version shown beside the one
it replaced, values marked and masked, the template diff bounded, hostile text escaped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from syncd.core.journal_state import Kind, Record, Result
from syncd.core.show import (
    CLOCK_SKEW,
    COMPARE_LIMIT,
    DIFF_LIMIT,
    LINE_LIMIT,
    Apply,
    Events,
    ShowView,
    TemplateAt,
    ValueRow,
    applies,
    as_json,
    as_text,
    choose,
    event_window,
    replaced,
    template_diff,
    value_rows,
    versions,
    why_no_events,
)

ARN = "arn:aws:cloudformation:us-east-1:123456789012:changeSet/syncd-v{}-abc/1234-5678"


AT = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
STEP = timedelta(milliseconds=250)


class Records:
    """Records as the journal holds them, a quarter of a second apart."""

    def __init__(self) -> None:
        self.items: list[Record] = []

    def add(self, kind: Kind, **data: Any) -> None:
        seq = len(self.items) + 1
        time = (AT + seq * STEP).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.items.append(Record(seq, time, kind, data))

    def version(self, stack: str, version: int, action: str = "update", **more: Any) -> None:
        self.add(
            Kind.VERSION,
            repo="r",
            stack=stack,
            version=version,
            commit=f"{version}" * 40,
            digest="d" * 64,
            action=action,
            deployment_file=f"deployments/{stack}.yaml",
            template_file="templates/t.yaml",
            **more,
        )

    def applied(self, stack: str, version: int, action: str = "update", **more: Any) -> None:
        self.version(stack, version, action, **more)
        self.add(Kind.CHANGE_SET, stack=stack, arn=ARN.format(version), name=f"syncd-v{version}")
        self.add(Kind.EXECUTING, stack=stack, change_set=ARN.format(version))
        self.result(stack, "succeeded")

    def result(self, stack: str, result: str) -> None:
        self.add(Kind.RESULT, stack=stack, result=result, stack_status="UPDATE_COMPLETE")


def test_the_records_of_one_stack_fold_into_its_applies() -> None:
    r = Records()
    r.applied("app", 1, "create", parameters={"Name": "a"}, tags={"team": "x"})
    r.applied("other", 1, "create")
    r.version("app", 2, parameters={"Name": "b"}, rollback_of=1)
    r.add(
        Kind.CHANGE_SET,
        stack="app",
        arn=ARN.format(2),
        name="syncd-v2-abc",
        awaiting_approval=True,
        changes=[
            {
                "action": "Modify",
                "logical_id": "Topic",
                "type": "AWS::SNS::Topic",
                "replacement": "True",
                "scope": ["Properties", 7],
            },
            {"action": "Add", "logical_id": "Queue", "type": "AWS::SQS::Queue"},  # no scope
            "not a change",
        ],
    )
    found = applies(r.items, "app")
    assert [(a.version, a.action, a.result) for a in found] == [
        (1, "create", Result.SUCCEEDED),
        (2, "update", Result.AWAITING_APPROVAL),
    ]
    waiting = found[1]
    assert (waiting.rollback_of, waiting.parameters, waiting.executing_at) == (
        1,
        {"Name": "b"},
        None,
    )
    assert [(c.logical_id, c.replacement, c.scope) for c in waiting.changes] == [
        ("Topic", "True", ("Properties",)),
        ("Queue", None, ()),
    ]
    assert waiting.approve_command == "syncd approve app --change-set syncd-v2-abc"
    assert why_no_events(waiting) == "nothing ran yet: the change set waits for approval"

    r.add(Kind.APPROVED, stack="app", change_set=ARN.format(2), by="ops@host")
    r.add(Kind.EXECUTING, stack="app", change_set=ARN.format(2))
    r.result("app", "failed")
    done = applies(r.items, "app")[1]
    assert (done.result, done.approved_by, done.approve_command) == (
        Result.FAILED,
        "ops@host",
        None,
    )
    assert done.executing_at is not None and done.finished_at is not None
    assert why_no_events(done) is None


def test_fields_of_the_wrong_type_are_read_as_empty_not_a_crash() -> None:
    r = Records()
    r.version("app", 1, parameters=["x"], tags={"n": 5}, rollback_of="1")
    r.add(Kind.CHANGE_SET, stack="app", arn=ARN.format(1), name=None, changes={"a": 1})
    [a] = applies(r.items, "app")
    assert (a.parameters, a.tags, a.rollback_of, a.changes) == ({}, {"n": "5"}, None, ())
    assert a.change_set_name is None


def test_choose_the_waiting_version_else_the_latest_and_the_latest_apply_of_a_number() -> None:
    r = Records()
    r.applied("app", 1, "create")
    r.version("app", 2)
    r.result("app", "failed")  # before its change set
    r.applied("app", 2)  # the retry: the same version number
    r.applied("app", 3)
    found = applies(r.items, "app")
    assert choose(found, None) is found[-1]
    assert choose(found, 2) is found[2] and found[2].result is Result.SUCCEEDED
    assert choose(found, 9) is None
    assert versions(found) == [1, 2, 3]
    # What each replaced: the last other version that succeeded.
    assert replaced(found, found[3]) is found[2]
    assert replaced(found, found[2]) is found[0]
    assert replaced(found, found[0]) is None

    r.version("app", 4)
    r.add(Kind.CHANGE_SET, stack="app", arn=ARN.format(4), awaiting_approval=True)
    waiting = choose(applies(r.items, "app"), None)
    assert waiting is not None and waiting.version == 4


def test_after_a_delete_nothing_was_deployed_before() -> None:
    r = Records()
    r.applied("app", 1, "create")
    r.applied("app", 2, "delete")
    r.applied("app", 1, "create")  # version numbers start again
    found = applies(r.items, "app")
    assert choose(found, 1) is found[2]
    assert replaced(found, found[2]) is None
    assert replaced(found, found[1]) is found[0]


def test_values_are_marked_and_a_masked_value_is_masked_on_both_sides() -> None:
    rows = value_rows(
        {"Same": "1", "Old": "x", "Changed": "a", "Secret": "****", "Made": "hunter2"},
        {"Same": "1", "New": "y", "Changed": "b", "Secret": "****", "Made": "****"},
    )
    assert rows == (
        ValueRow("Changed", "a", "b", "changed"),
        ValueRow("Made", "****", "****", "not_compared"),  # NoEcho now: its old value hidden
        ValueRow("New", None, "y", "added"),
        ValueRow("Old", "x", None, "removed"),
        ValueRow("Same", "1", "1", "unchanged"),
        ValueRow("Secret", "****", "****", "not_compared"),
    )
    assert value_rows({}, {"Token": "****"}) == (ValueRow("Token", None, "****", "added"),)


def test_the_template_diff_is_bounded_and_says_how_much_is_left_out() -> None:
    old = "\n".join(f"line {i}" for i in range(1000))
    new = "\n".join(f"LINE {i}" for i in range(1000))
    before, after = TemplateAt(1, "a" * 40, "t.yaml"), TemplateAt(2, "b" * 40, "t.yaml")
    diff = template_diff(before, old, after, new)
    assert len(diff.lines) == DIFF_LIMIT
    assert diff.lines[:3] == ("--- a/t.yaml", "+++ b/t.yaml", "@@ -1,1000 +1,1000 @@")
    assert diff.more_lines == 2003 - DIFF_LIMIT  # two headers, a hunk, 2,000 changed lines
    assert diff.note is None

    long = template_diff(before, "x", after, "y" * 10_000)
    assert long.lines[-1] == "+" + "y" * (LINE_LIMIT - 1) + f"…[+{10_001 - LINE_LIMIT} characters]"
    same = template_diff(before, "a\n", after, "a\n")
    assert (same.lines, same.note) == ((), "the template is the same in both versions")
    created = template_diff(None, None, after, "a\nb\n")
    assert created.lines == ("--- /dev/null", "+++ b/t.yaml", "@@ -0,0 +1,2 @@", "+a", "+b")


def test_past_the_compare_limit_the_middle_is_one_block_removed_then_added() -> None:
    n = COMPARE_LIMIT + 1
    old = ["start", *(f"old {i}" for i in range(n)), "end"]
    new = ["start", *(f"new {i}" for i in range(n)), "end"]
    before, after = TemplateAt(1, "a" * 40, "t.yaml"), TemplateAt(2, "b" * 40, "t.yaml")
    diff = template_diff(before, "\n".join(old), after, "\n".join(new), limit=10**6)
    assert diff.lines[:5] == (
        "--- a/t.yaml",
        "+++ b/t.yaml",
        f"@@ -1,{n + 2} +1,{n + 2} @@",
        " start",
        "-old 0",
    )
    assert diff.lines[3 + n : 3 + n + 2] == ("-old 8000", "+new 0")
    assert diff.lines[-2:] == (f"+new {n - 1}", " end")
    assert diff.note is not None and f"differ over {n:,} lines" in diff.note
    # Well under the limit, difflib's own diff (a line changed among many the same).
    small = template_diff(
        before, "\n".join(old[:100]), after, "\n".join([*old[:50], "x", *old[51:100]])
    )
    assert small.lines[3:] == (
        " old 46",
        " old 47",
        " old 48",
        "-old 49",
        "+x",
        " old 50",
        " old 51",
        " old 52",
    )


def test_the_events_window_is_widened_for_the_clocks_but_never_over_its_neighbours() -> None:
    r = Records()
    r.applied("app", 1, "create")  # records 1-4
    r.applied("app", 2)  # 5-8: executing at 7, its result at 8
    r.applied("app", 3)  # 9-12
    found = applies(r.items, "app")
    # From version 1's result (not 7 less a second), to version 3's start (not 8 and a second).
    assert event_window(found, found[1]) == (AT + 4 * STEP, AT + 9 * STEP)
    assert event_window(found, found[0]) == (AT + 3 * STEP - CLOCK_SKEW, AT + 5 * STEP)
    assert event_window(found, found[2]) == (AT + 8 * STEP, AT + 12 * STEP + CLOCK_SKEW)

    r.version("app", 4)
    for _ in range(8):  # a long wait for the change set
        r.add(Kind.OBSERVED, stack="app")
    r.add(Kind.EXECUTING, stack="app", change_set=ARN.format(4))  # record 22, still running
    found = applies(r.items, "app")
    assert event_window(found, found[-1]) == (AT + 22 * STEP - CLOCK_SKEW, None)


HOSTILE = "x\x1b[2J\n  fake  row\u202e"


def hostile_view() -> ShowView:
    a = Apply(
        stack="app",
        repo="r",
        version=2,
        commit="c" * 40,
        action="update",
        started_at="2026-12-01T10:00:00.000Z",
        template_file=HOSTILE,
        parameters={HOSTILE: HOSTILE, "Token": "****"},
        message=HOSTILE,
        change_set_arn=ARN.format(2),
        change_set_name=HOSTILE,
    )
    a.changes = applies(
        [
            Record(1, "t", Kind.VERSION, {"stack": "app", "version": 2}),
            Record(
                2,
                "t",
                Kind.CHANGE_SET,
                {
                    "stack": "app",
                    "arn": "x",
                    "changes": [{"action": "Add", "logical_id": HOSTILE, "type": HOSTILE}],
                },
            ),
        ],
        "app",
    )[0].changes
    where = TemplateAt(2, "c" * 40, HOSTILE)
    diff = template_diff(None, None, where, f"Description: {HOSTILE}\n")
    return ShowView(a, None, diff, Events(None, None, note=HOSTILE))


def test_text_escapes_every_hostile_value_and_json_carries_it_as_it_is() -> None:
    view = hostile_view()
    text = as_text(view)
    assert "\x1b" not in text and "\u202e" not in text
    assert not any(line.startswith("  fake") for line in text.splitlines())
    assert "x\\x1b[2J\\n  fake  row\\u202e" in text
    assert "+Description: x\\x1b[2J" in text
    data = as_json(view)
    assert data["message"] == HOSTILE
    assert data["changes"][0]["logical_id"] == HOSTILE
    assert {"key": HOSTILE, "before": None, "after": HOSTILE, "change": "added"} in data[
        "parameters"
    ]
    assert data["events"] == {"since": None, "until": None, "events": [], "note": HOSTILE}


@pytest.mark.parametrize("limit", [5, DIFF_LIMIT])
def test_text_says_how_many_diff_lines_were_left_out(limit: int) -> None:
    view = hostile_view()
    diff = template_diff(None, None, TemplateAt(2, "c" * 40, "t.yaml"), "a\n" * 1000, limit)
    text = as_text(ShowView(view.apply, None, diff, view.events))
    assert f"\n... {1003 - limit} more lines\n" in text
    assert text.count("\n+a") == limit - 3
