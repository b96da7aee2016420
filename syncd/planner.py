"""`syncd plan`: what merging a ref would do, from change sets that are never executed.

For each stack the ref describes: if the journal shows exactly that desired state deployed and
in sync, nothing is asked of AWS; otherwise a change set (`syncd-plan-...`) is created against
the deployed stack, described, and deleted, and a stack that a CREATE change set brought into
being (REVIEW_IN_PROGRESS, no resources) is deleted too, so a plan leaves nothing behind.
Stacks whose deployment file the ref removes are shown as deletes (prune: true, with the
resources that would go) or as left alone. A suspended stack is planned like any other, its
message saying it is suspended. A plan never writes the journal.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from syncd.cloudformation import NoChanges
from syncd.clouds import Gateways
from syncd.core.config import RepoConfig
from syncd.core.deployments import (
    DesiredState,
    StackSpec,
    UnresolvedOutput,
    load_stacks,
    resolve,
)
from syncd.core.journal_state import JournalState, StackState, suspension
from syncd.core.ownership import delete_refused, owner_tags, refused_for
from syncd.core.plan import Plan, ResourceChange, StackPlan, value_changes
from syncd.core.stack_status import (
    CHANGE_SET_FAILED,
    CHANGE_SET_PENDING,
    Condition,
    condition,
    means_no_changes,
)
from syncd.errors import AwsError
from syncd.sources.git import GitSource

WAIT_LIMIT = 300.0  # seconds for CloudFormation to compute a change set


@dataclass
class Planner:
    cfn: Gateways
    state: JournalState
    log: Any = None

    def __post_init__(self) -> None:
        self.log = self.log or structlog.get_logger("syncd.plan")

    def plan(self, repo: RepoConfig, source: GitSource, ref: str) -> Plan:
        commit = source.resolve(ref)
        tree = source.tree(commit)
        loaded = load_stacks(repo, tree)
        stacks: list[StackPlan] = []
        for name, bad in loaded.invalid.items():
            stacks.append(StackPlan(name, "none", message=f"{bad.file}: {bad.reason}", error=True))
        for spec in loaded.stacks.values():
            stacks.append(self._stack(spec))
        paths = set(tree.paths())
        present = set(loaded.stacks) | set(loaded.invalid)
        for name, (file, prune) in sorted(self._known(repo, source).items()):
            if name in present:
                continue
            if file in paths:
                why = f"{file} no longer describes it (a changed stack-name or glob): left alone"
                stacks.append(StackPlan(name, "none", message=why))
            elif not prune:
                why = "its deployment file is removed; prune is off, so it is left alone"
                stacks.append(StackPlan(name, "none", message=why))
            else:
                stacks.append(self._delete(repo.name, name))
        stacks = [self._suspended(repo.name, s) for s in stacks]
        ordered = tuple(sorted(stacks, key=lambda s: s.stack))
        return Plan(repo.name, ref, commit, ordered, untrusted=source.untrusted(commit))

    def _known(self, repo: RepoConfig, source: GitSource) -> dict[str, tuple[str, bool]]:
        """The stacks this repo deploys, each with its deployment file and whether it is
        pruned: from the journal, and from the branch syncd follows (so a plan on a machine
        with no journal, a CI runner, still sees the stacks a ref would remove)."""
        known: dict[str, tuple[str, bool]] = {}
        base = source.resolve(f"refs/heads/{repo.branch}")
        for name, spec in load_stacks(repo, source.tree(base)).stacks.items():
            known[name] = (spec.deployment_file, spec.options.prune)
        for view in list(self.state.stacks.values()):
            if view.repo == repo.name and not view.removed and view.version is not None:
                prune = repo.options_for(view.stack).prune
                known.setdefault(view.stack, (view.deployment_file or "", prune))
        return known

    def _suspended(self, repo: str, plan: StackPlan) -> StackPlan:
        """A suspended stack's plan still shows what would happen, and says it waits."""
        held = suspension(self.state, plan.stack, repo)
        if held is None:
            return plan
        why = f": {held.reason}" if held.reason else ""
        note = f"suspended (by {held.by} at {held.at}{why}): not applied until resumed"
        message = f"{note}; {plan.message}" if plan.message else note
        return dataclasses.replace(plan, message=message)

    # --- one stack ------------------------------------------------------------------------

    def _stack(self, spec: StackSpec) -> StackPlan:
        try:
            desired = resolve(spec, self._outputs_of)
        except UnresolvedOutput as exc:
            exists = self._exists(spec.name)
            return StackPlan(
                spec.name,
                "update" if exists else "create",
                message=f"{exc}; its change set can be shown once that stack is deployed",
            )
        except AwsError as exc:
            return StackPlan(spec.name, "none", message=str(exc), error=True)
        view = self.state.stacks.get(spec.name)
        if (
            view is not None
            and view.digest == desired.digest
            and view.state is StackState.IN_SYNC
            and view.attempt is None
        ):
            return StackPlan(spec.name, "none", message="deployed as described")
        try:
            return self._change_set(desired)
        except AwsError as exc:
            return StackPlan(spec.name, "none", message=str(exc), error=True)

    def _change_set(self, desired: DesiredState) -> StackPlan:
        spec = desired.spec
        observed = self.cfn.describe(spec.name)
        cond = condition(observed.status if observed else None)
        if observed is not None:
            view = self.state.stacks.get(spec.name)
            refused = refused_for(spec, observed.tags, observed.stack_id, view=view)
            if refused:
                return StackPlan(spec.name, "none", message=f"refused: {refused}", error=True)
        if observed is not None and cond is Condition.ROLLED_BACK_CREATE:
            return StackPlan(
                spec.name,
                "create",
                message=f"{observed.status}: deleted and created again only with "
                "on_failure: recreate",
            )
        if observed is not None and cond in (Condition.BUSY, Condition.FAILED):
            return StackPlan(
                spec.name, "update", message=f"{observed.status}: cannot be planned now", error=True
            )
        problem = spec.capability_problem or self.cfn.template_problem(
            spec.name, spec.template_body
        )
        if problem:
            return StackPlan(spec.name, "none", message=problem, error=True)
        kind = "CREATE" if cond in (Condition.ABSENT, Condition.REVIEW) else "UPDATE"
        action = kind.lower()
        secret = spec.no_echo
        shown_new = desired.redacted_parameters()
        old_params = observed.parameters if observed and kind == "UPDATE" else {}
        params = value_changes(_masked(old_params, secret), shown_new, secret)
        old_tags = observed.tags if observed and kind == "UPDATE" else {}
        new_tags = dict(spec.tags) | owner_tags(spec.repo)
        tags = value_changes(old_tags, new_tags)
        name = f"syncd-plan-{desired.digest[:12]}-{secrets.token_hex(3)}"
        arn: str | None = None
        made_stack = observed is None
        try:
            try:
                arn = self.cfn.create_change_set(
                    stack=spec.name,
                    name=name,
                    change_set_type=kind,
                    template=spec.template_body,
                    digest=desired.digest,
                    parameters=dict(desired.parameters),
                    tags=new_tags,
                    capabilities=spec.options.capabilities,
                    description=f"syncd plan of {spec.deployment_file}; never executed",
                )
            except NoChanges:
                return StackPlan(spec.name, "none", message="no changes")
            except AwsError as exc:
                if exc.code != "ValidationError":  # a busy stack has a code of its own
                    raise
                return StackPlan(spec.name, action, message=spec.refused(exc), error=True)
            info = self._wait(arn, spec.name)
            if info.status == CHANGE_SET_FAILED:
                if means_no_changes(info.reason):
                    return StackPlan(spec.name, "none", message="no changes")
                why = spec.refused(f"change set failed: {info.reason or 'FAILED'}")
                return StackPlan(spec.name, action, message=why, error=True)
            changes = tuple(
                ResourceChange(
                    c.get("action") or "",
                    c.get("logical_id") or "",
                    c.get("type") or "",
                    c.get("replacement"),
                )
                for c in info.changes
            )
            return StackPlan(spec.name, action, changes, params, tags)
        finally:
            self._clean_up(arn, spec.name, made_stack)

    def _wait(self, arn: str, stack: str) -> Any:
        pause, deadline = 0.1, time.monotonic() + WAIT_LIMIT
        while True:
            info = self.cfn.describe_change_set(arn, stack)
            if info is None:
                raise AwsError(f"change set {arn} disappeared while it was being made")
            if info.status not in CHANGE_SET_PENDING:
                return info
            if time.monotonic() > deadline:
                raise AwsError(f"change set {arn} was not ready after {WAIT_LIMIT:.0f} s")
            time.sleep(pause)
            pause = min(pause * 2, 2.0)

    def _clean_up(self, arn: str | None, stack: str, made_stack: bool) -> None:
        """Leave nothing behind: the change set, and a stack that only it brought about."""
        try:
            if arn is not None:
                self.cfn.delete_change_set(arn, stack)
        except AwsError as exc:
            self.log.warning("plan.clean_up_failed", stack=stack, error=str(exc))
        try:
            if made_stack:
                observed = self.cfn.describe(stack)
                if observed is not None and observed.status == "REVIEW_IN_PROGRESS":
                    self.cfn.delete_stack(stack)
        except AwsError as exc:
            self.log.warning("plan.clean_up_failed", stack=stack, error=str(exc))

    def _delete(self, repo: str, stack: str) -> StackPlan:
        try:
            observed = self.cfn.describe(stack)
            if observed is None:
                return StackPlan(
                    stack, "none", message="its deployment file is removed; not deployed"
                )
            refused = delete_refused(repo, observed.tags)
            if refused:
                why = f"its deployment file is removed; not pruned: {refused}"
                return StackPlan(stack, "none", message=why, error=True)
            resources = self.cfn.resources(stack)
        except AwsError as exc:
            return StackPlan(stack, "delete", message=str(exc), error=True)
        changes = tuple(ResourceChange("Remove", lid, rtype, None) for lid, rtype in resources)
        return StackPlan(
            stack,
            "delete",
            changes,
            message="its deployment file is removed and prune is on: the stack is deleted",
        )

    # --- helpers ----------------------------------------------------------------------------

    def _outputs_of(self, stack: str) -> Mapping[str, str] | None:
        view = self.state.stacks.get(stack)
        if view is not None and view.version is not None and view.outputs:
            return view.outputs
        observed = self.cfn.describe(stack)
        return observed.outputs if observed else None

    def _exists(self, stack: str) -> bool:
        try:
            return self.cfn.describe(stack) is not None
        except AwsError:
            return False


def _masked(values: Mapping[str, str], secret: frozenset[str]) -> dict[str, str]:
    return {k: ("****" if k in secret else v) for k, v in values.items()}
