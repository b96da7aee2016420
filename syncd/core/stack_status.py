"""CloudFormation's stack and change set status strings, translated once into what syncd does.

Every documented stack status is listed; an unknown one (AWS adds some now and then) is treated
as busy, so syncd waits rather than acts on a state it does not understand.
"""

from __future__ import annotations

from enum import StrEnum


class Condition(StrEnum):
    """What a stack's status means for syncd."""

    ABSENT = "absent"  # no stack: create it
    REVIEW = "review"  # created by a change set never executed: create it (CREATE change set)
    STABLE = "stable"  # settled and updatable
    BUSY = "busy"  # an operation is running: wait, or report blocked
    ROLLED_BACK_CREATE = "rolled_back_create"  # ROLLBACK_COMPLETE: can only be deleted
    FAILED = "failed"  # a *_FAILED state: a human must act


_CONDITIONS: dict[str, Condition] = {
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

KNOWN_STATUSES = frozenset(_CONDITIONS)

# The terminal statuses that mean "the operation syncd started succeeded".
_SUCCEEDED = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE", "DELETE_COMPLETE"})


def condition(stack_status: str | None) -> Condition:
    if stack_status is None:
        return Condition.ABSENT
    return _CONDITIONS.get(stack_status, Condition.BUSY)


def is_settled(stack_status: str | None) -> bool:
    """Whether no operation is running on the stack (absent counts as settled)."""
    return condition(stack_status) is not Condition.BUSY


def operation_succeeded(stack_status: str | None) -> bool:
    """After an execute or delete has settled: did it do what was asked?"""
    return stack_status is None or stack_status in _SUCCEEDED


def blocked_reason(stack_status: str) -> str:
    """Why a stack in this status cannot take a change set now."""
    cond = condition(stack_status)
    if cond is Condition.BUSY:
        return f"{stack_status}: another operation is running on the stack"
    if cond is Condition.ROLLED_BACK_CREATE:
        return (
            "ROLLBACK_COMPLETE: the first create failed and the stack can only be deleted; "
            "set on_failure: recreate to let syncd delete and recreate it"
        )
    if cond is Condition.FAILED:
        return f"{stack_status}: the stack needs attention before it can be updated"
    return f"{stack_status}"


# Change set statuses (Status) and execution statuses (ExecutionStatus).
CHANGE_SET_PENDING = frozenset({"CREATE_PENDING", "CREATE_IN_PROGRESS"})
CHANGE_SET_FAILED = "FAILED"
EXECUTION_AVAILABLE = "AVAILABLE"
EXECUTION_RUNNING = "EXECUTE_IN_PROGRESS"

# CloudFormation says "no changes" in two ways: a FAILED change set with one of these reasons,
# or (when parameters are passed) a ValidationError from CreateChangeSet itself.
_NO_CHANGE_REASONS = (
    "didn't contain changes",
    "No updates are to be performed",
    "The submitted information didn't contain changes",
)


def means_no_changes(reason: str | None) -> bool:
    return bool(reason) and any(text in (reason or "") for text in _NO_CHANGE_REASONS)
