"""The journal's records as events, and the commit statuses they give (syncd.core.events)."""

from __future__ import annotations

from typing import Any

from syncd.core.events import (
    AWAITING_APPROVAL,
    BACKUP_FAILING,
    BACKUP_RECOVERED,
    BLOCKED,
    COMMIT_DETECTED,
    DRIFTED,
    FAILED,
    SUCCEEDED,
    VERSION_STARTED,
    CommitStatus,
    EventFold,
    commit_status,
    stack_status,
)
from syncd.core.journal_state import Kind, Record, fold

C1, C2 = "a" * 40, "b" * 40


def records(*items: tuple[Kind, dict[str, Any]]) -> list[Record]:
    return [Record(i + 1, f"2026-12-02T10:00:{i:02d}.000Z", k, d) for i, (k, d) in enumerate(items)]


def version(stack: str, n: int, commit: str = C1, repo: str = "app") -> tuple[Kind, dict[str, Any]]:
    data = {"repo": repo, "stack": stack, "version": n, "commit": commit, "digest": "d"}
    return Kind.VERSION, {**data, "action": "create"}


def events(*items: tuple[Kind, dict[str, Any]], f: EventFold | None = None) -> list[Any]:
    f = f or EventFold()
    return [e for r in records(*items) if (e := f.event(r)) is not None]


def test_a_version_that_applies_gives_started_then_succeeded_on_its_commit() -> None:
    got = events(
        (Kind.COMMIT, {"repo": "app", "commit": C1, "previous": None, "changes": [["A", "x"]]}),
        version("db", 1),
        (Kind.CHANGE_SET, {"stack": "db", "arn": "arn:cs", "name": "cs", "changes": []}),
        (Kind.EXECUTING, {"stack": "db", "change_set": "arn:cs"}),
        (Kind.RESULT, {"stack": "db", "result": "succeeded", "stack_status": "CREATE_COMPLETE"}),
    )
    assert [e.type for e in got] == [COMMIT_DETECTED, VERSION_STARTED, SUCCEEDED]
    done = got[-1]
    # The result record does not say its repo, version or commit: the fold knows them.
    assert (done.repo, done.stack, done.version, done.commit) == ("app", "db", 1, C1)
    assert done.message == "db: version 1 applied, CREATE_COMPLETE"
    assert got[0].data["changed_files"] == 1 and got[0].seq == 1


def test_a_result_that_says_where_it_is_from_is_read_alone() -> None:
    # A receiver that starts after the version record (its cursor was past it) still knows.
    got = events(
        (
            Kind.RESULT,
            {
                "stack": "db",
                "repo": "app",
                "version": 4,
                "commit": C2,
                "result": "failed",
                "message": "Resource handler returned message: bad",
            },
        )
    )
    assert [(e.type, e.repo, e.version, e.commit) for e in got] == [(FAILED, "app", 4, C2)]
    assert "bad" in got[0].message


def test_awaiting_approval_says_how_to_approve() -> None:
    got = events(
        version("db", 2),
        (
            Kind.CHANGE_SET,
            {
                "stack": "db",
                "arn": "arn:cs",
                "name": "cs-2",
                "changes": [{}],
                "awaiting_approval": True,
            },
        ),
    )
    assert got[-1].type == AWAITING_APPROVAL
    assert "syncd approve db" in got[-1].message and got[-1].data["changes"] == 1


def test_blocked_names_the_repo_commit_and_untrusted_heads_block_the_commit() -> None:
    got = events(
        (Kind.COMMIT, {"repo": "app", "commit": C1}),
        (Kind.BLOCKED, {"repo": "app", "stack": "db", "reason": "UPDATE_IN_PROGRESS"}),
        (Kind.UNTRUSTED, {"repo": "app", "commit": C2, "reason": "it is not signed"}),
    )
    assert [(e.type, e.stack, e.commit) for e in got[1:]] == [
        (BLOCKED, "db", C1),
        (BLOCKED, None, C2),
    ]


