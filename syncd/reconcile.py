"""One reconcile pass over one repo: fetch -> load -> apply in dependency order -> prune.

Every step writes journal records; the pass itself keeps only what is cheap to lose (the commit
it last read whole, retry times). A pass whose commit has not moved and whose stacks are all
settled returns at once: no tree is read and no AWS call is made. Suspended stacks (`syncd
suspend`) are left out: no call, no prune, and their readers take their deployed outputs.
`observe_world` is the one look at the deployed world at start (paginated DescribeStacks), so
that a stack deleted or changed while syncd was down is noticed and brought back.
Drift checks (`drift_interval`) never hold a pass: its start asks CloudFormation for the
detections that are due and reads those that have finished, its end reads those it asked for
if they finished meanwhile (syncd.drift); `on_drift: block` then holds a drifted stack's
change until `syncd drift accept`.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Set
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from syncd import ratelimit
from syncd.apply import Applier, Outcome
from syncd.approvals import Approval, Approvals
from syncd.clouds import Worlds
from syncd.core.config import Approval as ApprovalMode
from syncd.core.config import OnFailure, RepoConfig
from syncd.core.deployments import (
    InvalidStack,
    LoadResult,
    StackSpec,
    UnresolvedOutput,
    load_stacks,
    resolve,
)
from syncd.core.journal_state import (
    Kind,
    RepoView,
    StackState,
    StackView,
    suspension,
)
from syncd.core.order import dependency_cycles, ready
from syncd.core.schedule import heights
from syncd.core.text import printable
from syncd.drift import DriftChecks, drift_holds
from syncd.errors import (
    AwsError,
    BranchMissing,
    SourceError,
    SyncdError,
    UntrustedCommit,
    UsageError,
)
from syncd.journal.store import Journal
from syncd.slots import Slots
from syncd.sources.git import GitSource

_SETTLED = (StackState.IN_SYNC, StackState.FAILED, StackState.AWAITING_APPROVAL)
RETRY_FIRST = 30.0  # seconds before the first retry of a failed stack; doubles up to RETRY_MAX
RETRY_MAX = 3600.0


@dataclass
class PassReport:
    repo: str
    commit: str | None = None
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)
    source_error: str | None = None
    skipped: bool = False

    @property
    def ok(self) -> bool:
        return (
            self.source_error is None
            and not self.invalid
            and all(o.ok or o is Outcome.AWAITING_APPROVAL for o in self.outcomes.values())
        )


class RepoSync:
    """Reconciles one repo; a pass never runs twice at once for the same repo."""

    def __init__(
        self,
        repo: RepoConfig,
        source: GitSource,
        applier: Applier,
        world: Worlds,
        journal: Journal,
        slots: Slots,
        concurrency: int,
        approvals: Approvals | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.repo = repo
        self.source = source
        self.applier = applier
        self.world = world
        self.journal = journal
        self.slots = slots
        self.concurrency = concurrency
        self.approvals = approvals
        self._approved: dict[str, Approval] = {}  # this pass's approval requests
        self.log = structlog.get_logger("syncd.reconcile").bind(repo=repo.name)
        self._last_commit: str | None = None
        self._retry_at: dict[str, float] = {}
        self._retries: dict[str, int] = {}
        self._running = threading.Lock()
        self._external: set[str] = set()  # other repos' stacks whose outputs this repo reads
        self._last_external: tuple[Any, ...] = ()
        self._read: dict[str, dict[str, str]] = {}  # outputs as this pass read them
        self._held_by: set[str] = set()  # other repos' stacks that were applying when read
        self._conflicts: set[str] = set()  # stacks another repo owns, logged once
        self._pass_started = 0.0  # monotonic: the looks at CloudFormation this pass trusts
        self._heights: dict[str, int] = {}  # this pass's critical-path heights
        # The stacks the last whole pass left alone because they were suspended: once one is
        # resumed, the next pass runs even though the commit has not moved.
        self._left_suspended: set[str] = set()
        self._now_suspended: set[str] = set()  # this pass's
        self.drift = DriftChecks(applier.cfn, journal, applier.waiter.stop, clock, self.log)

    def run_pass(self, only: Set[str] | None = None, *, full: bool = False) -> PassReport:
        """One pass (`full`: every stack looked at, even when nothing has changed since the
        last pass, as `syncd sync` asks of a daemon). A pass that ends in an error (a bug, the
        journal unwritable) is journaled as such before the error goes on, so that `status`
        never shows the repo's stacks in sync with a commit nothing applied; the next pass
        that completes clears it."""
        with self._running:
            try:
                # A target whose credentials could not be checked at start is asked again
                # (one GetCallerIdentity, only while it fails).
                self.applier.cfn.identify(self.journal)
                asked = self.drift.begin(self.repo, only)  # never waits for a detection
                report = self._pass(only, full)
                self.drift.end(self.repo, asked)
            except Exception as exc:
                self._pass_failed(exc)
                raise
            repo_view = self.journal.state.repos.get(self.repo.name)
            if repo_view is not None and repo_view.pass_error is not None:
                self.journal.append(Kind.PASS_OK, repo=self.repo.name)
            return report

    def _pass_failed(self, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {exc}"[:500]
        repo_view = self.journal.state.repos.get(self.repo.name)
        if repo_view is not None and repo_view.pass_error == message:
            return  # already said: a pass that keeps failing writes it once
        try:
            self.journal.append(Kind.PASS_FAILED, repo=self.repo.name, message=message)
        except Exception as journal_exc:  # the journal itself may be why the pass failed
            self.log.error("pass.failure_not_journaled", error=str(journal_exc))

    def _pass(self, only: Set[str] | None, full: bool = False) -> PassReport:
        report = PassReport(self.repo.name)
        self._pass_started = time.monotonic()
        commit = self._fetch(report)
        if commit is None:
            return report
        report.commit = commit
        self._approved = self._approval_requests()
        if (
            not full
            and commit == self._last_commit
            and not self._approved
            and not self._has_work(only)
            and self._external_outputs() == self._last_external
        ):
            report.skipped = True
            return report
        self._read, self._held_by, self._now_suspended = {}, set(), set()
        log = self.log.bind(commit=commit[:12])
        tree = self.source.tree(commit)
        loaded = load_stacks(self.repo, tree)
        invalid = self._attribute(loaded.invalid, loaded.stacks)
        specs = self._refuse(dict(loaded.stacks), invalid, report, log)
        if only is not None:
            specs = {n: s for n, s in specs.items() if n in only}
            invalid = {n: i for n, i in invalid.items() if n in only}
        self._record_invalid(invalid, loaded, commit, report, log)
        specs = self._take_suspended(specs)
        self._close_open_attempts(specs, invalid, only)
        report.outcomes = self._apply_in_order(specs, commit, log)
        report.outcomes.update(dict.fromkeys(self._now_suspended, Outcome.SUSPENDED))
        for stack, approval in sorted(self._approved.items()):  # stacks not applied this pass
            if only is None or stack in only:
                # Held (a dependency failed or waits), invalid, gone or suspended: what was
                # approved is not what this commit wants now, so it is not executed.
                if self._suspended(stack):
                    why = "the stack is suspended"
                elif stack in specs:
                    why = (
                        "the stack was held this pass: " + self.journal.state.stacks[stack].message
                    )
                else:
                    why = "the stack is not applied from this commit"
                report.outcomes[stack] = self._refuse_approval(approval, why)
        if only is None:
            self._removed(set(tree.paths()), loaded, invalid, commit, report, log)
            self._left_suspended = set(self._now_suspended)
            self._external = {
                d for s in loaded.stacks.values() for d in s.dependencies if d not in loaded.stacks
            }
            self._last_commit = commit
            # As read, not as now: an output that changed after this pass read it is new.
            self._last_external = self._external_outputs(self._read)
        return report

    def rollback(self, stack: str, version: int, commit: str, by: str) -> Outcome:
        """`syncd rollback`: apply again the desired state `stack` had at `version` (as
        `commit` describes it; `stack-output` values as the stacks' outputs are now), as a new
        version that says so, after suspending the stack so that no pass undoes it. The
        rollback is itself the approval: a stack with `approval: manual` is not held for one.
        Raises UsageError (the commit is gone, it does not describe the stack, drift holds it)
        or SyncdError (an output it needs is missing) before anything is journaled."""
        with self._running:
            self._pass_started = time.monotonic()
            self._read, self._held_by = {}, set()
            # The stack no longer holds what the last pass read: the next pass reads the tree
            # whole (an idle pass would miss it, and a resume would leave the rollback in place).
            self._last_commit = None
            if not self.source.has_commit(commit):
                raise UsageError(
                    printable(
                        f"version {version} of {stack} was applied from commit {commit[:12]}, "
                        f"which the mirror of repo {self.repo.name!r} no longer holds "
                        "(a force-push?)"
                    )
                )
            loaded = load_stacks(self.repo, self.source.tree(commit))
            spec = loaded.stacks.get(stack)
            if spec is None:
                bad = loaded.invalid.get(stack)
                why = f": {bad.file}: {bad.reason}" if bad else ""
                raise UsageError(
                    printable(f"commit {commit[:12]} does not describe stack {stack} now{why}")
                )
            spec = replace(spec, options=replace(spec.options, approval=ApprovalMode.AUTO))
            try:
                desired = resolve(spec, self._outputs_of)
            except (UnresolvedOutput, AwsError) as exc:
                raise SyncdError(f"cannot roll {stack} back to version {version}: {exc}") from None
            # A rollback is an apply like any other: drift that on_drift: block holds, it holds.
            held = drift_holds(spec, desired.digest, self.journal.state.stacks.get(stack))
            if held is not None:
                raise UsageError(printable(f"cannot roll {stack} back now: {held}"))
            reason = f"rolled back to version {version} by {by}"
            self.journal.append(
                Kind.SUSPENDED, repo=self.repo.name, stack=stack, reason=reason, by=by
            )
            self.log.info("stack.rollback", stack=stack, version=version, commit=commit[:12])
            with self._slot(stack):
                return self.applier.apply(desired, commit, rollback_of=version)

    # --- steps --------------------------------------------------------------------------------

    def _fetch(self, report: PassReport) -> str | None:
        repo_view = self.journal.state.repos.get(self.repo.name)
        try:
            fetched = self.source.fetch()
        except UntrustedCommit as exc:
            return self._untrusted(exc, repo_view, report)
        except SourceError as exc:
            message = str(exc)
            report.source_error = message
            if repo_view is None or repo_view.error != message:
                self.journal.append(Kind.SOURCE_ERROR, repo=self.repo.name, message=message)
                self.log.error(
                    "source.branch_missing" if isinstance(exc, BranchMissing) else "source.error",
                    error=message,
                )
            return None
        if repo_view is not None and (repo_view.error or repo_view.untrusted) and not fetched.moved:
            # The branch is back at the commit taken (a fetch that failed, or a head that was
            # not trusted and was pushed over): nothing is wrong any more.
            self.journal.append(Kind.SOURCE_OK, repo=self.repo.name)
            self.log.info("source.recovered")
        if fetched.moved or repo_view is None or repo_view.commit != fetched.commit:
            self.journal.append(
                Kind.COMMIT,
                repo=self.repo.name,
                commit=fetched.commit,
                previous=fetched.previous,
                forced=fetched.forced,
                changes=[list(c) for c in fetched.changes[:1000]],
            )
            event = "commit.force_pushed" if fetched.forced else "commit.detected"
            log = self.log.warning if fetched.forced else self.log.info
            log(
                event,
                commit=fetched.commit[:12],
                previous=(fetched.previous or "")[:12],
                changed_files=len(fetched.changes),
            )
        return fetched.commit

    def _untrusted(
        self, exc: UntrustedCommit, repo_view: RepoView | None, report: PassReport
    ) -> str | None:
        """The branch's head is not signed by a trusted key: say so once (the journal, the log,
        and so the events and the commit status), and go on with the last commit taken, if
        there is one and it is not that head (taken before `verify` was set)."""
        report.source_error = str(exc)
        said = repo_view.untrusted if repo_view is not None else None
        if said is None or (said["commit"], said["reason"]) != (exc.commit, exc.reason):
            self.journal.append(
                Kind.UNTRUSTED, repo=self.repo.name, commit=exc.commit, reason=exc.reason
            )
            self.log.error("commit.untrusted", commit=exc.commit[:12], reason=exc.reason)
        kept = self.source.current()
        if kept is None or kept == exc.commit or self.source.untrusted(kept) is not None:
            return None  # taken before `verify` was set: no pass until a trusted head
        return kept

    def _approval_requests(self) -> dict[str, Approval]:
        """The approvals waiting for this repo's stacks."""
        if self.approvals is None:
            return {}
        stacks = self.journal.state.stacks
        return {
            name: a
            for name, a in self.approvals.pending().items()
            if name in stacks and stacks[name].repo == self.repo.name
        }

    def _approve(self, approval: Approval) -> Outcome:
        assert self.approvals is not None
        with self._slot(approval.stack):
            outcome = self.applier.approve(approval.stack, approval.change_set, approval.by)
        self.approvals.done(approval)
        return outcome

    def _refuse_approval(self, approval: Approval, why: str) -> Outcome:
        assert self.approvals is not None
        outcome = self.applier.refuse_approval(
            approval.stack, approval.change_set, approval.by, why
        )
        self.approvals.done(approval)
        return outcome

    def _has_work(self, only: Set[str] | None) -> bool:
        if any(not self._suspended(stack) for stack in self._left_suspended):
            return True  # resumed: Git's state is applied now
        now = time.monotonic()
        for view in self._views():
            if (only is not None and view.stack not in only) or view.removed:
                continue
            if self._suspended(view.stack):
                continue  # nothing happens to it, however it looks, until it is resumed
            if view.state not in _SETTLED or view.attempt is not None:
                return True
            if (
                view.state is StackState.FAILED
                and view.failed_digest is not None
                and (view.retryable or self._retry_at.get(view.stack, now + 1) <= now)
            ):
                return True
        return False

    def _suspended(self, stack: str) -> bool:
        """Whether `stack` is suspended, itself or through this repo (a stack the journal does
        not know yet is, when the repo is)."""
        return suspension(self.journal.state, stack, self.repo.name) is not None

    def _take_suspended(self, specs: dict[str, StackSpec]) -> dict[str, StackSpec]:
        """Take out the suspended stacks: no change set and no AWS call. A stack that reads
        their outputs reads them as the journal shows them deployed (a dependency not in
        `specs` is not waited for, see `ready`)."""
        held = {name for name in specs if self._suspended(name)}
        self._now_suspended |= held
        return {n: s for n, s in specs.items() if n not in held}

    def _views(self) -> list[StackView]:
        return [v for v in list(self.journal.state.stacks.values()) if v.repo == self.repo.name]

    def _refuse(
        self,
        specs: dict[str, StackSpec],
        invalid: dict[str, InvalidStack],
        report: PassReport,
        log: Any,
    ) -> dict[str, StackSpec]:
        """Take out the stacks that must not be applied: those another repo manages (reported,
        never journaled onto the owner's stack) and those on a dependency cycle (invalid)."""
        for name in list(specs):
            owner = self._owner(name)
            if owner is None:
                continue
            file = specs.pop(name).deployment_file
            report.invalid[name] = f"{file}: stack {name!r} is managed by repo {owner!r}"
            if name not in self._conflicts:
                self._conflicts.add(name)
                log.error("deployment.conflict", stack=name, owner=owner, file=file)
        deps = {n: s.dependencies for n, s in specs.items()}
        for name, cycle in dependency_cycles(deps).items():
            file = specs.pop(name).deployment_file
            invalid[name] = InvalidStack(
                name, self.repo.name, file, f"dependency cycle: {cycle}", file
            )
        return specs

    def _owner(self, stack: str) -> str | None:
        """The other repo that manages `stack` (deployed it, or is applying it), if any."""
        view = self.journal.state.stacks.get(stack)
        if view is None or view.repo in ("", self.repo.name) or view.removed:
            return None
        return view.repo if view.version is not None or view.attempt is not None else None

    def waits_on_outputs(self) -> bool:
        """Whether outputs of other repos' stacks that this repo reads have changed since its
        last pass (a stack here waits on them): the daemon then wakes this repo at once."""
        stacks = self.journal.state.stacks
        if any((v := stacks.get(n)) is None or v.attempt is None for n in self._held_by):
            return True  # a stack another repo was applying has settled (whatever its outputs)
        return bool(self._external) and self._external_outputs() != self._last_external

    def _external_outputs(
        self, read: Mapping[str, Mapping[str, str]] | None = None
    ) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
        """The outputs of the other repos' stacks this repo's stacks read (as `read` says they
        were read, else as they are now): when they change, the pass must run even though this
        repo's commit did not move."""
        stacks = self.journal.state.stacks
        out = []
        for name in sorted(self._external):
            view = stacks.get(name)
            outputs = (read or {}).get(name, view.outputs if view is not None else None)
            if outputs is not None:
                out.append((name, tuple(sorted(outputs.items()))))
        return tuple(out)

    def _attribute(
        self, invalid: Mapping[str, InvalidStack], good: Mapping[str, StackSpec]
    ) -> dict[str, InvalidStack]:
        """A file too broken to name its stack is reported under the stack it last described,
        so that stack shows the failure (and is never taken for removed)."""
        by_file = {
            v.deployment_file: v.stack for v in self._views() if v.deployment_file and not v.removed
        }
        out: dict[str, InvalidStack] = {}
        for name, bad in invalid.items():
            known = by_file.get(bad.deployment_file)
            if known and known != name and known not in good and known not in invalid:
                bad = InvalidStack(known, bad.repo, bad.file, bad.reason, bad.deployment_file)
            out[bad.name] = bad
        return out

    def _close_open_attempts(
        self,
        specs: Mapping[str, StackSpec],
        invalid: Mapping[str, InvalidStack],
        only: Set[str] | None,
    ) -> None:
        """An apply left open (a crash, a stop) for a stack this pass will not apply is ended
        now: observed to its end if it executed, else recorded as not run."""
        for view in self._views():
            if view.attempt is None or view.stack in specs or self._suspended(view.stack):
                continue  # a suspended stack's attempt is taken up again once it is resumed
            if only is not None and view.stack not in only:
                continue
            why = (
                "its deployment file is invalid"
                if view.stack in invalid
                else ("its deployment file no longer describes it")
            )
            with self._slot(view.stack):
                self.applier.close(view, why)

    def _record_invalid(
        self,
        invalid: Mapping[str, InvalidStack],
        loaded: LoadResult,
        commit: str,
        report: PassReport,
        log: Any,
    ) -> None:
        for name, bad in invalid.items():
            self._invalid(name, bad.file, bad.reason, commit, report)
        for spec in loaded.stacks.values():
            for note in spec.notes:
                log.warning("deployment.option_ignored", stack=spec.name, note=note)

    def _invalid(self, name: str, file: str, reason: str, commit: str, report: PassReport) -> None:
        report.invalid[name] = f"{file}: {reason}"
        view = self.journal.state.stacks.get(name)
        if view is None or view.invalid_file != file or view.message != f"{file}: {reason}":
            self.journal.append(
                Kind.INVALID,
                repo=self.repo.name,
                stack=name,
                commit=commit,
                file=file,
                reason=reason,
            )
            self.log.error("deployment.invalid", stack=name, file=file, reason=reason)

    def _apply_in_order(
        self, specs: Mapping[str, StackSpec], commit: str, log: Any
    ) -> dict[str, Outcome]:
        deps = {name: spec.dependencies for name, spec in specs.items()}
        self._heights = heights(deps)

        def blocked_by(name: str, done: Mapping[str, Outcome]) -> str | None:
            for dep in sorted(deps[name]):
                if dep in done and not done[dep].ok:
                    return dep
            return None

        def run(name: str, done: Mapping[str, Outcome]) -> Outcome:
            if self._suspended(name):  # since the pass began: it is not started
                self._now_suspended.add(name)
                return Outcome.SUSPENDED
            dep = blocked_by(name, done)
            if dep is not None:
                if done[dep] is Outcome.INTERRUPTED:
                    return Outcome.INTERRUPTED
                return self._hold(name, f"waits for stack {dep}, which is {done[dep].value}")
            return self._sync_stack(specs[name], commit, log)

        return run_in_dependency_order(deps, run, self.concurrency, self._heights)

    def _sync_stack(self, spec: StackSpec, commit: str, log: Any) -> Outcome:
        try:
            desired = resolve(spec, self._outputs_of)
        except UnresolvedOutput as exc:
            return self._hold(spec.name, str(exc))
        except AwsError as exc:
            return self._hold(spec.name, f"cannot read outputs: {exc}")
        view = self.journal.state.stacks.get(spec.name)
        held = drift_holds(spec, desired.digest, view)
        if held is not None:
            return self._hold(spec.name, held)
        if (
            view is not None
            and view.failed_digest == desired.digest
            and self._retry_at.get(spec.name, 0.0) > time.monotonic()
        ):
            return Outcome.FAILED  # a retry is due later, not yet
        with self._slot(spec.name):
            outcome = self.applier.apply(desired, commit)
        approval = self._approved.pop(spec.name, None)
        if approval is not None:  # after apply: a newer commit has replaced a stale change set
            if outcome is Outcome.AWAITING_APPROVAL:
                outcome = self._approve(approval)
            else:
                why = f"the stack was not waiting for approval ({outcome.value})"
                self._refuse_approval(approval, why)
        view = self.journal.state.stacks.get(spec.name)
        if outcome is Outcome.FAILED and (
            spec.options.on_failure is not OnFailure.KEEP or (view is not None and view.retryable)
        ):
            # Back off: a transient AWS failure or on_failure: retry must not hammer
            # CloudFormation, nor add a journal record every poll.
            count = self._retries.get(spec.name, 0) + 1
            self._retries[spec.name] = count
            delay = min(RETRY_FIRST * 2.0 ** (count - 1), RETRY_MAX)
            self._retry_at[spec.name] = time.monotonic() + delay
            log.info("apply.retry_scheduled", stack=spec.name, in_seconds=delay)
        elif outcome.ok:
            self._retries.pop(spec.name, None)
            self._retry_at.pop(spec.name, None)
        return outcome

    def _outputs_of(self, stack: str) -> dict[str, str] | None:
        view = self.journal.state.stacks.get(stack)
        if (
            view is not None
            and view.attempt is not None
            and view.repo != self.repo.name
            and (view.attempt.executing or suspension(self.journal.state, stack, view.repo) is None)
        ):
            # Another repo is applying it now: its outputs are read once it has settled (that
            # repo's pass wakes this one, see `waits_on_outputs`). A suspended stack whose
            # change set waits is not applied meanwhile: its deployed outputs are read.
            self._held_by.add(stack)
            raise UnresolvedOutput(f"stack {stack!r} is being applied by repo {view.repo!r}")
        if view is not None and view.version is not None:
            self._read[stack] = dict(view.outputs)
            return view.outputs
        if view is not None:
            return None  # managed by syncd but never deployed
        observed, _ = self.world.observe(stack, self._pass_started)  # not syncd's stack
        return observed.outputs if observed else None

    @contextmanager
    def _slot(self, stack: str) -> Iterator[None]:
        """One of the apply slots all repos share, asked for with this stack's priority, which
        its CloudFormation calls also carry into the call budget."""
        height = self._heights.get(stack, 1)
        with self.slots.take(self.repo.name, stack, height), ratelimit.priority(height):
            yield

    def _hold(self, stack: str, reason: str) -> Outcome:
        with self._slot(stack):
            return self.applier.hold(stack, self.repo.name, reason)

    def _removed(
        self,
        paths: Set[str],
        loaded: LoadResult,
        invalid: Mapping[str, InvalidStack],
        commit: str,
        report: PassReport,
        log: Any,
    ) -> None:
        """Stacks this repo described before and no longer does. Deleted only with prune: true
        and their deployment file gone from the branch; otherwise left alone."""
        present = set(loaded.stacks) | set(invalid)
        for view in self._views():
            if view.stack in present or view.removed:
                continue
            if self._suspended(view.stack):  # never pruned: looked at again once resumed
                self._now_suspended.add(view.stack)
                report.outcomes[view.stack] = Outcome.SUSPENDED
                continue
            file_gone = not (view.deployment_file and view.deployment_file in paths)
            if view.version is not None and file_gone and self.repo.options_for(view.stack).prune:
                with self._slot(view.stack):
                    report.outcomes[view.stack] = self.applier.delete(view, commit)
                continue
            reason = (
                "deployment file removed; prune is off, so the stack is left alone"
                if file_gone
                else f"{view.deployment_file} no longer describes this stack (a changed "
                "stack-name or deployments glob); the stack is left alone"
            )
            self.journal.append(Kind.REMOVED, repo=self.repo.name, stack=view.stack, reason=reason)
            log.warning("stack.left_alone", stack=view.stack, reason=reason)


