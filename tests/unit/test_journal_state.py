"""syncd.core.journal_state: journal records folded into `status` and `history` rows
(docs/commands.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from syncd.core.journal_state import (
    JournalState,
    Kind,
    Record,
    Result,
    StackState,
    fold,
)

STATUS_FIELDS = {"stack", "repo", "version", "commit", "state", "stack_status", "last_sync"}
STATUS_FIELDS |= {"message"}
HISTORY_FIELDS = {"stack", "version", "commit", "action", "result", "change_set"}
HISTORY_FIELDS |= {"started_at", "finished_at"}

C1 = "1" * 40
C2 = "2" * 40
C3 = "3" * 40
ARN = "arn:aws:cloudformation:us-east-1:123456789012:changeSet/syncd-network-v{}/abc"


class Journal:
    """Records as syncd appends them: one sequence number and one second apart each."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def add(self, kind: Kind, **data: Any) -> str:
        seq = len(self.records) + 1
        time = f"2025-05-01T12:{seq // 60:02d}:{seq % 60:02d}Z"
        self.records.append(Record(seq=seq, time=time, kind=kind, data=data))
        return time

    def state(self) -> JournalState:
        return fold(self.records)

    # --- the steps of one apply, as syncd.apply journals them ---

    def version(
        self, version: int, commit: str, action: str, stack: str = "network", **extra: Any
    ) -> str:
        return self.add(
            Kind.VERSION,
            repo="platform",
            stack=stack,
            version=version,
            commit=commit,
            digest=f"digest-{commit[:4]}-{version}",
            action=action,
            template_file="templates/network.yaml",
            parameters=extra.get("parameters", {"Env": "prod"}),
            tags=extra.get("tags", {"team": "platform"}),
            dependencies=[],
        )

    def change_set(self, version: int, stack: str = "network", **extra: Any) -> str:
        return self.add(
            Kind.CHANGE_SET,
            stack=stack,
            version=version,
            arn=ARN.format(version),
            name=f"syncd-{stack}-v{version}",
            changes=[],
            **extra,
        )

    def executing(self, version: int, stack: str = "network") -> str:
        return self.add(
            Kind.EXECUTING, stack=stack, version=version, change_set=ARN.format(version)
        )

    def result(
        self,
        version: int,
        result: str,
        stack_status: str | None,
        stack: str = "network",
        **extra: Any,
    ) -> str:
        return self.add(
            Kind.RESULT,
            stack=stack,
            version=version,
            result=result,
            stack_status=stack_status,
            message=extra.get("message", ""),
            outputs=extra.get("outputs", {}),
            retryable=extra.get("retryable", False),
        )

    def apply(
        self,
        version: int,
        commit: str,
        action: str,
        stack_status: str,
        stack: str = "network",
        outputs: dict[str, str] | None = None,
    ) -> tuple[str, str]:
        """A whole successful apply: returns (started_at, finished_at)."""
        started = self.version(version, commit, action, stack)
        self.change_set(version, stack)
        self.executing(version, stack)
        finished = self.result(version, "succeeded", stack_status, stack, outputs=outputs or {})
        return started, finished


@pytest.fixture
def journal() -> Journal:
    return Journal()


def test_an_empty_journal_has_no_stacks(journal: Journal) -> None:
    state = journal.state()
    assert state.stacks == {}
    assert state.history == []
    assert state.last_seq == 0
    assert state.last_time is None


