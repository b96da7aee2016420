"""Apply one stack's desired state through a change set, journaling every step before it acts.

    version record -> CreateChangeSet -> wait -> change_set record -> executing record (fsync)
    -> ExecuteChangeSet -> wait for the stack to settle, streaming its events -> result record

Crash windows, and why each is safe:
- after `version`, before the change set is recorded: the change set's name is derived from the
  version and digest, so the next start finds it (AlreadyExists) and carries on with it;
- after `executing`, before the result: the next start never executes again blindly; it asks
  CloudFormation what became of the change set (still AVAILABLE means the call never happened)
  and of the stack, waits for it to settle, and records what it finds;
- while waiting: SIGTERM leaves the wait at once; the operation goes on in CloudFormation and is
  observed after the restart.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import structlog

from syncd.cloudformation import (
    AlreadyExists,
    ChangeSetInfo,
    CloudFormation,
    NoChanges,
    ObservedStack,
)
from syncd.core.config import Approval, OnFailure
from syncd.core.deployments import DesiredState
from syncd.core.journal_state import Attempt, Kind, Result, StackState, StackView
from syncd.core.stack_status import (
    CHANGE_SET_FAILED,
    CHANGE_SET_PENDING,
    EXECUTION_AVAILABLE,
    Condition,
    blocked_reason,
    condition,
    is_settled,
    means_no_changes,
    operation_succeeded,
)
from syncd.errors import AwsError
from syncd.journal.store import Journal


class Outcome(StrEnum):
    IN_SYNC = "in_sync"  # nothing to do: no AWS call was made
    SUCCEEDED = "succeeded"
    NO_CHANGES = "no_changes"
    FAILED = "failed"
    BLOCKED = "blocked"
    AWAITING_APPROVAL = "awaiting_approval"
    INTERRUPTED = "interrupted"  # stopping: the operation is journaled and observed next start

    @property
    def ok(self) -> bool:
        return self in (Outcome.IN_SYNC, Outcome.SUCCEEDED, Outcome.NO_CHANGES)


class Interrupted(Exception):
    """syncd is stopping; leave the stack where the journal says it is."""


@dataclass
class Waiter:
    """Polls with a growing pause (up to `max_pause`) and stops at once when asked to stop."""

    stop: threading.Event
    max_pause: float = 5.0
    first_pause: float = 0.1

    def pauses(self) -> Any:
        pause = min(self.first_pause, self.max_pause)
        while True:
            yield
            if self.stop.wait(pause):
                raise Interrupted()
            pause = min(pause * 2, self.max_pause)


@dataclass
class Applier:
    """Everything one stack's apply needs; shared by all stacks of a pass."""

    cfn: CloudFormation
    journal: Journal
    waiter: Waiter
    log: Any = field(default_factory=lambda: structlog.get_logger("syncd.apply"))

    # --- the entry point ------------------------------------------------------------------

    def apply(self, desired: DesiredState, commit: str) -> Outcome:
        """Bring one stack to `desired`; returns what happened. Never raises AwsError."""
        spec = desired.spec
        log = self.log.bind(repo=spec.repo, stack=spec.name, commit=commit[:12])
        view = self.journal.state.stacks.get(spec.name)
        if view is not None and view.attempt is not None and view.attempt.digest != desired.digest:
            self._finish_stale_attempt(view, log)
        view = self.journal.state.stacks.get(spec.name)
        attempt = view.attempt if view else None
        if (
            attempt is not None
            and attempt.change_set
            and not attempt.executing
            and view is not None
            and view.state is StackState.AWAITING_APPROVAL
            and spec.options.approval is Approval.MANUAL
        ):
            return Outcome.AWAITING_APPROVAL  # nothing new: no call until someone approves
        if attempt is None and not self._needs_apply(view, desired):
            if (
                view is not None
                and view.state in (StackState.FAILED, StackState.BLOCKED)
                and view.digest == desired.digest
                and view.failed_digest is None
            ):
                # e.g. a broken deployment file was fixed back to what is deployed
                self.journal.append(Kind.RECOVERED, stack=spec.name)
            return Outcome.IN_SYNC
        problem = self.cfn.template_problem(spec.name, spec.template_body)
        if problem and not (attempt and attempt.executing):
            # A config problem, not the template's: blocked, and applied once the config allows.
            return self._block(spec.name, spec.repo, None, log, reason=problem)
        try:
            if attempt is not None and attempt.executing:
                return self._resume_execution(spec.name, attempt, log)
            return self._apply(view, attempt, desired, commit, log)
        except Interrupted:
            log.info("apply.interrupted")
            return Outcome.INTERRUPTED
        except AwsError as exc:
            return self._fail(spec.name, str(exc), exc.retryable, log)

    def _needs_apply(self, view: StackView | None, desired: DesiredState) -> bool:
        if view is None:
            return True
        if view.failed_digest == desired.digest:
            # The same desired state failed before: only a new commit retries it, unless the
            # failure was syncd's own (retryable) or on_failure asks for retries.
            return view.retryable or desired.spec.options.on_failure is not OnFailure.KEEP
        if view.version is None:
            return True
        if view.digest == desired.digest:
            return view.state in (StackState.BLOCKED, StackState.DRIFTED)
        return True

    # --- a fresh or resumed attempt -------------------------------------------------------

    def _apply(
        self,
        view: StackView | None,
        attempt: Attempt | None,
        desired: DesiredState,
        commit: str,
        log: Any,
    ) -> Outcome:
        spec = desired.spec
        observed = self.cfn.describe(spec.name)
        cond = condition(observed.status if observed else None)
        if cond is Condition.ROLLED_BACK_CREATE and observed is not None:
            if spec.options.on_failure is not OnFailure.RECREATE:
                return self._block(spec.name, spec.repo, observed.status, log)
            self._delete_failed_create(observed, log)
            observed, cond = None, Condition.ABSENT
        if cond in (Condition.BUSY, Condition.FAILED) and observed is not None:
            return self._block(spec.name, spec.repo, observed.status, log)
        action = "create" if cond in (Condition.ABSENT, Condition.REVIEW) else "update"
        resuming = attempt is not None
        if attempt is None:
            attempt = self._start_version(view, desired, commit, action)
        log = log.bind(version=attempt.version)
        change_set = self._create_change_set(desired, attempt, action, log, resuming=resuming)
        if change_set is None:
            return self._record_result(spec.name, Result.NO_CHANGES, observed, log)
        if spec.options.approval is Approval.MANUAL:
            log.info("apply.awaiting_approval", change_set=change_set)
            return Outcome.AWAITING_APPROVAL
        return self._execute(spec.name, change_set, attempt.executing_at, log)

    def _start_version(
        self, view: StackView | None, desired: DesiredState, commit: str, action: str
    ) -> Attempt:
        spec = desired.spec
        if view is not None and view.digest == desired.digest and view.version is not None:
            version = view.version  # the same desired state again (drift, blocked): same version
        elif view is not None and view.failed_digest == desired.digest:
            version = view.latest_version  # a retry of the version that failed
        else:
            version = (view.latest_version if view else 0) + 1
        self.journal.append(
            Kind.VERSION,
            repo=spec.repo,
            stack=spec.name,
            version=version,
            commit=commit,
            digest=desired.digest,
            action=action,
            template_file=spec.template_file,
            parameters=desired.redacted_parameters(),
            tags=dict(spec.tags),
            dependencies=sorted(spec.dependencies),
        )
        attempt = self.journal.state.stacks[spec.name].attempt
        assert attempt is not None
        return attempt

    def _create_change_set(
        self, desired: DesiredState, attempt: Attempt, action: str, log: Any, *, resuming: bool
    ) -> str | None:
        """The change set's ARN once it is ready, or None when it would change nothing."""
        spec = desired.spec
        if attempt.change_set:
            info = self.cfn.describe_change_set(attempt.change_set, spec.name)
            if info is not None and info.execution_status == EXECUTION_AVAILABLE:
                return str(info.arn)
        name = change_set_name(spec.name, attempt.version, desired.digest)
        # Only an attempt opened by an earlier process can have created this name already.
        arn = self._find_change_set(spec.name, name) if resuming else None
        for _ in range(3):
            if arn is not None:
                break
            try:
                arn = self.cfn.create_change_set(
                    stack=spec.name,
                    name=name,
                    change_set_type=action.upper(),
                    template=spec.template_body,
                    digest=desired.digest,
                    parameters=dict(desired.parameters),
                    tags=dict(spec.tags),
                    capabilities=spec.options.capabilities,
                    description=f"syncd {spec.repo} {attempt.commit[:12]} v{attempt.version}",
                )
            except NoChanges:
                log.info("apply.no_changes")
                return None
            except AlreadyExists:
                # Left by a run that crashed before recording it: use it, or clear it away.
                arn = self._find_change_set(spec.name, name)
                continue
            log.info("change_set.created", change_set=name, change_set_type=action.upper())
        if arn is None:
            raise AwsError(f"change set {name} exists and could not be replaced", retryable=True)
        info = self._wait_change_set(arn, spec.name)
        if info.status == CHANGE_SET_FAILED:
            self.cfn.delete_change_set(arn, spec.name)
            if means_no_changes(info.reason):
                log.info("apply.no_changes")
                return None
            raise AwsError(f"change set failed: {info.reason}", code="ChangeSetFailed")
        self.journal.append(
            Kind.CHANGE_SET,
            stack=spec.name,
            version=attempt.version,
            arn=info.arn,
            name=info.name or name,
            changes=info.changes,
            awaiting_approval=spec.options.approval is Approval.MANUAL,
        )
        for change in info.changes:
            log.info("change_set.change", **change)
        return str(info.arn)

    def _find_change_set(self, stack: str, name: str) -> str | None:
        """A change set a crashed run created under this deterministic name, if usable."""
        info = self.cfn.describe_change_set(name, stack)
        if info is None:
            return None
        if info.execution_status == EXECUTION_AVAILABLE or info.status in CHANGE_SET_PENDING:
            return info.arn
        self.cfn.delete_change_set(info.arn, stack)
        return None

    def _wait_change_set(self, arn: str, stack: str) -> ChangeSetInfo:
        for _ in self.waiter.pauses():
            info = self.cfn.describe_change_set(arn, stack)
            if info is None:
                raise AwsError(f"change set {arn} disappeared", retryable=True)
            if info.status not in CHANGE_SET_PENDING:
                return info
        raise AssertionError("unreachable")  # pragma: no cover

    def _execute(self, stack: str, arn: str, _: str | None, log: Any) -> Outcome:
        # The intent is on disk before the call: after a crash, the next start observes.
        self.journal.append(Kind.EXECUTING, stack=stack, change_set=arn)
        started = datetime.now(UTC)
        log.info("change_set.executing", change_set=arn)
        self.cfn.execute_change_set(arn, stack)
        return self._settle(stack, started, log)

    # --- waiting and results --------------------------------------------------------------

    def _settle(self, stack: str, since: datetime, log: Any) -> Outcome:
        observed = self._wait_stack(stack, since, log)
        status = observed.status if observed else None
        if operation_succeeded(status):
            return self._record_result(stack, Result.SUCCEEDED, observed, log)
        reason = self._failure_reason(stack, since) or (observed.reason if observed else None)
        return self._fail(
            stack, f"{status}: {reason or 'the operation failed'}", False, log, stack_status=status
        )

    def _wait_stack(self, stack: str, since: datetime, log: Any) -> ObservedStack | None:
        """Poll until the stack settles, streaming its events to the log while it runs (an
        operation that is over at the first poll costs no events call; a failure reads them)."""
        seen: set[str] = set()
        streaming = False
        for _ in self.waiter.pauses():
            observed = self.cfn.describe(stack)
            settled = observed is None or is_settled(observed.status)
            if streaming or not settled:
                self._stream_events(stack, since, seen, log)
                streaming = True
            if settled:
                return observed
            log.debug("stack.waiting", stack_status=observed.status if observed else None)
        raise AssertionError("unreachable")  # pragma: no cover

    def _stream_events(self, stack: str, since: datetime, seen: set[str], log: Any) -> None:
        for event in self.cfn.events(stack):
            if event.event_id in seen or _aware(event.timestamp) < since.replace(microsecond=0):
                continue
            seen.add(event.event_id)
            log.info(
                "stack.event",
                resource=event.logical_id,
                resource_type=event.resource_type,
                resource_status=event.status,
                reason=event.reason,
            )

    def _failure_reason(self, stack: str, since: datetime) -> str | None:
        for event in reversed(self.cfn.events(stack)):
            if _aware(event.timestamp) < since.replace(microsecond=0):
                break
            if event.status.endswith("_FAILED") and event.reason:
                return f"{event.logical_id}: {event.reason}"
        return None

    def _record_result(
        self, stack: str, result: Result, observed: ObservedStack | None, log: Any
    ) -> Outcome:
        self.journal.append(
            Kind.RESULT,
            stack=stack,
            result=result.value,
            stack_status=observed.status if observed else None,
            outputs=observed.outputs if observed else {},
            message="",
        )
        log.info(
            "apply.settled", result=result.value, stack_status=observed.status if observed else None
        )
        return Outcome.SUCCEEDED if result is Result.SUCCEEDED else Outcome.NO_CHANGES

    def _fail(
        self,
        stack: str,
        message: str,
        retryable: bool,
        log: Any,
        stack_status: str | None = None,
    ) -> Outcome:
        view = self.journal.state.stacks.get(stack)
        if view is not None and view.attempt is not None:
            self.journal.append(
                Kind.RESULT,
                stack=stack,
                result=Result.FAILED.value,
                stack_status=stack_status,
                message=message,
                retryable=retryable,
            )
        log.error("apply.failed", error=message, retryable=retryable)
        return Outcome.FAILED

    def _block(
        self, stack: str, repo: str, stack_status: str | None, log: Any, reason: str = ""
    ) -> Outcome:
        reason = reason or blocked_reason(stack_status or "")
        view = self.journal.state.stacks.get(stack)
        if view is not None and view.attempt is not None and not view.attempt.executing:
            # An attempt that never reached execute ends here; the stack is blocked, not failed.
            self.journal.append(
                Kind.RESULT,
                stack=stack,
                result=Result.FAILED.value,
                stack_status=stack_status,
                message=reason,
                retryable=True,
            )
            view = self.journal.state.stacks.get(stack)
        if view is None or view.state is not StackState.BLOCKED or view.message != reason:
            self.journal.append(
                Kind.BLOCKED, repo=repo, stack=stack, stack_status=stack_status, reason=reason
            )
        log.warning("apply.blocked", stack_status=stack_status, reason=reason)
        return Outcome.BLOCKED

    def _delete_failed_create(self, observed: ObservedStack, log: Any) -> None:
        """on_failure: recreate. A ROLLBACK_COMPLETE stack holds no resources; delete it."""
        log.warning("stack.recreate", stack_status=observed.status)
        self.cfn.delete_stack(observed.name)
        self._wait_stack(observed.name, datetime.now(UTC), log)

    # --- after a crash or a newer commit ----------------------------------------------------

    def _resume_execution(self, stack: str, attempt: Attempt, log: Any) -> Outcome:
        """The journal says we were about to execute; find out what CloudFormation did."""
        log = log.bind(version=attempt.version)
        since = _parse_time(attempt.executing_at or attempt.started_at)
        if attempt.action == "delete":
            return self._settle_delete(stack, since, log)
        info = None
        if attempt.change_set:
            info = self.cfn.describe_change_set(attempt.change_set, stack)
        if info is not None and info.execution_status == EXECUTION_AVAILABLE:
            # Still AVAILABLE: the execute call never reached CloudFormation. Make it now.
            log.info("change_set.resume_execute", change_set=info.arn)
            self.cfn.execute_change_set(info.arn, stack)
        else:
            log.info(
                "change_set.observe_after_restart",
                execution_status=info.execution_status if info else None,
            )
        return self._settle(stack, since, log)

    def _finish_stale_attempt(self, view: StackView, log: Any) -> None:
        """A newer commit arrived while an older attempt was open: close the older one."""
        attempt = view.attempt
        assert attempt is not None
        try:
            if attempt.executing:
                self._resume_execution(view.stack, attempt, log)
                return
            if attempt.change_set:
                self.cfn.delete_change_set(attempt.change_set, view.stack)
        except Interrupted:
            raise
        except AwsError as exc:
            log.warning("apply.stale_attempt_cleanup_failed", error=str(exc))
        self.journal.append(
            Kind.RESULT,
            stack=view.stack,
            result=Result.FAILED.value,
            message=f"superseded by a newer commit before version {attempt.version} ran",
            retryable=True,
        )

    # --- prune ------------------------------------------------------------------------------

    def delete(self, view: StackView, commit: str) -> Outcome:
        """Delete a stack whose deployment file is gone (prune: true)."""
        log = self.log.bind(repo=view.repo, stack=view.stack, commit=commit[:12])
        try:
            if view.attempt is None or view.attempt.action != "delete":
                self.journal.append(
                    Kind.VERSION,
                    repo=view.repo,
                    stack=view.stack,
                    version=view.latest_version + 1,
                    commit=commit,
                    digest="",
                    action="delete",
                    template_file="",
                    parameters={},
                    tags={},
                    dependencies=[],
                )
            self.journal.append(Kind.EXECUTING, stack=view.stack, change_set=None)
            since = datetime.now(UTC)
            log.warning("stack.deleting")
            self.cfn.delete_stack(view.stack)
            return self._settle_delete(view.stack, since, log)
        except Interrupted:
            return Outcome.INTERRUPTED
        except AwsError as exc:
            return self._fail(view.stack, str(exc), exc.retryable, log)

    def _settle_delete(self, stack: str, since: datetime, log: Any) -> Outcome:
        observed = self._wait_stack(stack, since, log)
        if observed is None:
            return self._record_result(stack, Result.SUCCEEDED, None, log)
        if observed.status == "DELETE_COMPLETE":
            return self._record_result(stack, Result.SUCCEEDED, None, log)
        return self._fail(
            stack,
            f"{observed.status}: {observed.reason or 'delete failed'}",
            False,
            log,
            stack_status=observed.status,
        )


def change_set_name(stack: str, version: int, digest: str) -> str:
    """Deterministic, so that a restarted syncd finds the change set it created."""
    return f"syncd-v{version}-{digest[:16]}"


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