def test_drift_is_an_event_when_new_not_at_every_check() -> None:
    drifted = {
        "repo": "app",
        "stack": "db",
        "detection": "d",
        "result": "drifted",
        "resources": [{"logical_id": "Queue"}],
    }
    got = events(
        version("db", 1),
        (Kind.DRIFT_CHECKED, drifted),
        (Kind.DRIFT_CHECKED, drifted),  # the same drift again: no news
        (Kind.DRIFT_CHECKED, {**drifted, "result": "unknown", "resources": []}),
        (Kind.DRIFT_CHECKED, {**drifted, "result": "in_sync", "resources": []}),
        (Kind.DRIFT_CHECKED, drifted),  # found again after it was gone: news
        (Kind.OBSERVED, {"stack": "db", "drift": "parameters changed outside syncd: A"}),
    )
    assert [e.type for e in got] == [VERSION_STARTED, DRIFTED, DRIFTED, DRIFTED]
    assert "Queue" in got[1].message and got[1].repo == "app"


def test_backup_health_and_quiet_records() -> None:
    got = events(
        (Kind.BACKUP_FAILING, {"error": "S3 said 503", "since": "t"}),
        (Kind.BACKUP_OK, {}),
        (Kind.PASS_OK, {"repo": "app"}),
        (Kind.SOURCE_OK, {"repo": "app"}),
    )
    assert [e.type for e in got] == [BACKUP_FAILING, BACKUP_RECOVERED]
    assert got[0].repo is None and "503" in got[0].message


def test_a_fold_primed_from_the_state_knows_open_versions() -> None:
    before = records(version("db", 7, C2))
    f = EventFold.primed(fold(before))
    result = Record(9, "t", Kind.RESULT, {"stack": "db", "result": "succeeded"})
    event = f.event(result)
    assert event is not None and (event.version, event.commit, event.repo) == (7, C2, "app")


def test_messages_are_one_bounded_printable_line() -> None:
    reason = "line one\nline two\x1b[31m" + "x" * 5000
    got = events(
        version("db", 1),
        (Kind.RESULT, {"stack": "db", "result": "failed", "message": reason}),
    )
    message = got[-1].message
    assert "\n" not in message and "\x1b" not in message and len(message) <= 500


def test_stack_statuses_and_the_commit_status() -> None:
    rows = records(
        version("db", 1),
        version("app", 1),
        (Kind.RESULT, {"stack": "db", "result": "succeeded"}),
    )
    state = fold(rows)
    f = EventFold()
    got = [e for r in rows if (e := f.event(r)) is not None]
    assert stack_status(got[0], "syncd") == CommitStatus(C1, "syncd/db", "pending", got[0].message)
    assert stack_status(got[-1], "syncd").state == "success"  # type: ignore[union-attr]
    # One for the commit: app still applies.
    whole = commit_status(got[-1], "syncd", state.history)
    assert whole is not None and (whole.context, whole.state) == ("syncd", "pending")
    assert "app" in whole.description
    failed = [
        *records(*[(r.kind, r.data) for r in rows]),
        Record(4, "t", Kind.RESULT, {"stack": "app", "result": "failed", "message": "no"}),
    ]
    event = f.event(failed[-1])
    assert event is not None
    whole = commit_status(event, "syncd", fold(failed).history)
    assert whole is not None and whole.state == "failure" and "app" in whole.description
    done = fold(records(version("db", 1), (Kind.RESULT, {"stack": "db", "result": "succeeded"})))
    last = EventFold(attempts={"db": ("app", 1, C1)}).event(
        Record(2, "t", Kind.RESULT, {"stack": "db", "result": "succeeded"})
    )
    assert last is not None
    assert commit_status(last, "syncd", done.history).state == "success"  # type: ignore[union-attr]


def test_no_status_without_a_commit_or_for_events_that_give_none() -> None:
    got = events(
        (Kind.COMMIT, {"repo": "app", "commit": C1}),
        (Kind.BACKUP_FAILING, {"error": "x"}),
    )
    assert [stack_status(e, "syncd") for e in got] == [None, None]
    untrusted = events((Kind.UNTRUSTED, {"repo": "app", "commit": C2, "reason": "unsigned"}))[0]
    status = stack_status(untrusted, "syncd")
    assert status is not None and (status.context, status.state) == ("syncd", "failure")