def test_a_create_that_succeeds(journal: Journal) -> None:
    journal.add(Kind.COMMIT, repo="platform", commit=C1, previous=None, forced=False, changes=[])
    started = journal.version(1, C1, "create", parameters={"Env": "prod", "Password": "****"})
    state = journal.state()
    assert state.stacks["network"].as_status() == {
        "stack": "network",
        "repo": "platform",
        "version": None,
        "commit": None,
        "state": "applying",
        "stack_status": None,
        "last_sync": None,
        "message": "version 1: making its change set",  # a waiting state says what it waits for
    }
    assert [r.as_dict()["result"] for r in state.history] == ["in_progress"]

    journal.change_set(1)
    executing = journal.executing(1)
    waiting = journal.state().stacks["network"].message
    assert waiting == f"executing its change set since {executing}: waiting for CloudFormation"
    finished = journal.result(1, "succeeded", "CREATE_COMPLETE", outputs={"VpcId": "vpc-1"})
    state = journal.state()

    view = state.stacks["network"]
    assert view.as_status() == {
        "stack": "network",
        "repo": "platform",
        "version": 1,
        "commit": C1,
        "state": "in_sync",
        "stack_status": "CREATE_COMPLETE",
        "last_sync": finished,
        "message": "",
    }
    assert view.outputs == {"VpcId": "vpc-1"}
    assert view.parameters == {"Env": "prod", "Password": "****"}
    assert view.tags == {"team": "platform"}
    assert view.digest == f"digest-{C1[:4]}-1"
    assert view.attempt is None
    assert view.latest_version == 1
    assert [row.as_dict() for row in state.history] == [
        {
            "stack": "network",
            "version": 1,
            "commit": C1,
            "action": "create",
            "result": "succeeded",
            "change_set": ARN.format(1),
            "started_at": started,
            "finished_at": finished,
            "message": "",
            "rollback_of": None,
        }
    ]
    assert state.repos["platform"].commit == C1
    assert state.last_seq == len(journal.records)
    assert state.last_time == finished


def test_status_and_history_rows_carry_the_spec_fields(journal: Journal) -> None:
    journal.apply(1, C1, "create", "CREATE_COMPLETE")
    state = journal.state()
    assert set(state.stacks["network"].as_status()) >= STATUS_FIELDS
    assert set(state.history[0].as_dict()) >= HISTORY_FIELDS


def test_folding_one_record_at_a_time_equals_folding_all(journal: Journal) -> None:
    journal.apply(1, C1, "create", "CREATE_COMPLETE")
    journal.version(2, C2, "update")
    journal.result(2, "failed", "UPDATE_ROLLBACK_COMPLETE", message="boom")
    incremental = JournalState()
    for record in journal.records:
        incremental.apply(record)
    full = journal.state()
    assert incremental.stacks["network"].as_status() == full.stacks["network"].as_status()
    assert [r.as_dict() for r in incremental.history] == [r.as_dict() for r in full.history]


def test_an_update_that_fails_keeps_the_last_good_version(journal: Journal) -> None:
    _, first_sync = journal.apply(1, C1, "create", "CREATE_COMPLETE", outputs={"VpcId": "vpc-1"})
    started = journal.version(2, C2, "update", parameters={"Env": "dev"})
    journal.change_set(2)
    journal.executing(2)
    message = "Resource handler returned message: CidrBlock is invalid"
    finished = journal.result(2, "failed", "UPDATE_ROLLBACK_COMPLETE", message=message)
    state = journal.state()

    view = state.stacks["network"]
    assert view.as_status() == {
        "stack": "network",
        "repo": "platform",
        "version": 1,
        "commit": C1,
        "state": "failed",
        "stack_status": "UPDATE_ROLLBACK_COMPLETE",
        "last_sync": first_sync,
        "message": message,
    }
    assert view.parameters == {"Env": "prod"}
    assert view.outputs == {"VpcId": "vpc-1"}
    assert view.failed_digest == f"digest-{C2[:4]}-2"
    assert view.retryable is False
    assert view.latest_version == 2
    assert [row.as_dict() for row in state.history][1] == {
        "stack": "network",
        "version": 2,
        "commit": C2,
        "action": "update",
        "result": "failed",
        "change_set": ARN.format(2),
        "started_at": started,
        "finished_at": finished,
        "message": message,
        "rollback_of": None,
    }
    assert state.history[0].result is Result.SUCCEEDED


def test_a_retryable_failure_then_a_successful_retry(journal: Journal) -> None:
    journal.apply(1, C1, "create", "CREATE_COMPLETE")
    journal.version(2, C2, "update")
    journal.result(2, "failed", "UPDATE_COMPLETE", message="Throttling", retryable=True)
    view = journal.state().stacks["network"]
    assert view.state is StackState.FAILED
    assert view.retryable is True

    _, finished = journal.apply(2, C2, "update", "UPDATE_COMPLETE")
    state = journal.state()
    view = state.stacks["network"]
    assert (view.version, view.commit, view.state, view.last_sync) == (
        2,
        C2,
        StackState.IN_SYNC,
        finished,
    )
    assert view.failed_digest is None
    assert view.retryable is False
    assert view.message == ""
    assert [(r.version, r.result) for r in state.history] == [
        (1, Result.SUCCEEDED),
        (2, Result.FAILED),
        (2, Result.SUCCEEDED),
    ]


