"""Apply one stack's desired state through a change set, journaling every step before it acts.

    shared look (busy? absent?) -> version record -> CreateChangeSet -> wait -> change_set
    record -> executing record (fsync) -> ExecuteChangeSet -> shared looks until the stack has
    settled -> its events, read once and logged -> result record

Every look at a stack's status goes through `syncd.world` (one look per tick for every stack
waiting), never a DescribeStacks of its own; only the change set and the events are asked
about per stack.

The rule that keeps it safe: once an `executing` record is on disk, only an observed, settled
stack may close that attempt. Any other error leaves it open, and the next pass asks
CloudFormation what became of it; it is never executed again blindly (CloudFormation refuses a
second execute of one change set anyway, and the execute carries a ClientRequestToken).

Crash windows:
- after `version`, before the change set is recorded: the change set's name is derived from the
  version and digest, so the next start finds it and carries on with it;
- after `executing`, before the result: the next start looks at the change set (still AVAILABLE
  means the call never reached CloudFormation, so it is made now) and at the stack, waits for it
  to settle, and records what it finds;
- while waiting: SIGTERM leaves the wait at once; the operation goes on in CloudFormation and is
  observed after the restart.
One stack is never worked on by two threads at once (a lock per stack name).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import structlog

from syncd.cloudformation import (
    STACK_BUSY,
    AlreadyExists,
    ChangeSetInfo,
    NoChanges,
    NotFound,
    ObservedStack,
    StackEvent,
)
from syncd.clouds import Gateways, Worlds
from syncd.core.config import Approval, OnFailure
from syncd.core.deployments import DesiredState
from syncd.core.journal_state import Attempt, Kind, Result, StackState, StackView
from syncd.core.ownership import delete_refused, owner_tags, refused_for
from syncd.core.stack_status import (
    CHANGE_SET_FAILED,
    CHANGE_SET_PENDING,
    EXECUTION_AVAILABLE,
    EXECUTION_RUNNING,
    Condition,
    blocked_reason,
    condition,
    is_settled,
    means_no_changes,
    operation_succeeded,
)
from syncd.core.text import bounded
from syncd.errors import AwsError
from syncd.journal.store import Journal
from syncd.world import LookFailed


class Outcome(StrEnum):
    IN_SYNC = "in_sync"  # nothing to do: no AWS call was made
    SUCCEEDED = "succeeded"
    NO_CHANGES = "no_changes"
    FAILED = "failed"
    BLOCKED = "blocked"
    AWAITING_APPROVAL = "awaiting_approval"
    REFUSED = "approval_refused"  # an approval of a change set that is not the one waiting
    INTERRUPTED = "interrupted"  # stopping: the operation is journaled and observed next start
    SUSPENDED = "suspended"  # `syncd suspend`: not looked at, no AWS call (not a failure)
    UNKNOWN = "outcome_unknown"  # executed, and CloudFormation's answer could not be read

    @property
    def ok(self) -> bool:
        return self in (Outcome.IN_SYNC, Outcome.SUCCEEDED, Outcome.NO_CHANGES, Outcome.SUSPENDED)


class Interrupted(Exception):
    """syncd is stopping; leave the stack where the journal says it is."""


@dataclass
class Waiter:
    """Polls with a growing pause (up to `max_pause`) and stops at once when asked to stop."""

    stop: threading.Event
    max_pause: float = 5.0
    first_pause: float = 0.1
    # A change set is never ready the moment it is created on AWS (2-30 s): its first look
    # comes after this pause, then the pause doubles like every other wait.
    change_set_pause: float = 0.2

    def settling(self) -> Any:
        """Yields before each look at a running operation: at once, then after pauses of a
        quarter of the time waited so far (at least `first_pause`, at most `max_pause`), so an
        operation is seen to end at most 25 % after it did. The looks are shared by every
        stack waiting (`syncd.world`), which makes the extra ones nearly free."""
        started = time.monotonic()
        while True:
            yield
            waited = time.monotonic() - started
            if self.stop.wait(min(self.max_pause, max(self.first_pause, waited / 4))):
                raise Interrupted()

    def pauses(self, first: float = 0.0) -> Any:
        """Yields before each look: at once (or after `first`), then after growing pauses."""
        if first and self.stop.wait(min(first, self.max_pause)):
            raise Interrupted()
        pause = min(first * 2 or self.first_pause, self.max_pause)
        while True:
            yield
            if self.stop.wait(pause):
                raise Interrupted()
            pause = min(pause * 2, self.max_pause)


class NotExecuted(AwsError):
    """ExecuteChangeSet failed and the change set is still AVAILABLE: it did not run."""


_EXECUTION_STARTED = frozenset({"EXECUTE_IN_PROGRESS", "EXECUTE_COMPLETE", "EXECUTE_FAILED"})

# How long a just-executed stack may still look unstarted (REVIEW_IN_PROGRESS, missing, or its
# old status) before syncd takes that at face value.
_START_WINDOW = 75.0
# Missed looks in a row (each a pause longer than the last) before the error counts.
_LOOK_TRIES = 12
# Reads of a settled stack's events in a row before they are logged as unreadable.
_EVENT_TRIES = 4
# After an execute whose outcome could not be read: when to look again (doubled each time).
UNKNOWN_FIRST = 15.0
UNKNOWN_MAX = 600.0


@dataclass
class Applier:
    """Everything one stack's apply needs; shared by all stacks and repos."""

    cfn: Gateways
    world: Worlds  # the shared look: stack statuses come from here, never a poll of their own
    journal: Journal
    waiter: Waiter
    # Called after an intent (execute, delete) is journaled and before the AWS call: the
    # journal's mirror uploads it, so a host lost mid-apply still has the intent in S3.
    before_acting: Callable[[], object] = field(default=lambda: None)
    log: Any = field(default_factory=lambda: structlog.get_logger("syncd.apply"))
    _locks: dict[str, threading.Lock] = field(default_factory=dict, repr=False)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _lock(self, stack: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(stack, threading.Lock())

    # --- entry points ------------------------------------------------------------------------

    def apply(self, desired: DesiredState, commit: str, rollback_of: int | None = None) -> Outcome:
        """Bring one stack to `desired`; returns what happened. Never raises AwsError.

        The stack's status before its change set comes from a shared look that starts after
        this call (a look from before could miss a stack deleted or busy meanwhile).
        `rollback_of` (`syncd rollback`): the version whose desired state this is again; its
        version record says so, and a desired state that failed before is tried again."""
        spec = desired.spec
        log = self.log.bind(repo=spec.repo, stack=spec.name, commit=commit[:12])
        since = time.monotonic()
        with self._lock(spec.name):
            return self._guarded(
                spec.name,
                log,
                lambda: self._apply(desired, commit, since, log, rollback_of),
                repo=spec.repo,
            )

    def hold(self, stack: str, repo: str, reason: str) -> Outcome:
        """The stack cannot be applied now (a dependency failed, an output is missing)."""
        log = self.log.bind(repo=repo, stack=stack)
        with self._lock(stack):

            def step() -> Outcome:
                view = self.journal.state.stacks.get(stack)
                attempt = view.attempt if view else None
                if attempt is not None and attempt.executing:
                    return self._resume_execution(stack, attempt, log)
                if attempt is not None and attempt.awaiting_approval:
                    return Outcome.AWAITING_APPROVAL  # its change set stays valid meanwhile
                return self._block(stack, repo, None, log, reason=reason)

            return self._guarded(stack, log, step)

    def approve(self, stack: str, change_set: str, by: str) -> Outcome:
        """Execute the change set waiting for approval, if it is `change_set` (the one the
        approver saw); else record the refusal. A newer commit has replaced a stale one."""
        log = self.log.bind(stack=stack)
        with self._lock(stack):

            def step() -> Outcome:
                view = self.journal.state.stacks.get(stack)
                attempt = view.attempt if view else None
                waiting = attempt.change_set if attempt and attempt.awaiting_approval else None
                if attempt is None or waiting != change_set:
                    reason = (
                        f"the change set waiting now is {waiting}"
                        if waiting
                        else "no change set of this stack is waiting for approval"
                    )
                    return self._refuse_approval(stack, change_set, by, reason, log)
                bound = log.bind(repo=view.repo if view else "", version=attempt.version)
                self.journal.append(Kind.APPROVED, stack=stack, change_set=change_set, by=by)
                bound.info("approval.accepted", change_set=change_set, by=by)
                baseline = self._observe(stack, time.monotonic())[0]
                return self._execute(stack, change_set, baseline, bound)

            return self._guarded(stack, log, step)

    def refuse_approval(self, stack: str, change_set: str, by: str, reason: str) -> Outcome:
        """Record that an approval was not acted on, and why."""
        with self._lock(stack):
            return self._refuse_approval(stack, change_set, by, reason, self.log.bind(stack=stack))

    def _refuse_approval(
        self, stack: str, change_set: str, by: str, reason: str, log: Any
    ) -> Outcome:
        self.journal.append(
            Kind.APPROVAL_REFUSED, stack=stack, change_set=change_set, by=by, reason=reason
        )
        log.warning("approval.refused", change_set=change_set, reason=reason)
        return Outcome.REFUSED

    def close(self, view: StackView, why: str) -> Outcome | None:
        """The stack is no longer desired as its open attempt says (file removed or invalid):
        observe an execution to its end, or end an attempt that never executed."""
        if view.attempt is None:
            return None
        log = self.log.bind(repo=view.repo, stack=view.stack)
        with self._lock(view.stack):
            return self._guarded(view.stack, log, lambda: self._close_attempt(view.stack, why, log))

    def delete(self, view: StackView, commit: str) -> Outcome:
        """Delete a stack whose deployment file is gone from the branch (prune: true)."""
        log = self.log.bind(repo=view.repo, stack=view.stack, commit=commit[:12])
        with self._lock(view.stack):
            return self._guarded(view.stack, log, lambda: self._delete(view.stack, commit, log))

    def _guarded(self, stack: str, log: Any, step: Any, repo: str = "") -> Outcome:
        try:
            if self.waiter.stop.is_set():
                raise Interrupted()  # stopping: a stack that got its slot late starts nothing
            outcome: Outcome = step()
            return outcome
        except Interrupted:
            log.info("apply.interrupted")
            return Outcome.INTERRUPTED
        except NotExecuted as exc:
            if exc.code == STACK_BUSY:
                # Refused before it ran (the stack turned busy): not run, and blocked until the
                # other operation is over.
                self._fail(stack, f"did not run: {exc}", True, log)
                view = self.journal.state.stacks.get(stack)
                return self._block(stack, view.repo if view else "", None, log, reason=str(exc))
            return self._fail(stack, str(exc), exc.retryable, log)
        except AwsError as exc:
            view = self.journal.state.stacks.get(stack)
            if view is not None and view.attempt is not None and view.attempt.executing:
                return self._unknown(stack, view.attempt, exc, log)
            if exc.code == STACK_BUSY and view is not None:
                # An operation began after the shared look saw the stack idle: blocked, like a
                # stack seen busy, and looked at again next pass.
                return self._block(stack, view.repo, None, log, reason=str(exc))
            if view is None or view.attempt is None:
                # Nothing is journaled for this try yet (the look before it failed): without a
                # record, `status` would go on showing the last success while the commit is not
                # applied, and no pass would try again. Blocked is looked at again each pass.
                owner = view.repo if view is not None and view.repo else repo
                return self._block(stack, owner, None, log, reason=f"could not start: {exc}")
            return self._fail(stack, str(exc), exc.retryable, log)

    def _unknown(self, stack: str, attempt: Attempt, exc: AwsError, log: Any) -> Outcome:
        """The execute was made (or may have been) and what became of it cannot be read: the
        attempt stays open, and says so, with when syncd looks again (sooner at first, then
        less often: UNKNOWN_FIRST doubled each time up to UNKNOWN_MAX). Any pass looks again;
        a daemon's next pass comes by then at the latest."""
        tries = attempt.unknown_tries + 1
        delay = min(UNKNOWN_FIRST * 2.0 ** (tries - 1), UNKNOWN_MAX)
        at = (datetime.now(UTC) + timedelta(seconds=delay)).isoformat(timespec="seconds")
        reason = bounded(str(exc))
        self.journal.append(
            Kind.OUTCOME_UNKNOWN, stack=stack, reason=reason, tries=tries, look_again_at=at
        )
        log.error("apply.outcome_unknown", error=reason, tries=tries, look_again_at=at)
        return Outcome.UNKNOWN

    # --- apply ---------------------------------------------------------------------------------

    def _apply(
        self,
        desired: DesiredState,
        commit: str,
        fresh_after: float,
        log: Any,
        rollback_of: int | None = None,
    ) -> Outcome:
        spec = desired.spec
        view = self.journal.state.stacks.get(spec.name)
        if (
            view is not None
            and view.repo not in ("", spec.repo)
            and not view.removed
            and (view.version is not None or view.attempt is not None)
        ):
            # Checked again here, under the stack's lock: two repos racing for one new stack.
            log.error("deployment.conflict", owner=view.repo)
            return Outcome.FAILED
        if view is not None and view.attempt is not None and view.attempt.digest != desired.digest:
            self._close_attempt(spec.name, "superseded by a newer commit", log)
            view = self.journal.state.stacks.get(spec.name)
        attempt = view.attempt if view else None
        if attempt is not None and attempt.executing:
            return self._resume_execution(spec.name, attempt, log)
        if attempt is not None and attempt.awaiting_approval and _manual(desired):
            return Outcome.AWAITING_APPROVAL  # nothing new: no call until someone approves
        if attempt is None and view is not None and view.may_hold_applied(desired.digest):
            # A revert to what was last applied, after a failure that left the stack as it
            # was (or a broken file, fixed): if the stack, settled, shows what syncd applied,
            # it is in sync again without a change set; else the change set below decides.
            observed, _ = self._observe(spec.name, fresh_after)
            if (
                observed is not None
                and condition(observed.status) is Condition.STABLE
                and view.differs_from(observed.parameters, observed.tags) is None
            ):
                self.journal.append(
                    Kind.BACK_IN_SYNC,
                    repo=spec.repo,
                    stack=spec.name,
                    commit=commit,
                    stack_status=observed.status,
                )
                log.info("apply.back_in_sync", version=view.version)
                return Outcome.IN_SYNC
        if attempt is None and not self._needs_apply(view, desired, rollback_of is not None):
            failed = view is not None and view.state is StackState.FAILED
            return Outcome.FAILED if failed else Outcome.IN_SYNC
        problem = spec.capability_problem or self.cfn.template_problem(
            spec.name, spec.template_body
        )
        if problem:
            # A config problem, not the template's: blocked, and applied once the config allows.
            return self._block(spec.name, spec.repo, None, log, reason=problem)
        return self._change(view, attempt, desired, commit, fresh_after, log, rollback_of)

    def _needs_apply(
        self, view: StackView | None, desired: DesiredState, asked: bool = False
    ) -> bool:
        if view is None:
            return True
        if view.version is not None and view.digest == desired.digest:
            # What is deployed is what is wanted: act only when the stack is not in sync
            # (drifted, blocked, or failed on a newer version that has since been reverted).
            return view.state is not StackState.IN_SYNC
        if view.failed_digest == desired.digest:
            # The same desired state failed before: only a new commit retries it, unless the
            # failure was syncd's own (retryable) or on_failure asks for retries, or someone
            # asks for it (`syncd rollback`).
            return asked or view.retryable or desired.spec.options.on_failure is not OnFailure.KEEP
        return True

    def _change(
        self,
        view: StackView | None,
        attempt: Attempt | None,
        desired: DesiredState,
        commit: str,
        fresh_after: float,
        log: Any,
        rollback_of: int | None = None,
    ) -> Outcome:
        spec = desired.spec
        observed, _ = self._observe(spec.name, fresh_after)
        cond = condition(observed.status if observed else None)
        if observed is not None:  # before anything is done to it, recreate included
            refused = refused_for(spec, observed.tags, observed.stack_id, view=view)
            if refused:
                return self._block(spec.name, spec.repo, None, log, reason=refused)
        if cond is Condition.ROLLED_BACK_CREATE and observed is not None:
            if spec.options.on_failure is not OnFailure.RECREATE:
                return self._block(spec.name, spec.repo, observed.status, log)
            self._delete_failed_create(spec.name, observed, log)
            observed, cond = None, Condition.ABSENT
        if cond in (Condition.BUSY, Condition.FAILED) and observed is not None:
            return self._block(spec.name, spec.repo, observed.status, log)
        action = "create" if cond in (Condition.ABSENT, Condition.REVIEW) else "update"
        resuming = attempt is not None
        if attempt is None:
            attempt = self._start_version(view, desired, commit, action, rollback_of)
        log = log.bind(version=attempt.version)
        change_set = self._create_change_set(desired, attempt, action, log, resuming=resuming)
        if change_set is None:
            return self._record_result(spec.name, Result.NO_CHANGES, observed, log)
        if _manual(desired):
            log.info("apply.awaiting_approval", change_set=change_set)
            return Outcome.AWAITING_APPROVAL
        try:
            return self._execute(spec.name, change_set, observed, log)
        except NotExecuted as exc:
            if exc.code != "ValidationError":
                raise
            # moto checks a template only when its change set is executed (CloudFormation
            # when it is made): refused, and it did not run.
            raise NotExecuted(spec.refused(exc), code=exc.code, retryable=exc.retryable) from exc

    def _start_version(
        self,
        view: StackView | None,
        desired: DesiredState,
        commit: str,
        action: str,
        rollback_of: int | None = None,
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
            deployment_file=spec.deployment_file,
            template_file=spec.template_file,
            parameters=desired.redacted_parameters(),
            tags=dict(spec.tags),
            dependencies=sorted(spec.dependencies),
            **({"rollback_of": rollback_of} if rollback_of is not None else {}),
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
        name = change_set_name(attempt.version, desired.digest)
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
                    tags=dict(spec.tags) | owner_tags(spec.repo),
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
            except NotFound as exc:
                # An update of a stack deleted since syncd looked: the next pass looks again
                # (and creates it).
                raise AwsError(f"{exc} (deleted since syncd looked)", retryable=True) from exc
            except AwsError as exc:
                if exc.code != "ValidationError":  # a busy stack has a code of its own
                    raise
                raise AwsError(spec.refused(exc), code=exc.code, retryable=exc.retryable) from exc
            log.info("change_set.created", change_set=name, change_set_type=action.upper())
        if arn is None:
            raise AwsError(f"change set {name} exists and could not be replaced", retryable=True)
        info = self._wait_change_set(arn, spec.name)
        if info.status == CHANGE_SET_FAILED:
            self.cfn.delete_change_set(arn, spec.name)
            if means_no_changes(info.reason):
                log.info("apply.no_changes")
                return None
            reason = spec.refused(f"change set failed: {info.reason}")
            raise AwsError(reason, code="ChangeSetFailed")
        self.journal.append(
            Kind.CHANGE_SET,
            stack=spec.name,
            repo=spec.repo,
            commit=attempt.commit,
            version=attempt.version,
            arn=info.arn,
            name=info.name or name,
            changes=info.changes,
            awaiting_approval=_manual(desired),
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
        for _ in self.waiter.pauses(first=self.waiter.change_set_pause):
            info = self._describe_change_set(arn, stack)
            if info is None:
                raise AwsError(f"change set {arn} disappeared", retryable=True)
            if info.status not in CHANGE_SET_PENDING:
                return info
        raise AssertionError("unreachable")  # pragma: no cover

    def _describe_change_set(self, arn: str, stack: str) -> ChangeSetInfo | None:
        """One poll of a change set. A poll that failed for a passing reason (throttled) is
        missed, not retried with botocore's back-off, and made again after a short pause rather
        than the next, longer one: a missed poll must not leave a ready change set unseen for
        as long again as it has waited."""
        for missed, _ in enumerate(self.waiter.pauses(), start=1):
            try:
                return self.cfn.describe_change_set(arn, stack, once=True)
            except AwsError as exc:
                if not exc.retryable or missed >= _LOOK_TRIES:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _execute(self, stack: str, arn: str, baseline: ObservedStack | None, log: Any) -> Outcome:
        """Execute `arn`; `baseline` is the stack as it was before (None: not there)."""
        # The intent is on disk before the call: after a crash, the next start observes.
        self.journal.append(Kind.EXECUTING, stack=stack, change_set=arn)
        self.before_acting()
        started = datetime.now(UTC)
        log.info("change_set.executing", change_set=arn)
        self._execute_call(stack, arn, log, baseline=baseline, since=started)
        return self._settle(stack, started, log, change_set=arn, baseline=baseline)

    def _execute_call(
        self,
        stack: str,
        arn: str,
        log: Any,
        *,
        baseline: ObservedStack | None = None,
        since: datetime | None = None,
    ) -> None:
        """ExecuteChangeSet; on an error, find out whether it ran before deciding anything:
        it ran if the change set says it is executing or executed, or (a change set that is
        gone: AWS removes them once one ran) if the stack has moved since `baseline`."""
        try:
            self.cfn.execute_change_set(arn, stack, token=_request_token(arn))
        except AwsError as exc:
            info = self.cfn.describe_change_set(arn, stack)
            if info is not None and info.execution_status not in _EXECUTION_STARTED:
                # AVAILABLE (the call never landed) or OBSOLETE/UNAVAILABLE (it never will)
                raise NotExecuted(
                    f"{exc} (change set {info.execution_status})",
                    code=exc.code,
                    retryable=exc.retryable and info.execution_status == EXECUTION_AVAILABLE,
                ) from exc
            if info is None and not self._stack_moved(stack, baseline, since):
                raise NotExecuted(
                    f"{exc}; the change set is gone and the stack shows no sign of it running",
                    code=exc.code,
                ) from exc
            log.warning("change_set.execute_error_but_ran", error=str(exc))

    def _stack_moved(
        self, stack: str, baseline: ObservedStack | None, since: datetime | None
    ) -> bool:
        now = self.cfn.describe(stack)
        if now is None:
            return False
        if baseline is None:  # it did not exist: a CREATE change set leaves it in review
            return now.status != "REVIEW_IN_PROGRESS"
        if (now.status, now.last_updated) != (baseline.status, baseline.last_updated):
            return True
        return since is not None and any(
            e.logical_id == stack and e.timestamp > since for e in self.cfn.events(stack, since)
        )

    # --- waiting and results -----------------------------------------------------------------

    def _settle(
        self,
        stack: str,
        since: datetime,
        log: Any,
        *,
        change_set: str | None = None,
        baseline: ObservedStack | None = None,
    ) -> Outcome:
        observed = self._wait_stack(stack, log, change_set=change_set, baseline=baseline)
        # One look at the events, once the stack has settled: they go to the log in order,
        # and a failure's reason is read from the same page. They never decide the outcome:
        # events that cannot be read are logged as such and the result recorded all the same.
        events = self._log_events(stack, since, log)
        status = observed.status if observed else None
        if status is not None and operation_succeeded(status):
            return self._record_result(stack, Result.SUCCEEDED, observed, log)
        reason = _failure_reason(events) or (observed.reason if observed else None)
        if observed is None:
            reason = "the stack disappeared while it was being changed"
        return self._fail(
            stack, f"{status}: {reason or 'the operation failed'}", False, log, stack_status=status
        )

    def _wait_stack(
        self,
        stack: str,
        log: Any,
        *,
        change_set: str | None = None,
        baseline: ObservedStack | None = None,
        deleting: bool = False,
    ) -> ObservedStack | None:
        """Wait until the stack settles, looking through the shared look (which serves every
        stack waiting with one look per tick).

        Right after an execute the stack may not show the operation yet (REVIEW_IN_PROGRESS,
        not listed, or still its old status): that is not taken as the end of it."""
        seen_at = began = time.monotonic()  # only looks that start after the call began it
        for poll, _ in enumerate(self.waiter.settling()):
            observed, seen_at = self._observe(stack, seen_at)
            settled = observed is None or is_settled(observed.status)
            if settled and not deleting and seen_at - began < _START_WINDOW:
                settled = not self._not_started(stack, observed, change_set, baseline, poll)
            if settled:
                return observed
            log.debug("stack.waiting", stack_status=observed.status if observed else None)
        raise AssertionError("unreachable")  # pragma: no cover

    def _observe(self, stack: str, newer_than: float) -> tuple[ObservedStack | None, float]:
        """The shared look's answer for `stack`; a look that failed for a passing reason
        (throttled, AWS unwell) is asked for again after a pause, up to `_LOOK_TRIES` times
        in a row (about as long as botocore's own retries would have taken)."""
        for tries, _ in enumerate(self.waiter.pauses(), start=1):
            if self.waiter.stop.is_set():
                raise Interrupted()
            try:
                return self.world.observe(stack, newer_than)
            except LookFailed as exc:
                if not exc.retryable or tries >= _LOOK_TRIES:
                    raise
                newer_than = max(newer_than, exc.at)
                self.log.debug("stack.look_missed", stack=stack, error=str(exc))
        raise AssertionError("unreachable")  # pragma: no cover

    def _not_started(
        self,
        stack: str,
        observed: ObservedStack | None,
        change_set: str | None,
        baseline: ObservedStack | None,
        poll: int,
    ) -> bool:
        if observed is None or observed.status == "REVIEW_IN_PROGRESS":
            return change_set is not None
        if change_set is None or poll > 0 or baseline is None:
            return False
        if (observed.status, observed.last_updated) != (baseline.status, baseline.last_updated):
            return False  # it moved since the execute: the operation ran
        # Exactly as before the execute: ask the change set (one call, only for an update
        # that looks over, or not begun, at the first look).
        info = self.cfn.describe_change_set(change_set, stack)
        return info is not None and info.execution_status in (
            EXECUTION_AVAILABLE,
            EXECUTION_RUNNING,
        )

    def _log_events(self, stack: str, since: datetime, log: Any) -> list[StackEvent]:
        """The stack's events since `since`, oldest first, each logged once (none, with a
        warning, if they cannot be read: e.g. a role without DescribeStackEvents). A throttled
        read is made again after a short pause, not botocore's back-off: the stack's dependents
        wait for this read."""
        for tries, _ in enumerate(self.waiter.pauses(), start=1):
            try:
                events = self.cfn.events(stack, since, once=True)
                break
            except AwsError as exc:
                if not exc.retryable or tries >= _EVENT_TRIES:
                    log.warning("stack.events_unreadable", error=str(exc))
                    return []
        for event in events:
            log.info(
                "stack.event",
                resource=event.logical_id,
                resource_type=event.resource_type,
                resource_status=event.status,
                reason=event.reason,
            )
        return events

    def _record_result(
        self, stack: str, result: Result, observed: ObservedStack | None, log: Any
    ) -> Outcome:
        self.journal.append(
            Kind.RESULT,
            stack=stack,
            **self._about(stack),
            result=result.value,
            stack_status=observed.status if observed else None,
            outputs=observed.outputs if observed else {},
            stack_id=observed.stack_id if observed else None,
            message="",
        )
        log.info(
            "apply.settled", result=result.value, stack_status=observed.status if observed else None
        )
        return Outcome.SUCCEEDED if result is Result.SUCCEEDED else Outcome.NO_CHANGES

    def _about(self, stack: str) -> dict[str, Any]:
        """What a result record says of the version it ends (its repo, number and commit), so
        that it is read alone (syncd.core.events); {} when no version is open."""
        view = self.journal.state.stacks.get(stack)
        if view is None or view.attempt is None:
            return {}
        a = view.attempt
        return {"repo": view.repo, "version": a.version, "commit": a.commit}

    def _fail(
        self,
        stack: str,
        message: str,
        retryable: bool,
        log: Any,
        stack_status: str | None = None,
    ) -> Outcome:
        message = bounded(message)  # CloudFormation's reasons quote the template's values
        view = self.journal.state.stacks.get(stack)
        if view is not None and view.attempt is not None:
            self.journal.append(
                Kind.RESULT,
                stack=stack,
                **self._about(stack),
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
        reason = bounded(reason or blocked_reason(stack_status or ""))
        view = self.journal.state.stacks.get(stack)
        if view is not None and view.attempt is not None and not view.attempt.executing:
            # An attempt that never reached execute ends here; the stack is blocked, not failed.
            self._end_unexecuted(stack, view.attempt, reason, log, stack_status=stack_status)
            view = self.journal.state.stacks.get(stack)
        if view is None or view.state is not StackState.BLOCKED or view.message != reason:
            self.journal.append(
                Kind.BLOCKED, repo=repo, stack=stack, stack_status=stack_status, reason=reason
            )
            log.warning("apply.blocked", stack_status=stack_status, reason=reason)
        return Outcome.BLOCKED

    def _delete_failed_create(self, stack: str, observed: ObservedStack, log: Any) -> None:
        """on_failure: recreate. A ROLLBACK_COMPLETE stack holds no resources; delete it,
        journaled first like every other act."""
        self.journal.append(Kind.RECREATING, stack=stack, stack_status=observed.status)
        self.before_acting()
        log.warning("stack.recreate", stack_status=observed.status)
        self.cfn.delete_stack(observed.stack_id or observed.name)  # that stack, not a new one
        self._wait_stack(observed.name, log, deleting=True)

    # --- open attempts: after a crash, a newer commit, or a removed file -----------------------

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
            self.before_acting()
            self._execute_call(stack, info.arn, log, since=since)
        else:
            log.info(
                "change_set.observe_after_restart",
                execution_status=info.execution_status if info else None,
            )
        return self._settle(stack, since, log)

    def _close_attempt(self, stack: str, why: str, log: Any) -> Outcome | None:
        """End an open attempt: an executing one only by observing it to the end."""
        view = self.journal.state.stacks.get(stack)
        attempt = view.attempt if view else None
        if attempt is None:
            return None
        if attempt.executing:
            return self._resume_execution(stack, attempt, log)
        self._end_unexecuted(stack, attempt, why, log)
        return None

    def _end_unexecuted(
        self, stack: str, attempt: Attempt, why: str, log: Any, stack_status: str | None = None
    ) -> None:
        """An attempt that never executed: remove its change set (best effort; one that is
        left behind can do no harm) and record that it ended."""
        if attempt.change_set:
            try:
                self.cfn.delete_change_set(attempt.change_set, stack)
                if attempt.action == "create":
                    # The stack its CREATE change set brought about holds nothing: remove it,
                    # so the next CREATE change set starts clean (and none is left in review).
                    observed = self.cfn.describe(stack)
                    view = self.journal.state.stacks.get(stack)
                    if (
                        observed is not None
                        and observed.status == "REVIEW_IN_PROGRESS"
                        and view is not None
                        and delete_refused(view.repo, observed.tags) is None
                    ):
                        self.cfn.delete_stack(observed.stack_id or stack)
            except AwsError as exc:
                log.warning("change_set.cleanup_failed", error=str(exc))
        self.journal.append(
            Kind.RESULT,
            stack=stack,
            **self._about(stack),
            result=Result.FAILED.value,
            stack_status=stack_status,
            message=f"version {attempt.version} did not run: {why}",
            retryable=True,
        )

    # --- prune ---------------------------------------------------------------------------------

    def _delete(self, stack: str, commit: str, log: Any) -> Outcome:
        view = self.journal.state.stacks[stack]
        if view.attempt is not None and view.attempt.action != "delete":
            self._close_attempt(stack, "its deployment file was removed", log)
            view = self.journal.state.stacks[stack]
        if view.attempt is not None and view.attempt.executing:
            return self._resume_execution(stack, view.attempt, log)
        target: str | None = stack  # what DeleteStack is given: the StackId seen, when seen
        if view.attempt is None:
            observed, _ = self._observe(stack, time.monotonic())
            target = observed.stack_id or stack if observed else None
            refused = delete_refused(view.repo, observed.tags) if observed else None
            if refused:
                reason = f"deployment file removed; not pruned: {refused}"
                self.journal.append(Kind.REMOVED, repo=view.repo, stack=stack, reason=reason)
                log.error("prune.refused", reason=refused)
                return Outcome.BLOCKED
            retry = view.failed_digest == ""  # a delete that failed before: same version
            self.journal.append(
                Kind.VERSION,
                repo=view.repo,
                stack=stack,
                version=view.latest_version if retry else view.latest_version + 1,
                commit=commit,
                digest="",
                action="delete",
                deployment_file=view.deployment_file,
                template_file="",
                parameters={},
                tags={},
                dependencies=[],
            )
        self.journal.append(Kind.EXECUTING, stack=stack, change_set=None)
        self.before_acting()
        since = datetime.now(UTC)
        log.warning("stack.deleting")
        if target is not None:  # None: already gone; a stack made since under its name stays
            self.cfn.delete_stack(target)
        return self._settle_delete(stack, since, log)

    def _settle_delete(self, stack: str, since: datetime, log: Any) -> Outcome:
        observed = self._wait_stack(stack, log, deleting=True)
        if observed is None or observed.status == "DELETE_COMPLETE":
            return self._record_result(stack, Result.SUCCEEDED, None, log)
        reason = _failure_reason(self._log_events(stack, since, log)) or observed.reason
        return self._fail(
            stack,
            f"{observed.status}: {reason or 'delete failed'}",
            False,
            log,
            stack_status=observed.status,
        )


def _manual(desired: DesiredState) -> bool:
    return desired.spec.options.approval is Approval.MANUAL


def _request_token(change_set_arn: str) -> str:
    """ExecuteChangeSet's ClientRequestToken: the same for every retry of one change set."""
    return "syncd-" + change_set_arn.rsplit("/", 1)[-1][-64:]


def change_set_name(version: int, digest: str) -> str:
    """Deterministic, so that a restarted syncd finds the change set it created."""
    return f"syncd-v{version}-{digest[:16]}"


def _failure_reason(events: list[StackEvent]) -> str | None:
    """The newest resource failure among an operation's events."""
    for event in reversed(events):
        if event.status.endswith("_FAILED") and event.reason:
            return f"{event.logical_id}: {event.reason}"
    return None


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