def run_in_dependency_order(
    deps: Mapping[str, Set[str]],
    run: Callable[[str, Mapping[str, Outcome]], Outcome],
    concurrency: int,
    priority: Mapping[str, int] | None = None,
) -> dict[str, Outcome]:
    """Run `run(name, done)` for every stack, each as soon as those it depends on are done,
    `concurrency` at a time, the highest `priority` (critical-path height) first among those
    ready. `done` holds the outcomes so far, so a stack can see that a dependency failed."""
    rank = priority or {}
    done: dict[str, Outcome] = {}
    started: set[str] = set()
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        running: dict[Future[Outcome], str] = {}
        while True:
            for name in sorted(ready(deps, set(done), started), key=lambda n: -rank.get(n, 1)):
                started.add(name)
                running[pool.submit(run, name, dict(done))] = name
            if not running:
                return done
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                done[running.pop(future)] = future.result()


def observe_world(world: Worlds, journal: Journal) -> int:
    """Compare what CloudFormation shows with what the journal says is deployed.

    Marks a stack drifted when it is gone or its parameters or tags differ from those syncd
    applied (NoEcho values, shown as ****, are not compared); returns how many drifted."""
    log = structlog.get_logger("syncd.observe")
    failed = world.gateways.identify(journal) | world.gateways.unusable
    for place, error in sorted(failed.items(), key=str):
        label = place.label(world.gateways.home) or "default"
        log.error("target.credentials_failed", target=label, error=error)
    observed = world.look_all()
    for place, error in sorted(world.unreachable.items(), key=str):
        log.error("target.unreachable", target=place.label(world.gateways.home), error=error)
    seen = world.covers(journal.state.stacks)
    drifted = 0
    for view in list(journal.state.stacks.values()):
        if view.version is None or view.removed or view.stack not in seen:
            continue  # never deployed, removed, or its account and region could not be seen
        now = observed.get(view.stack)
        drift = _drift(view, now)
        status = now.status if now else None
        outputs = now.outputs if now else {}
        if drift or status != view.stack_status or (now and outputs != view.outputs):
            journal.append(
                Kind.OBSERVED,
                stack=view.stack,
                stack_status=status,
                outputs=outputs if now else None,
                drift=drift,
            )
        if drift:
            drifted += 1
            log.warning("stack.drifted", stack=view.stack, repo=view.repo, reason=drift)
    return drifted


def _drift(view: StackView, now: Any) -> str | None:
    if view.attempt is not None:
        return None  # an apply is open: the resume path looks at it
    if now is None:
        return "the stack is gone: deleted outside syncd"
    return view.differs_from(now.parameters, now.tags)


def jittered(seconds: float) -> float:
    """A poll interval with ±10% jitter, so many daemons do not fetch in lockstep."""
    return seconds * random.uniform(0.9, 1.1)