def test_a_failed_first_create_has_no_version(journal: Journal) -> None:
    journal.version(1, C1, "create")
    journal.change_set(1)
    journal.executing(1)
    journal.result(1, "failed", "ROLLBACK_COMPLETE", message="Bucket name taken")
    status = journal.state().stacks["network"].as_status()
    assert status["version"] is None
    assert status["commit"] is None
    assert status["state"] == "failed"
    assert status["stack_status"] == "ROLLBACK_COMPLETE"
    assert status["last_sync"] is None
    assert status["message"] == "Bucket name taken"


def test_no_changes(journal: Journal) -> None:
    journal.apply(1, C1, "create", "CREATE_COMPLETE")
    started = journal.version(2, C2, "update")
    finished = journal.result(2, "no_changes", "CREATE_COMPLETE")
    state = journal.state()

    status = state.stacks["network"].as_status()
    assert status["version"] == 2
    assert status["commit"] == C2
    assert status["state"] == "in_sync"
    assert status["last_sync"] == finished
    row = state.history[-1].as_dict()
    assert row["result"] == "no_changes"
    assert row["change_set"] is None
    assert (row["started_at"], row["finished_at"]) == (started, finished)


def test_awaiting_approval_then_approved(journal: Journal) -> None:
    started = journal.version(1, C1, "create")
    journal.change_set(1, awaiting_approval=True)
    state = journal.state()

    status = state.stacks["network"].as_status()
    assert status["state"] == "awaiting_approval"
    assert status["version"] is None
    assert "syncd approve" in status["message"]
    assert "syncd-network-v1" in status["message"]
    assert state.stacks["network"].attempt is not None
    assert state.stacks["network"].attempt.change_set == ARN.format(1)
    assert state.history[0].as_dict() == {
        "stack": "network",
        "version": 1,
        "commit": C1,
        "action": "create",
        "result": "awaiting_approval",
        "change_set": ARN.format(1),
        "started_at": started,
        "finished_at": None,
        "message": "",
        "rollback_of": None,
    }

    journal.executing(1)
    state = journal.state()
    assert state.stacks["network"].state is StackState.APPLYING
    assert state.stacks["network"].attempt is not None
    assert state.stacks["network"].attempt.executing is True
    assert state.history[0].result is Result.IN_PROGRESS

    finished = journal.result(1, "succeeded", "CREATE_COMPLETE")
    state = journal.state()
    assert state.stacks["network"].state is StackState.IN_SYNC
    assert state.history[0].result is Result.SUCCEEDED
    assert state.history[0].finished_at == finished


def test_a_change_set_without_approval_does_not_wait(journal: Journal) -> None:
    journal.version(1, C1, "create")
    journal.change_set(1)
    state = journal.state()
    assert state.stacks["network"].state is StackState.APPLYING
    assert state.history[0].result is Result.IN_PROGRESS
    assert state.history[0].change_set == ARN.format(1)


def test_blocked_then_recovered(journal: Journal) -> None:
    _, synced = journal.apply(1, C1, "create", "CREATE_COMPLETE")
    reason = "UPDATE_IN_PROGRESS: another operation is running on the stack"
    journal.add(
        Kind.BLOCKED,
        repo="platform",
        stack="network",
        stack_status="UPDATE_IN_PROGRESS",
        reason=reason,
    )
    status = journal.state().stacks["network"].as_status()
    assert status["state"] == "blocked"
    assert status["message"] == reason
    assert status["stack_status"] == "UPDATE_IN_PROGRESS"
    assert (status["version"], status["commit"], status["last_sync"]) == (1, C1, synced)

    # Once the stack can be updated, the same version is applied again: no changes.
    journal.version(1, C1, "update")
    journal.result(1, "no_changes", "UPDATE_COMPLETE")
    status = journal.state().stacks["network"].as_status()
    assert status["state"] == "in_sync"
    assert status["message"] == ""
    assert (status["version"], status["commit"]) == (1, C1)
    assert [h.result for h in journal.state().history] == [Result.SUCCEEDED, Result.NO_CHANGES]


