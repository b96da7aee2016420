"""Drift checks (`drift_interval`, `on_drift`): CloudFormation's drift detection of a repo's
deployed stacks, in steps that never hold a pass, and the rule by which drift holds a change.

A detection runs on AWS for seconds to minutes: a pass's start asks for the detections that are
due and reads those that have finished; its end reads those it asked for, if they finished
meanwhile. Property values are never read into syncd (`CloudFormation.resource_drifts` keeps
only property paths and how they differ), so a secret cannot reach the journal or the log.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Set
from datetime import datetime
from typing import Any

from syncd.clouds import Gateways
from syncd.core.config import OnDrift, RepoConfig, StackOptions
from syncd.core.deployments import StackSpec
from syncd.core.journal_state import (
    DriftResult,
    Kind,
    StackView,
    drift_block_reason,
    drift_fields,
    suspension,
)
from syncd.core.text import LIST_LIMIT, VALUE_LIMIT, bounded
from syncd.errors import AwsError
from syncd.journal.store import Journal


def drift_holds(spec: StackSpec, digest: str, view: StackView | None) -> str | None:
    """Why `on_drift: block` holds the stack's change now, or None. Drift found and not accepted
    holds every change set for a desired state other than the deployed one (one for the
    deployed state would change nothing: CloudFormation compares templates, not resources). An
    apply already open began before the drift was known: it goes on."""
    if spec.options.on_drift is not OnDrift.BLOCK or view is None or view.drift is None:
        return None
    if not view.drift.blocks or view.attempt is not None or view.digest == digest:
        return None
    return drift_block_reason(spec.name, view.drift)


# At most this many detections of a repo's stacks are under way at once (the longest unchecked
# asked for first): a pass makes at most about twice as many drift calls, and a first pass over
# many stacks spreads its checks over the passes that follow.
DRIFT_UNDER_WAY = 20
# A detection still running after this long is given up (AWS's take minutes at most).
DRIFT_DETECTION_TIMEOUT = 3600.0


class DriftChecks:
    """Drift checks of a repo's deployed stacks (drift_interval), in steps that never wait.

        pass start: each detection under way -> DescribeStackDriftDetectionStatus; finished:
                    DescribeStackResourceDrifts -> drift_checked record
                    each stack due -> DetectStackDrift -> drift_detecting record (its id)
        pass end:   the detections asked for at its start, if they have finished already

    A stack is due when it is deployed, not suspended, has no apply open, and its interval has
    passed since its last detection was asked for, by the journal's times: a restart neither
    forgets a detection under way nor checks again before its time. A check that fails
    (DETECTION_FAILED, an API error) is recorded as unknown with the reason, and nothing else
    changes: the stack's state, the pass and the other stacks go on. Property values are never
    read into syncd (`CloudFormation.resource_drifts`), so they cannot reach the journal."""

    def __init__(
        self,
        cfn: Gateways,
        journal: Journal,
        stop: threading.Event,
        clock: Callable[[], datetime],
        log: Any,
    ) -> None:
        self.cfn = cfn
        self.journal = journal
        self.stop = stop
        self.clock = clock
        self.log = log

    def begin(self, repo: RepoConfig, only: Set[str] | None = None) -> list[str]:
        """Read the detections under way that have finished, then ask for those that are due;
        returns the stacks asked about now."""
        if self.stop.is_set():
            return []
        now = self.clock()
        views = self._views(repo, only)
        for view in views:
            if view.drift_detection is not None:
                self._collect(repo, view.stack, view.drift_detection, now)
        views = self._views(repo, only)
        stacks = self.journal.state.stacks.values()
        under_way = sum(1 for v in stacks if v.repo == repo.name and v.drift_detection)
        due = [
            v
            for v in views
            if v.drift_detection is None and _drift_due(v, repo.options_for(v.stack), now)
        ]
        due.sort(key=lambda v: v.drift_asked_at or "")  # never checked, then the oldest
        asked = []
        for view in due[: max(0, DRIFT_UNDER_WAY - under_way)]:
            if self.stop.is_set():
                break
            if self._detect(repo, view.stack):
                asked.append(view.stack)
        return asked

    def end(self, repo: RepoConfig, asked: list[str]) -> None:
        """Read the detections this pass asked for, if they have finished already."""
        now = self.clock()
        for view in self._views(repo, set(asked)):
            if view.drift_detection is not None and not self.stop.is_set():
                self._collect(repo, view.stack, view.drift_detection, now)

    def _views(self, repo: RepoConfig, only: Set[str] | None) -> list[StackView]:
        """This repo's deployed stacks that may be looked at now (no call for a suspended
        stack; an apply open looks at it itself)."""
        state = self.journal.state
        return [
            v
            for v in list(state.stacks.values())
            if v.repo == repo.name
            and (only is None or v.stack in only)
            and v.version is not None
            and not v.removed
            and v.attempt is None
            and suspension(state, v.stack, repo.name) is None
        ]

    def _detect(self, repo: RepoConfig, stack: str) -> bool:
        try:
            detection = self.cfn.detect_drift(stack)
        except AwsError as exc:
            self._record(repo, stack, None, DriftResult.UNKNOWN, reason=str(exc))
            return False
        self.journal.append(Kind.DRIFT_DETECTING, repo=repo.name, stack=stack, detection=detection)
        self.log.info("drift.detecting", stack=stack, detection=detection)
        return True

    def _collect(self, repo: RepoConfig, stack: str, detection: str, now: datetime) -> None:
        try:
            found = self.cfn.drift_detection(detection)
            if found.status == "DETECTION_IN_PROGRESS":
                view = self.journal.state.stacks[stack]
                asked = _parse_time(view.drift_asked_at) if view.drift_asked_at else now
                if (now - asked).total_seconds() < DRIFT_DETECTION_TIMEOUT:
                    return  # a later pass asks again
                minutes = DRIFT_DETECTION_TIMEOUT / 60
                reason = f"the detection had not finished after {minutes:g} minutes"
                return self._record(repo, stack, detection, DriftResult.UNKNOWN, reason=reason)
            if found.status != "DETECTION_COMPLETE":
                reason = f"{found.status}: {found.reason or 'no reason given'}"
                return self._record(repo, stack, detection, DriftResult.UNKNOWN, reason=reason)
            drifted = self.cfn.resource_drifts(stack) if found.stack_drift != "IN_SYNC" else []
        except AwsError as exc:
            return self._record(repo, stack, detection, DriftResult.UNKNOWN, reason=str(exc))
        result = DriftResult.DRIFTED if drifted else DriftResult.IN_SYNC
        self._record(repo, stack, detection, result, drift_fields(drifted))

    def _record(
        self,
        repo: RepoConfig,
        stack: str,
        detection: str | None,
        result: DriftResult,
        fields: Mapping[str, Any] | None = None,
        reason: str = "",
    ) -> None:
        fields = fields or {"resources": [], "more_resources": 0}
        self.journal.append(
            Kind.DRIFT_CHECKED,
            repo=repo.name,
            stack=stack,
            detection=detection,
            result=result.value,
            reason=bounded(reason) if reason else None,
            **fields,
        )
        log = self.log.info if result is DriftResult.IN_SYNC else self.log.warning
        names = [r["logical_id"] for r in fields["resources"]]
        properties, more_properties = _logged_paths(fields["resources"][:LIST_LIMIT])
        log(
            "drift.checked",
            stack=stack,
            result=result.value,
            resources=names[:LIST_LIMIT] or None,
            more_resources=max(0, len(names) - LIST_LIMIT) + fields["more_resources"] or None,
            properties=properties or None,
            more_properties=more_properties or None,
            reason=bounded(reason) if reason else None,
        )


# The drift.checked log line names the property paths that differ in the resources it names:
# at most this many per resource, and this many in all (a stack can hold hundreds of drifted
# resources, each with many paths); the rest are counted. The journal, `status` and `show`
# have them all (up to DRIFT_PROPERTIES per resource).
LOG_PATHS_PER_RESOURCE = 5
LOG_PATHS = 15


def _logged_paths(resources: list[dict[str, Any]]) -> tuple[dict[str, list[str]], int]:
    """{logical id: [property path, ...]} of the resources with properties that differ, bounded
    as above, and how many of their paths were left out."""
    shown: dict[str, list[str]] = {}
    left_out, room = 0, LOG_PATHS
    for r in resources:
        paths = [str(p.get("path", "")) for p in r.get("properties") or []]
        kept = paths[: min(LOG_PATHS_PER_RESOURCE, room)]
        if kept:
            shown[str(r.get("logical_id", ""))] = [bounded(p, VALUE_LIMIT) for p in kept]
        room -= len(kept)
        left_out += len(paths) - len(kept) + int(r.get("more_properties") or 0)
    return shown, left_out


def _drift_due(view: StackView, options: StackOptions, now: datetime) -> bool:
    if options.drift_interval is None:
        return False
    if view.drift_asked_at is None:
        return True
    return (now - _parse_time(view.drift_asked_at)).total_seconds() >= options.drift_interval


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
