"""syncd.core.stack_status: CloudFormation's status strings and what syncd makes of them."""

from __future__ import annotations

import pytest

from syncd.core.stack_status import (
    KNOWN_STATUSES,
    Condition,
    blocked_reason,
    condition,
    is_settled,
    means_no_changes,
    operation_succeeded,
)

# Every stack status CloudFormation documents (StackStatus in the API reference), and what each
# means for syncd, written out here rather than read back from the module.
EXPECTED: dict[str, Condition] = {
    "CREATE_IN_PROGRESS": Condition.BUSY,
    "CREATE_FAILED": Condition.FAILED,
    "CREATE_COMPLETE": Condition.STABLE,
    "ROLLBACK_IN_PROGRESS": Condition.BUSY,
    "ROLLBACK_FAILED": Condition.FAILED,
    "ROLLBACK_COMPLETE": Condition.ROLLED_BACK_CREATE,
    "DELETE_IN_PROGRESS": Condition.BUSY,
    "DELETE_FAILED": Condition.FAILED,
    "DELETE_COMPLETE": Condition.ABSENT,
    "UPDATE_IN_PROGRESS": Condition.BUSY,
    "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS": Condition.BUSY,
    "UPDATE_COMPLETE": Condition.STABLE,
    "UPDATE_FAILED": Condition.FAILED,
    "UPDATE_ROLLBACK_IN_PROGRESS": Condition.BUSY,
    "UPDATE_ROLLBACK_FAILED": Condition.FAILED,
    "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS": Condition.BUSY,
    "UPDATE_ROLLBACK_COMPLETE": Condition.STABLE,
    "REVIEW_IN_PROGRESS": Condition.REVIEW,
    "IMPORT_IN_PROGRESS": Condition.BUSY,
    "IMPORT_COMPLETE": Condition.STABLE,
    "IMPORT_ROLLBACK_IN_PROGRESS": Condition.BUSY,
    "IMPORT_ROLLBACK_FAILED": Condition.FAILED,
    "IMPORT_ROLLBACK_COMPLETE": Condition.STABLE,
}

# The terminal statuses after which the create, update, import or delete syncd asked for did
# what was asked.
SUCCEEDED = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE", "DELETE_COMPLETE"}


def test_known_statuses_are_exactly_the_documented_ones() -> None:
    assert set(KNOWN_STATUSES) == set(EXPECTED)
    assert len(EXPECTED) == 23


@pytest.mark.parametrize(("status", "expected"), sorted(EXPECTED.items()))
def test_every_known_status_maps_to_its_condition(status: str, expected: Condition) -> None:
    assert condition(status) is expected


def test_no_stack_is_absent() -> None:
    assert condition(None) is Condition.ABSENT
    assert is_settled(None)


@pytest.mark.parametrize(
    "status", ["UPDATE_SOMETHING_NEW_IN_PROGRESS", "FUTURE_STATE", "", "create_complete"]
)
def test_an_unknown_status_is_busy(status: str) -> None:
    assert condition(status) is Condition.BUSY
    assert not is_settled(status)
    assert not operation_succeeded(status)
    assert "another operation is running" in blocked_reason(status)


@pytest.mark.parametrize("status", sorted(EXPECTED))
def test_is_settled_unless_busy(status: str) -> None:
    assert is_settled(status) is (EXPECTED[status] is not Condition.BUSY)


@pytest.mark.parametrize("status", sorted(EXPECTED))
def test_operation_succeeded(status: str) -> None:
    assert operation_succeeded(status) is (status in SUCCEEDED)


def test_operation_succeeded_when_the_stack_is_gone() -> None:
    assert operation_succeeded(None)


def test_blocked_reason_for_a_rolled_back_create_points_at_recreate() -> None:
    reason = blocked_reason("ROLLBACK_COMPLETE")
    assert reason.startswith("ROLLBACK_COMPLETE:")
    assert "can only be deleted" in reason
    assert "on_failure: recreate" in reason


@pytest.mark.parametrize("status", sorted(s for s, c in EXPECTED.items() if c is Condition.BUSY))
def test_blocked_reason_for_busy_statuses(status: str) -> None:
    assert blocked_reason(status) == f"{status}: another operation is running on the stack"


@pytest.mark.parametrize("status", sorted(s for s, c in EXPECTED.items() if c is Condition.FAILED))
def test_blocked_reason_for_failed_statuses(status: str) -> None:
    reason = blocked_reason(status)
    assert reason.startswith(f"{status}:")
    assert "needs attention" in reason


@pytest.mark.parametrize(
    "reason",
    [
        # A FAILED change set's StatusReason.
        "The submitted information didn't contain changes. "
        "Submit different information to create a change set.",
        # A ValidationError from CreateChangeSet / UpdateStack.
        "No updates are to be performed.",
    ],
)
def test_both_no_changes_wordings(reason: str) -> None:
    assert means_no_changes(reason)


@pytest.mark.parametrize(
    "reason",
    [
        None,
        "",
        "Template format error: Unresolved resource dependencies [Vpc] in the Resources block",
        "Parameters: [Env] must have values",
        "Stack:arn:aws:cloudformation:us-east-1:1:stack/app/x is in UPDATE_IN_PROGRESS state",
    ],
)
def test_other_reasons_are_not_no_changes(reason: str | None) -> None:
    assert not means_no_changes(reason)