def test_blocked_without_a_status_keeps_the_known_one(journal: Journal) -> None:
    journal.apply(1, C1, "create", "CREATE_COMPLETE")
    journal.add(Kind.BLOCKED, repo="platform", stack="network", stack_status=None, reason="x")
    assert journal.state().stacks["network"].stack_status == "CREATE_COMPLETE"


def test_a_never_deployed_stack_whose_file_is_removed_leaves_status(journal: Journal) -> None:
    journal.add(
        Kind.BLOCKED,
        repo="platform",
        stack="app",
        stack_status="ROLLBACK_COMPLETE",
        reason="ROLLBACK_COMPLETE: the first create failed",
    )
    assert journal.state().stacks["app"].state is StackState.BLOCKED
    journal.add(Kind.REMOVED, repo="platform", stack="app")
    assert "app" not in journal.state().stacks


def test_invalid_deployment_file(journal: Journal) -> None:
    journal.apply(1, C1, "create", "CREATE_COMPLETE")
    journal.add(
        Kind.INVALID,
        repo="platform",
        stack="network",
        commit=C2,
        file="deployments/network.yaml",
        reason="not valid YAML: mapping values are not allowed here",
    )
    state = journal.state()
    view = state.stacks["network"]
    assert view.as_status() == {
        "stack": "network",
        "repo": "platform",
        "version": 1,
        "commit": C1,
        "state": "failed",
        "stack_status": "CREATE_COMPLETE",
        "last_sync": view.last_sync,
        "message": "deployments/network.yaml: not valid YAML: mapping values are not allowed here",
    }
    assert view.invalid_file == "deployments/network.yaml"
    assert len(state.history) == 1

    # The file is fixed back to what is deployed: applied again, CloudFormation finds no changes.
    journal.version(1, C1, "update")
    journal.result(1, "no_changes", "CREATE_COMPLETE")
    view = journal.state().stacks["network"]
    assert view.state is StackState.IN_SYNC
    assert view.invalid_file is None
    assert view.message == ""


def test_invalid_stack_never_deployed(journal: Journal) -> None:
    journal.add(
        Kind.INVALID,
        repo="platform",
        stack="app",
        commit=C1,
        file="templates/app.yaml",
        reason="template a template needs a non-empty Resources mapping",
    )
    state = journal.state()
    status = state.stacks["app"].as_status()
    assert status["state"] == "failed"
    assert status["version"] is None
    assert status["repo"] == "platform"
    assert status["message"].startswith("templates/app.yaml: ")
    assert state.history == []


def test_a_new_version_clears_invalid(journal: Journal) -> None:
    journal.add(
        Kind.INVALID, repo="platform", stack="network", commit=C1, file="d.yaml", reason="bad"
    )
    journal.version(1, C2, "create")
    view = journal.state().stacks["network"]
    assert view.state is StackState.APPLYING
    assert view.invalid_file is None
    assert view.message == "version 1: making its change set"


def test_observed_drift(journal: Journal) -> None:
    journal.apply(1, C1, "create", "CREATE_COMPLETE", outputs={"VpcId": "vpc-1"})
    drift = "parameters changed outside syncd: Env"
    journal.add(
        Kind.OBSERVED,
        stack="network",
        stack_status="UPDATE_COMPLETE",
        outputs={"VpcId": "vpc-2"},
        drift=drift,
    )
    state = journal.state()
    view = state.stacks["network"]
    assert view.as_status()["state"] == "drifted"
    assert view.as_status()["message"] == drift
    assert view.as_status()["stack_status"] == "UPDATE_COMPLETE"
    assert view.as_status()["version"] == 1
    assert view.outputs == {"VpcId": "vpc-2"}
    assert len(state.history) == 1


def test_observed_without_drift_only_updates_status_and_outputs(journal: Journal) -> None:
    journal.apply(1, C1, "create", "CREATE_COMPLETE", outputs={"VpcId": "vpc-1"})
    journal.add(
        Kind.OBSERVED, stack="network", stack_status="UPDATE_COMPLETE", outputs=None, drift=None
    )
    view = journal.state().stacks["network"]
    assert view.state is StackState.IN_SYNC
    assert view.stack_status == "UPDATE_COMPLETE"
    assert view.outputs == {"VpcId": "vpc-1"}
    assert view.message == ""


def test_a_drifted_stack_is_back_in_sync_after_reapplying_its_version(journal: Journal) -> None:
    journal.apply(1, C1, "create", "CREATE_COMPLETE")
    journal.add(
        Kind.OBSERVED,
        stack="network",
        stack_status=None,
        outputs=None,
        drift="the stack is gone: deleted outside syncd",
    )
    assert journal.state().stacks["network"].state is StackState.DRIFTED
    journal.apply(1, C1, "create", "CREATE_COMPLETE")
    state = journal.state()
    assert state.stacks["network"].state is StackState.IN_SYNC
    assert state.stacks["network"].version == 1
    assert [(r.version, r.action) for r in state.history] == [(1, "create"), (1, "create")]


def test_removed_deployment_file_without_prune(journal: Journal) -> None:
    journal.apply(1, C1, "create", "CREATE_COMPLETE")
    journal.add(Kind.REMOVED, repo="platform", stack="network")
    state = journal.state()
    view = state.stacks["network"]
    assert view.removed is True
    status = view.as_status()
    assert (status["version"], status["commit"], status["state"]) == (1, C1, "in_sync")
    assert "prune is off" in status["message"]
    assert "removed" in status["message"]
    assert len(state.history) == 1

    journal.version(2, C2, "update")
    assert journal.state().stacks["network"].removed is False


@pytest.mark.parametrize("final_status", ["DELETE_COMPLETE", None])
def test_a_prune_delete_removes_the_stack_from_status_but_keeps_history(
    journal: Journal, final_status: str | None
) -> None:
    journal.apply(1, C1, "create", "CREATE_COMPLETE", stack="app")
    journal.apply(1, C1, "create", "CREATE_COMPLETE")
    started = journal.version(2, C2, "delete")
    journal.executing(2)
    finished = journal.result(2, "succeeded", final_status)
    state = journal.state()

    assert "network" not in state.stacks
    assert list(state.stacks) == ["app"]
    assert state.stacks["app"].state is StackState.IN_SYNC
    network_rows = [r.as_dict() for r in state.history if r.stack == "network"]
    assert [(r["version"], r["action"], r["result"]) for r in network_rows] == [
        (1, "create", "succeeded"),
        (2, "delete", "succeeded"),
    ]
    assert network_rows[1]["started_at"] == started
    assert network_rows[1]["finished_at"] == finished
    assert network_rows[1]["change_set"] is None


def test_a_failed_delete_keeps_the_stack(journal: Journal) -> None:
    journal.apply(1, C1, "create", "CREATE_COMPLETE")
    journal.version(2, C2, "delete")
    journal.executing(2)
    journal.result(2, "failed", "DELETE_FAILED", message="bucket not empty")
    status = journal.state().stacks["network"].as_status()
    assert status["state"] == "failed"
    assert status["stack_status"] == "DELETE_FAILED"
    assert status["version"] == 1
    assert status["message"] == "bucket not empty"


def test_version_numbering(journal: Journal) -> None:
    journal.apply(1, C1, "create", "CREATE_COMPLETE")
    journal.version(2, C2, "update")
    journal.result(2, "failed", "UPDATE_ROLLBACK_COMPLETE", message="x")
    view = journal.state().stacks["network"]
    assert (view.version, view.latest_version) == (1, 2)

    journal.apply(3, C3, "update", "UPDATE_COMPLETE")
    view = journal.state().stacks["network"]
    assert (view.version, view.latest_version, view.commit) == (3, 3, C3)

    # Re-applying an older version number never lowers the highest one started.
    journal.apply(3, C3, "update", "UPDATE_COMPLETE")
    journal.version(1, C1, "update")
    assert journal.state().stacks["network"].latest_version == 3
    assert [r.version for r in journal.state().history] == [1, 2, 3, 3, 1]


def test_versions_are_per_stack(journal: Journal) -> None:
    journal.apply(1, C1, "create", "CREATE_COMPLETE", stack="network")
    journal.apply(2, C2, "update", "UPDATE_COMPLETE", stack="network")
    journal.apply(1, C2, "create", "CREATE_COMPLETE", stack="app")
    state = journal.state()
    assert state.stacks["network"].version == 2
    assert state.stacks["app"].version == 1
    assert state.stacks["app"].latest_version == 1


def test_interleaved_stacks_close_their_own_history_rows(journal: Journal) -> None:
    journal.version(1, C1, "create", stack="network")
    journal.version(1, C1, "create", stack="app")
    journal.change_set(1, stack="app")
    journal.result(1, "failed", "ROLLBACK_COMPLETE", stack="app", message="app broke")
    journal.change_set(1, stack="network")
    journal.result(1, "succeeded", "CREATE_COMPLETE", stack="network")
    rows = {r.stack: r for r in journal.state().history}
    assert rows["network"].result is Result.SUCCEEDED
    assert rows["network"].change_set == ARN.format(1)
    assert rows["app"].result is Result.FAILED
    assert rows["app"].message == "app broke"


def test_source_errors_per_repo(journal: Journal) -> None:
    journal.add(Kind.COMMIT, repo="platform", commit=C1, previous=None, forced=False, changes=[])
    journal.add(Kind.SOURCE_ERROR, repo="platform", message="could not resolve host")
    journal.add(Kind.SOURCE_ERROR, repo="other", message="auth failed")
    state = journal.state()
    assert state.repos["platform"].commit == C1
    assert state.repos["platform"].error == "could not resolve host"
    assert state.repos["other"].commit is None
    assert state.repos["other"].error == "auth failed"

    journal.add(Kind.SOURCE_OK, repo="platform")
    journal.add(Kind.COMMIT, repo="other", commit=C2, previous=None, forced=False, changes=[])
    state = journal.state()
    assert state.repos["platform"].error is None
    assert state.repos["other"].error is None
    assert state.repos["other"].commit == C2


def test_the_deployment_file_and_approval_are_remembered(journal: Journal) -> None:
    journal.add(
        Kind.VERSION,
        repo="platform",
        stack="app",
        version=1,
        commit=C1,
        digest="d",
        action="create",
        deployment_file="deployments/app.yaml",
        template_file="t.yaml",
        parameters={},
        tags={},
        dependencies=[],
    )
    journal.change_set(1, stack="app", awaiting_approval=True)
    view = journal.state().stacks["app"]
    assert view.deployment_file == "deployments/app.yaml"
    assert view.attempt is not None and view.attempt.awaiting_approval
    assert view.state is StackState.AWAITING_APPROVAL


def test_recreating_says_why_the_stack_is_being_deleted(journal: Journal) -> None:
    journal.add(Kind.RECREATING, stack="app", stack_status="ROLLBACK_COMPLETE")
    view = journal.state().stacks["app"]
    assert view.stack_status == "ROLLBACK_COMPLETE"
    assert "create it again" in view.message


def test_a_removed_stack_left_alone_no_longer_counts_as_failed(journal: Journal) -> None:
    journal.apply(1, C1, "create", "CREATE_COMPLETE")
    journal.version(2, C2, "update")
    journal.result(2, "failed", "UPDATE_ROLLBACK_COMPLETE", message="boom")
    journal.add(Kind.REMOVED, repo="platform", stack="network")
    view = journal.state().stacks["network"]
    assert (view.removed, view.state, view.version) == (True, StackState.IN_SYNC, 1)
    assert "left alone" in view.message


def test_a_snapshot_taken_at_any_record_folds_on_exactly_like_the_full_fold(
    journal: Journal,
) -> None:
    import json

    journal.apply(1, C1, "create", "CREATE_COMPLETE", outputs={"VpcId": "vpc-1"})
    journal.add(Kind.COMMIT, repo="platform", commit=C2, previous=C1, forced=False, changes=[])
    journal.version(2, C2, "update")
    journal.change_set(2, awaiting_approval=True)
    journal.version(1, C2, "create", stack="app")
    journal.add(Kind.BLOCKED, repo="platform", stack="db", stack_status=None, reason="waits")
    journal.executing(2)
    journal.result(2, "failed", "UPDATE_ROLLBACK_COMPLETE", message="boom", retryable=True)
    journal.result(1, "succeeded", "CREATE_COMPLETE", stack="app")
    journal.add(Kind.SOURCE_ERROR, repo="platform", message="unreachable")
    full = journal.state()
    for cut in range(len(journal.records) + 1):
        snapshot = json.loads(json.dumps(fold(journal.records[:cut]).to_snapshot()))
        resumed = JournalState.from_snapshot(snapshot)
        for record in journal.records[cut:]:
            resumed.apply(record)
        assert resumed == full, cut
        assert resumed.to_snapshot() == full.to_snapshot()


# --- suspend and resume ---------------------------------------------------------------------


def suspend(journal: Journal, stack: str = "network", reason: str = "audit") -> str:
    return journal.add(Kind.SUSPENDED, repo="platform", stack=stack, reason=reason, by="alice@h")


def resume(journal: Journal, stack: str = "network") -> str:
    return journal.add(Kind.RESUMED, repo="platform", stack=stack, by="bob@h")


def test_a_suspended_stack_shows_suspended_with_who_when_and_why(journal: Journal) -> None:
    from syncd.core.journal_state import Suspension, status_rows

    journal.apply(1, C1, "create", "CREATE_COMPLETE")
    at = suspend(journal)
    state = journal.state()
    view = state.stacks["network"]
    assert view.suspended == Suspension("audit", "alice@h", at)
    assert view.state is StackState.IN_SYNC  # its own state is kept beneath
    [row] = status_rows(state)
    assert (row["state"], row["message"]) == ("suspended", f"suspended by alice@h at {at}: audit")

    resume(journal)
    state = journal.state()
    assert state.stacks["network"].suspended is None
    assert status_rows(state)[0]["state"] == "in_sync"


def test_an_empty_reason_leaves_no_colon(journal: Journal) -> None:
    from syncd.core.journal_state import status_rows

    journal.apply(1, C1, "create", "CREATE_COMPLETE")
    at = suspend(journal, reason="")
    assert status_rows(journal.state())[0]["message"] == f"suspended by alice@h at {at}"


def test_a_repo_suspension_covers_its_stacks_and_any_added_later(journal: Journal) -> None:
    from syncd.core.journal_state import status_rows, suspension

    journal.apply(1, C1, "create", "CREATE_COMPLETE")
    at = suspend(journal, stack="", reason="freeze")
    journal.apply(1, C1, "create", "CREATE_COMPLETE", stack="app")  # a later stack
    state = journal.state()
    assert state.repos["platform"].suspended is not None
    assert state.stacks["network"].suspended is None
    assert {r["stack"]: r["state"] for r in status_rows(state)} == {
        "app": "suspended",
        "network": "suspended",
    }
    assert status_rows(state)[0]["message"] == f"suspended by alice@h at {at}: freeze"
    held = suspension(state, "not-yet-deployed", "platform")
    assert held is not None and held.reason == "freeze"
    assert suspension(state, "network", "other-repo") is None


def test_resuming_the_repo_leaves_stacks_suspended_one_by_one(journal: Journal) -> None:
    from syncd.core.journal_state import status_rows

    journal.apply(1, C1, "create", "CREATE_COMPLETE")
    journal.apply(1, C1, "create", "CREATE_COMPLETE", stack="app")
    suspend(journal, stack="app", reason="app's own")
    suspend(journal, stack="", reason="whole repo")
    # The stack's own suspension is what status shows, and what lasts.
    assert "app's own" in {r["stack"]: r for r in status_rows(journal.state())}["app"]["message"]
    resume(journal, stack="")
    states = {r["stack"]: r["state"] for r in status_rows(journal.state())}
    assert states == {"app": "suspended", "network": "in_sync"}
    # And resuming the stack alone while its repo is suspended leaves it suspended.
    suspend(journal, stack="", reason="again")
    resume(journal, stack="app")
    states = {r["stack"]: r["state"] for r in status_rows(journal.state())}
    assert states == {"app": "suspended", "network": "suspended"}


def test_suspended_wins_over_stale_and_failed(journal: Journal) -> None:
    from syncd.core.journal_state import status_rows

    journal.apply(1, C1, "create", "CREATE_COMPLETE")
    journal.apply(1, C1, "create", "CREATE_COMPLETE", stack="app")
    journal.version(2, C2, "update", stack="app")
    journal.result(2, "failed", "UPDATE_ROLLBACK_COMPLETE", stack="app", message="boom")
    journal.add(Kind.PASS_FAILED, repo="platform", message="a bug")
    assert {r["stack"]: r["state"] for r in status_rows(journal.state())} == {
        "app": "failed",
        "network": "stale",
    }
    suspend(journal, stack="app")
    suspend(journal, stack="network")
    assert {r["state"] for r in status_rows(journal.state())} == {"suspended"}


def test_a_suspension_of_a_stack_the_journal_does_not_know_is_no_stack(journal: Journal) -> None:
    suspend(journal, stack="ghost")
    resume(journal, stack="ghost")
    assert journal.state().stacks == {}


def test_a_suspension_survives_the_records_that_follow_and_a_snapshot(journal: Journal) -> None:
    import json

    journal.apply(1, C1, "create", "CREATE_COMPLETE")
    suspend(journal)
    suspend(journal, stack="", reason="repo")
    journal.version(2, C2, "update")  # an apply already under way when it was suspended
    journal.result(2, "succeeded", "UPDATE_COMPLETE")
    journal.add(Kind.INVALID, repo="platform", stack="network", commit=C3, file="f", reason="x")
    full = journal.state()
    assert full.stacks["network"].suspended is not None
    for cut in range(len(journal.records) + 1):
        snapshot = json.loads(json.dumps(fold(journal.records[:cut]).to_snapshot()))
        resumed = JournalState.from_snapshot(snapshot)
        for record in journal.records[cut:]:
            resumed.apply(record)
        assert resumed == full, cut


def test_a_snapshot_written_before_suspensions_existed_still_loads(journal: Journal) -> None:
    journal.apply(1, C1, "create", "CREATE_COMPLETE")
    journal.add(Kind.COMMIT, repo="platform", commit=C1, previous=None, forced=False, changes=[])
    snapshot = journal.state().to_snapshot()
    for item in (*snapshot["stacks"], *snapshot["repos"]):
        del item["suspended"]
    state = JournalState.from_snapshot(snapshot)
    assert state.stacks["network"].suspended is None
    assert state.repos["platform"].suspended is None


def test_a_rollback_version_says_which_version_it_applies_again(journal: Journal) -> None:
    journal.apply(1, C1, "create", "CREATE_COMPLETE")
    journal.apply(2, C2, "update", "UPDATE_COMPLETE")
    journal.add(
        Kind.VERSION,
        repo="platform",
        stack="network",
        version=3,
        commit=C1,
        digest="digest-rollback",
        action="update",
        rollback_of=1,
    )
    journal.result(3, "succeeded", "UPDATE_COMPLETE")
    state = journal.state()
    assert [(r.version, r.commit, r.rollback_of) for r in state.history] == [
        (1, C1, None),
        (2, C2, None),
        (3, C1, 1),
    ]
    assert state.history[-1].as_dict()["rollback_of"] == 1
    assert (state.stacks["network"].version, state.stacks["network"].commit) == (3, C1)
    # A snapshot keeps it; one written before rollbacks existed loads without it.
    snapshot = json.loads(json.dumps(state.to_snapshot()))
    assert JournalState.from_snapshot(snapshot).history[-1].rollback_of == 1
    for row in snapshot["history"]:
        del row["rollback_of"]
    assert [r.rollback_of for r in JournalState.from_snapshot(snapshot).history] == [None] * 3


def test_the_history_in_memory_keeps_the_latest_rows_of_each_stack() -> None:
    from syncd.core.journal_state import JournalState

    records = []
    seq = 0
    for n in range(1, 701):
        for stack in ("a", "b"):
            seq += 1
            data = {"repo": "r", "stack": stack, "version": n, "commit": "c", "digest": "d"}
            records.append(Record(seq, "t", Kind.VERSION, {**data, "action": "update"}))
            if not (stack == "b" and n == 700):  # b's last version stays open
                seq += 1
                records.append(
                    Record(seq, "t", Kind.RESULT, {"stack": stack, "result": "succeeded"})
                )
    state = fold(records, history_limit=5)
    assert len(state.history) <= 1000  # trimmed as it grew, not left at 1,400
    latest = {s: [h.version for h in state.history if h.stack == s][-5:] for s in ("a", "b")}
    assert latest == {"a": [696, 697, 698, 699, 700], "b": [696, 697, 698, 699, 700]}
    assert state.stacks["b"].attempt is not None and state._open_rows["b"].version == 700
    again = JournalState.from_snapshot(state.to_snapshot())
    assert [h.version for h in again.history] == [h.version for h in state.history]
    again.apply(Record(seq + 1, "t", Kind.RESULT, {"stack": "b", "result": "failed"}))
    assert again.history[-1].result.value == "failed"  # the open row survived the trim
    assert len(fold(records, history_limit=None).history) == 1400
