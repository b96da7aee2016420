"""Fold journal records into what `status` and `history` show, and what the next pass needs.

Pure. Status is never kept beside the journal: it is always this fold of the records, applied
one at a time as they are appended (and replayed in full at start). A record's `kind` says
which step of an apply it marks; its `data` carries the facts of that step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from syncd.core.text import LIST_LIMIT, bounded


class Kind(StrEnum):
    COMMIT = "commit"  # a repo's branch moved: {repo, commit, previous, forced, changes}
    SOURCE_ERROR = "source_error"  # a repo could not be fetched: {repo, message}
    SOURCE_OK = "source_ok"  # it can be fetched again, its head is the commit taken: {repo}
    INVALID = "invalid"  # a deployment file is bad: {repo, stack, commit, file, reason}
    VERSION = "version"  # a new desired state starts to apply: {repo, stack, version, commit,
    #                      digest, action, deployment_file, template_file, parameters, tags,
    #                      dependencies, rollback_of?}: rollback_of, the version whose
    #                      desired state `syncd rollback` applies again
    CHANGE_SET = "change_set"  # created and described: {stack, repo, commit, version, arn,
    #                            name, changes, awaiting_approval}
    APPROVED = "approved"  # someone approved the waiting change set: {stack, change_set, by}
    APPROVAL_REFUSED = "approval_refused"  # an approval of a change set that is not the one
    #                                        waiting: {stack, change_set, by, reason}
    EXECUTING = "executing"  # about to call ExecuteChangeSet (change_set: ARN) or DeleteStack
    #                          (change_set: null): {stack, change_set}
    OUTCOME_UNKNOWN = "outcome_unknown"  # after an execute, CloudFormation's answer about the
    #                                      stack could not be read: the attempt stays open:
    #                                      {stack, reason, tries, look_again_at}
    RESULT = "result"  # the attempt ended: {stack, repo, version, commit, result,
    #                    stack_status, message, outputs, retryable}
    BLOCKED = "blocked"  # cannot apply now: {repo, stack, stack_status, reason}
    RECREATING = "recreating"  # about to delete a ROLLBACK_COMPLETE stack: {stack, stack_status}
    OBSERVED = "observed"  # what CloudFormation showed: {stack, stack_status, outputs, drift}
    REMOVED = "removed"  # the deployment file is gone and prune is off: {repo, stack}
    PASS_FAILED = "pass_failed"  # a pass over a repo ended in an error: {repo, message}
    PASS_OK = "pass_ok"  # a pass over it completed again: {repo}
    BACK_IN_SYNC = "back_in_sync"  # a commit wants again what was last applied, and the stack
    #                                still holds it: in sync without a change set: {repo, stack,
    #                                commit, stack_status}
    SUSPENDED = "suspended"  # `syncd suspend`: no pass applies or prunes it until resumed:
    #                          {repo, stack, reason, by, request}; stack "" is the whole repo
    RESUMED = "resumed"  # `syncd resume`: {repo, stack, by, request}; a repo's resume clears the
    #                      repo's suspension only, not those of its stacks one by one
    DRIFT_DETECTING = "drift_detecting"  # DetectStackDrift was called (drift_interval):
    #                                      {repo, stack, detection}: its StackDriftDetectionId
    DRIFT_CHECKED = "drift_checked"  # a drift check ended: {repo, stack, detection, result,
    #                                  resources, more_resources, reason}: result in_sync,
    #                                  drifted or unknown (reason: why it could not say);
    #                                  resources, at most DRIFT_RESOURCES: [{logical_id, type,
    #                                  status: MODIFIED | DELETED, properties: [{path,
    #                                  difference: NOT_EQUAL | ADD | REMOVE}], more_properties}],
    #                                  never a value (it can be a secret); detection null when
    #                                  DetectStackDrift itself failed
    DRIFT_ACCEPTED = "drift_accepted"  # `syncd drift accept`: Git's state may be applied over
    #                                    the drift found: {repo, stack, by, reason, request}
    ASKED = "asked"  # a command asked the running daemon for a pass or a rollback (syncd.asks):
    #                  {repo, request, action, by, stacks, deadline, version?, commit?}
    TARGET = "target"  # the account and region a target's credentials reach, as AWS answered
    #                    (GetCallerIdentity): {target, account, region}; target is what stack
    #                    keys put before a stack's name ("" for the default target)
    UNTRUSTED = "untrusted"  # a repo's new head is not signed by a key its `verify` trusts:
    #                          {repo, commit, reason}; the repo stays at the last commit taken
    BACKUP_FAILING = "backup_failing"  # the journal's mirror to S3 stopped working: {error,
    #                                    since}
    BACKUP_OK = "backup_ok"  # it works again: {}
    ANSWERED = "answered"  # the daemon did it: {repo, request, error, source_error, invalid,
    #                        outcomes, commit, version?, refused?}: a rollback's new version,
    #                        and whether it was refused before anything was journaled


# The fields each kind's fold reads without a default, and their types: a record without them
# (its hash may still be valid: whoever can write the journal can compute one) is damage,
# reported where it is, never a KeyError in `status`.
_STR, _INT = (str,), (int,)
REQUIRED: dict[Kind, dict[str, tuple[type, ...]]] = {
    Kind.COMMIT: {"repo": _STR, "commit": _STR},
    Kind.SOURCE_ERROR: {"repo": _STR, "message": _STR},
    Kind.SOURCE_OK: {"repo": _STR},
    Kind.PASS_FAILED: {"repo": _STR, "message": _STR},
    Kind.PASS_OK: {"repo": _STR},
    Kind.INVALID: {"repo": _STR, "stack": _STR, "file": _STR, "reason": _STR},
    Kind.VERSION: {
        "repo": _STR,
        "stack": _STR,
        "version": _INT,
        "commit": _STR,
        "digest": _STR,
        "action": _STR,
    },
    Kind.CHANGE_SET: {"stack": _STR, "arn": _STR},
    Kind.APPROVED: {"stack": _STR},
    Kind.APPROVAL_REFUSED: {"stack": _STR},
    Kind.EXECUTING: {"stack": _STR},
    Kind.OUTCOME_UNKNOWN: {"stack": _STR, "reason": _STR, "tries": _INT, "look_again_at": _STR},
    Kind.RESULT: {"stack": _STR, "result": _STR},
    Kind.BLOCKED: {"stack": _STR, "reason": _STR},
    Kind.RECREATING: {"stack": _STR},
    Kind.OBSERVED: {"stack": _STR},
    Kind.REMOVED: {"repo": _STR, "stack": _STR},
    Kind.BACK_IN_SYNC: {"stack": _STR},
    Kind.SUSPENDED: {"repo": _STR, "stack": _STR, "reason": _STR, "by": _STR},
    Kind.RESUMED: {"repo": _STR, "stack": _STR, "by": _STR},
    Kind.DRIFT_DETECTING: {"repo": _STR, "stack": _STR, "detection": _STR},
    Kind.DRIFT_CHECKED: {"repo": _STR, "stack": _STR, "result": _STR},
    Kind.DRIFT_ACCEPTED: {"repo": _STR, "stack": _STR, "by": _STR},
    Kind.ASKED: {"repo": _STR, "request": _STR, "action": _STR, "deadline": _STR},
    Kind.ANSWERED: {"repo": _STR, "request": _STR},
    Kind.TARGET: {"target": _STR, "account": _STR, "region": _STR},
    Kind.UNTRUSTED: {"repo": _STR, "commit": _STR, "reason": _STR},
    Kind.BACKUP_FAILING: {"error": _STR},
    Kind.BACKUP_OK: {},
}


# Fields the folds read with a default, whatever the kind: null, or of this shape.
_TEXT_FIELDS = frozenset(
    {"stack_status", "stack_id", "deployment_file", "template_file", "message", "reason"}
    | {"drift", "change_set", "detection", "name", "look_again_at"}
)
_MAPPING_FIELDS = frozenset({"parameters", "tags", "outputs"})  # text to text (outputs: or null)


def schema_problem(kind: Kind, data: Any) -> str | None:
    """Why a record's data cannot be folded (a field missing or of the wrong type), or None."""
    if not isinstance(data, Mapping):
        return "its data is not an object"
    for key, types in REQUIRED[kind].items():
        if key not in data:
            return f"its {kind.value} record has no {key!r}"
        if not isinstance(data[key], types) or isinstance(data[key], bool):
            return f"its {kind.value} record has a {key!r} of the wrong type"
    for key in _TEXT_FIELDS & data.keys():
        if data[key] is not None and not isinstance(data[key], str):
            return f"its {kind.value} record has a {key!r} of the wrong type"
    for key in _MAPPING_FIELDS & data.keys():
        value = data[key]
        if (value is not None or key != "outputs") and not (
            isinstance(value, Mapping)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        ):
            return f"its {kind.value} record has a {key!r} of the wrong type"
    if kind is Kind.RESULT and data["result"] not in {r.value for r in Result}:
        return f"its result record has an unknown result {data['result']!r}"
    if kind is Kind.DRIFT_CHECKED:
        return _drift_problem(data)
    return None


class StackState(StrEnum):
    IN_SYNC = "in_sync"
    PENDING = "pending"
    APPLYING = "applying"
    FAILED = "failed"
    BLOCKED = "blocked"
    AWAITING_APPROVAL = "awaiting_approval"
    SUSPENDED = "suspended"  # shown by `status_rows`; a view keeps its own state beneath
    DRIFTED = "drifted"


class Result(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    NO_CHANGES = "no_changes"
    IN_PROGRESS = "in_progress"
    AWAITING_APPROVAL = "awaiting_approval"


@dataclass(frozen=True)
class Suspension:
    """Who suspended a stack (or its repo), when (the record's time), and why."""

    reason: str
    by: str
    at: str

    def describe(self) -> str:
        return f"suspended by {self.by} at {self.at}" + (f": {self.reason}" if self.reason else "")


def _suspension(data: Mapping[str, Any] | None) -> Suspension | None:
    return Suspension(**data) if data is not None else None


class DriftResult(StrEnum):
    IN_SYNC = "in_sync"
    DRIFTED = "drifted"
    UNKNOWN = "unknown"  # the check could not say (DETECTION_FAILED, an API error)


# What a drift check journals: the resources first (by logical id), and the property paths of
# each; the rest are counted. A stack holds at most 500 resources: these keep a record small.
DRIFT_RESOURCES = 100
DRIFT_PROPERTIES = 20


@dataclass(frozen=True)
class Acceptance:
    """Who accepted a stack's drift (`syncd drift accept`), when (the record's time), and why."""

    reason: str
    by: str
    at: str

    def describe(self) -> str:
        return f"accepted by {self.by} at {self.at}" + (f": {self.reason}" if self.reason else "")


@dataclass(frozen=True)
class Drift:
    """A stack's drift checks: the latest one's result and time, and the drift found (by the
    latest check that found any). A check that could not say keeps the drift found before: a
    passing API error must not lift what `on_drift: block` holds."""

    result: DriftResult  # of the latest check
    checked_at: str  # the latest check's time
    reason: str = ""  # why the latest check could not say (unknown)
    resources: list[dict[str, Any]] = field(default_factory=list)  # the drift found, if any
    more_resources: int = 0  # beyond DRIFT_RESOURCES
    found_at: str | None = None  # when that drift was found
    accepted: Acceptance | None = None  # `syncd drift accept`, of the drift found

    @property
    def found(self) -> bool:
        return bool(self.resources) or self.more_resources > 0

    @property
    def blocks(self) -> bool:
        """Whether `on_drift: block` holds the stack's changes for it."""
        return self.found and self.accepted is None


def _drift(data: Mapping[str, Any] | None) -> Drift | None:
    if data is None:
        return None
    accepted = data.get("accepted")
    return Drift(
        **{
            **data,
            "result": DriftResult(data["result"]),
            "accepted": Acceptance(**accepted) if accepted is not None else None,
        }
    )


def _drift_problem(data: Mapping[str, Any]) -> str | None:
    if data["result"] not in {r.value for r in DriftResult}:
        return f"its drift_checked record has an unknown result {data['result']!r}"
    resources = data.get("resources") or []
    if not isinstance(resources, list) or not all(
        isinstance(r, Mapping) and isinstance(r.get("properties") or [], list) for r in resources
    ):
        return "its drift_checked record has resources of the wrong shape"
    if not isinstance(data.get("more_resources") or 0, int):
        return "its drift_checked record has a 'more_resources' of the wrong type"
    return None


def drift_fields(
    resources: Iterable[tuple[str, str, str, Iterable[tuple[str, str]]]],
) -> dict[str, Any]:
    """A drift check's drifted resources, each (logical id, type, MODIFIED | DELETED, [(property
    path, NOT_EQUAL | ADD | REMOVE)]), as its record carries them: sorted, bounded (the rest
    counted), made printable. There is no room for a property's expected or actual value: it
    can be a secret (a NoEcho parameter's value, passed on to a property)."""
    rows = sorted(resources, key=lambda r: (r[0], r[1]))
    kept = []
    for logical_id, resource_type, status, differences in rows[:DRIFT_RESOURCES]:
        paths = sorted(differences)
        kept.append(
            {
                "logical_id": bounded(logical_id, 255),
                "type": bounded(resource_type, 255),
                "status": bounded(status, 40),
                "properties": [
                    {"path": bounded(path, 300), "difference": bounded(kind, 40)}
                    for path, kind in paths[:DRIFT_PROPERTIES]
                ],
                "more_properties": max(0, len(paths) - DRIFT_PROPERTIES),
            }
        )
    return {"resources": kept, "more_resources": max(0, len(rows) - DRIFT_RESOURCES)}


def drift_summary(drift: Drift) -> str:
    """The drift found, for a message: a few resources and a few property paths of each."""
    shown = []
    for r in drift.resources[:LIST_LIMIT]:
        paths = [str(p.get("path", "")) for p in r.get("properties") or []]
        more = len(paths) - 3 + int(r.get("more_properties") or 0)
        where = ", ".join(paths[:3]) + (f" and {more} more" if more > 0 else "")
        status = str(r.get("status", "")).lower()
        text = f"{r.get('logical_id', '')} ({r.get('type', '')}) {status}"
        shown.append(text + (f": {where}" if where else ""))
    rest = len(drift.resources) - len(shown) + drift.more_resources
    return bounded("; ".join(shown) + (f"; and {rest} more resource(s)" if rest > 0 else ""))


def drift_message(drift: Drift | None) -> str:
    """What `status` says of a stack's drift checks ("" when there is nothing to say)."""
    if drift is None:
        return ""
    if not drift.found:
        if drift.result is DriftResult.UNKNOWN:
            return f"drift unknown (checked at {drift.checked_at}): {drift.reason}"
        return ""
    text = f"drifted outside syncd (found at {drift.found_at}): {drift_summary(drift)}"
    if drift.accepted is not None:
        text += f"; {drift.accepted.describe()}"
    if drift.result is DriftResult.UNKNOWN:
        text += f"; the last check (at {drift.checked_at}) could not say: {drift.reason}"
    return text


def drift_block_reason(stack: str, drift: Drift) -> str:
    """Why `on_drift: block` holds the stack, and the command that lets it go on."""
    return bounded(
        f"drifted outside syncd (found at {drift.found_at}): {drift_summary(drift)}; "
        f"on_drift: block holds its changes until `syncd drift accept {stack} -m REASON`"
    )


def drift_row(view: StackView) -> dict[str, Any] | None:
    """A stack's drift checks as `status --format json` shows them (None: never checked since
    its last version)."""
    drift = view.drift
    if drift is None:
        return None
    return {
        "result": drift.result.value,
        "checked_at": drift.checked_at,
        "reason": drift.reason or None,
        "found_at": drift.found_at,
        "resources": drift.resources,
        "more_resources": drift.more_resources,
        "accepted": asdict(drift.accepted) if drift.accepted is not None else None,
    }


@dataclass(frozen=True)
class Record:
    seq: int
    time: str  # ISO 8601, UTC
    kind: Kind
    data: Mapping[str, Any]


@dataclass
class Attempt:
    """A version whose apply has started and not yet ended."""

    version: int
    digest: str
    commit: str
    action: str
    started_at: str
    change_set: str | None = None
    awaiting_approval: bool = False
    executing: bool = False
    executing_at: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)  # redacted: NoEcho shows ****
    tags: dict[str, str] = field(default_factory=dict)
    # Its outcome could not be observed after the execute: how many times in a row, and by
    # when syncd looks again (a daemon's pass comes by then; any pass looks).
    unknown_tries: int = 0
    look_again_at: str | None = None


@dataclass
class StackView:
    stack: str
    repo: str
    version: int | None = None  # the last version applied successfully
    commit: str | None = None
    digest: str | None = None
    state: StackState = StackState.PENDING
    stack_status: str | None = None
    last_sync: str | None = None
    message: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    latest_version: int = 0  # the highest version ever started
    attempt: Attempt | None = None
    failed_digest: str | None = None  # digest of the last failed attempt
    failed_executed: bool = False  # whether that attempt had reached its execute
    retryable: bool = False
    invalid_file: str | None = None
    deployment_file: str | None = None  # the file that last described the stack
    removed: bool = False
    # Who last applied it, and to which physical stack (CloudFormation's StackId): a stack
    # deleted and made again by someone else under the same name is not the one syncd applied.
    applied_by: str | None = None
    stack_id: str | None = None
    suspended: Suspension | None = None  # suspended itself (its repo may be, see `suspension`)
    # Drift checks (drift_interval): the last one's finding (cleared by a version applied since),
    # the detection under way (its id), when a detection was last asked for (the interval
    # counts from it) and when a check last ended.
    drift: Drift | None = None
    drift_detection: str | None = None
    drift_asked_at: str | None = None
    drift_checked_at: str | None = None

    def may_hold_applied(self, digest: str) -> bool:
        """Whether a stack syncd shows as failed may still hold what it last applied, and
        `digest` asks for exactly that: its later version failed before it ran or was rolled
        back, or its deployment file was invalid. The caller confirms with a look at the stack
        (`differs_from`, and a settled status) before calling it in sync without a change set."""
        if self.version is None or self.digest != digest or self.attempt is not None:
            return False
        if self.state is not StackState.FAILED:
            return False
        if self.invalid_file is not None or self.stack_status == "UPDATE_ROLLBACK_COMPLETE":
            return True  # nothing was applied, or the rollback put back what was
        return not self.failed_executed and self.stack_status in _UNTOUCHED

    def differs_from(self, parameters: Mapping[str, str], tags: Mapping[str, str]) -> str | None:
        """How the parameters and tags CloudFormation shows differ from those syncd applied
        (NoEcho values, shown as ****, are not compared), or None."""
        changed = sorted(
            k
            for k, v in self.parameters.items()
            if v != "****" and parameters.get(k, v) not in (v, "****")
        )
        if changed:
            return f"parameters changed outside syncd: {', '.join(changed)}"
        if self.tags and {k: tags.get(k) for k in self.tags} != self.tags:
            return "tags changed outside syncd"
        return None

    def as_status(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "repo": self.repo,
            "version": self.version,
            "commit": self.commit,
            "state": self.state.value,
            "stack_status": self.stack_status,
            "last_sync": self.last_sync,
            "message": self.message,
        }


# What a stack shows (None: not recorded) after an attempt that failed before its execute.
_UNTOUCHED = frozenset({None, "CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE"})


@dataclass
class HistoryRow:
    stack: str
    version: int
    commit: str
    action: str
    result: Result
    change_set: str | None
    started_at: str
    finished_at: str | None = None
    message: str = ""
    rollback_of: int | None = None  # `syncd rollback`: the version applied again

    def as_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "version": self.version,
            "commit": self.commit,
            "action": self.action,
            "result": self.result.value,
            "change_set": self.change_set,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "message": self.message,
            "rollback_of": self.rollback_of,
        }


@dataclass
class RepoView:
    repo: str
    commit: str | None = None
    error: str | None = None  # its branch could not be fetched
    pass_error: str | None = None  # its last pass ended in an error
    suspended: Suspension | None = None  # the whole repo, stacks added later included
    # What commands asked the daemon for and it has not answered yet: request id -> the
    # ASKED record's data (a daemon that restarts answers them, see syncd.asks).
    asked: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    # Its branch's head is not signed by a trusted key (verify): {commit, reason, since}; the
    # repo stays at `commit` above until a trusted one comes.
    untrusted: dict[str, str] | None = None


# History rows of each stack kept in memory (and in snapshots): the daemon needs only the latest
# (asks, commit statuses); `syncd history`, `show` and `rollback` read the rest from the journal
# (Journal.full_history). Without a bound, every version ever applied would stay in memory.
HISTORY_KEPT = 20

# The state `status` shows for a stack that looked in sync when its repo's last pass failed:
# the commit that pass was reading may change it, and nothing has applied it.
STALE = "stale"


@dataclass
class JournalState:
    stacks: dict[str, StackView] = field(default_factory=dict)
    history: list[HistoryRow] = field(default_factory=list)
    repos: dict[str, RepoView] = field(default_factory=dict)
    last_seq: int = 0
    last_time: str | None = None
    drift_checks: dict[str, dict[str, int]] = field(default_factory=dict)  # repo -> result -> n
    # target ("" the default) -> {"account", "region"}, as AWS answered (Kind.TARGET)
    targets: dict[str, dict[str, str]] = field(default_factory=dict)
    # The journal's mirror to S3 is failing (Kind.BACKUP_FAILING): {error, since}; None: not.
    backup_failing: dict[str, str] | None = None
    history_limit: int | None = HISTORY_KEPT  # rows per stack; None: every row
    _open_rows: dict[str, HistoryRow] = field(default_factory=dict)
    _history_trimmed_at: int = 0  # len(history) after the last trim

    def stack(self, name: str, repo: str = "") -> StackView:
        view = self.stacks.get(name)
        if view is None:
            view = self.stacks[name] = StackView(stack=name, repo=repo)
        elif repo:
            view.repo = repo
        return view

    def apply(self, record: Record) -> None:
        """Fold one more record in (records arrive in sequence order)."""
        self.last_seq = record.seq
        self.last_time = record.time
        d = record.data
        handler = _HANDLERS[record.kind]
        handler(self, record, d)

    def trim_history(self) -> None:
        """Keep the last `history_limit` rows of each stack (an open one is always the last of
        its stack). Done when the history has doubled since the last trim: amortised, the cost
        of a row does not grow with the history."""
        limit = self.history_limit
        if limit is None or len(self.history) <= max(1000, 2 * self._history_trimmed_at):
            return
        counts: dict[str, int] = {}
        kept: list[HistoryRow] = []
        for row in reversed(self.history):
            n = counts.get(row.stack, 0)
            if n < limit:
                kept.append(row)
                counts[row.stack] = n + 1
        kept.reverse()
        self.history = kept
        self._history_trimmed_at = len(kept)

    def to_snapshot(self) -> dict[str, Any]:
        """The folded state as plain JSON data (a snapshot spares replaying all records)."""
        row_index = {id(row): i for i, row in enumerate(self.history)}
        return {
            "stacks": [asdict(view) for view in self.stacks.values()],
            "history": [asdict(row) for row in self.history],
            "repos": [asdict(repo) for repo in self.repos.values()],
            "last_seq": self.last_seq,
            "last_time": self.last_time,
            "open_rows": {stack: row_index[id(row)] for stack, row in self._open_rows.items()},
            "drift_checks": {repo: dict(n) for repo, n in self.drift_checks.items()},
            "targets": {t: dict(v) for t, v in self.targets.items()},
            "backup_failing": self.backup_failing,
        }

    @classmethod
    def from_snapshot(cls, data: Mapping[str, Any]) -> JournalState:
        history = [
            HistoryRow(**{**row, "result": Result(row["result"])}) for row in data["history"]
        ]
        stacks = {}
        for view in data["stacks"]:
            attempt = Attempt(**view["attempt"]) if view["attempt"] is not None else None
            stacks[view["stack"]] = StackView(
                **{
                    **view,
                    "state": StackState(view["state"]),
                    "attempt": attempt,
                    "suspended": _suspension(view.get("suspended")),
                    "drift": _drift(view.get("drift")),
                }
            )
        repos = {
            repo["repo"]: RepoView(**{**repo, "suspended": _suspension(repo.get("suspended"))})
            for repo in data["repos"]
        }
        return cls(
            stacks=stacks,
            history=history,
            repos=repos,
            last_seq=data["last_seq"],
            last_time=data["last_time"],
            _open_rows={stack: history[i] for stack, i in data["open_rows"].items()},
            drift_checks={repo: dict(n) for repo, n in data.get("drift_checks", {}).items()},
            targets={t: dict(v) for t, v in data.get("targets", {}).items()},
            backup_failing=data.get("backup_failing"),
        )


def fold(records: Iterable[Record], history_limit: int | None = HISTORY_KEPT) -> JournalState:
    state = JournalState(history_limit=history_limit)
    for record in records:
        state.apply(record)
    return state


def _commit(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    repo = s.repos.setdefault(d["repo"], RepoView(d["repo"]))
    repo.commit = d["commit"]
    repo.error = None
    repo.untrusted = None


def _untrusted(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    repo = s.repos.setdefault(d["repo"], RepoView(d["repo"]))
    repo.untrusted = {"commit": d["commit"], "reason": d["reason"], "since": r.time}
    repo.error = None


def _backup_failing(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    s.backup_failing = {"error": d["error"], "since": str(d.get("since") or r.time)}


def _backup_ok(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    s.backup_failing = None


def _source_error(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    s.repos.setdefault(d["repo"], RepoView(d["repo"])).error = d["message"]


def _source_ok(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    repo = s.repos.setdefault(d["repo"], RepoView(d["repo"]))
    repo.error = None
    repo.untrusted = None


def _pass_failed(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    s.repos.setdefault(d["repo"], RepoView(d["repo"])).pass_error = d["message"]


def _pass_ok(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    s.repos.setdefault(d["repo"], RepoView(d["repo"])).pass_error = None


def _invalid(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    view = s.stack(d["stack"], d["repo"])
    view.state = StackState.FAILED
    view.invalid_file = d["file"]
    view.message = f"{d['file']}: {d['reason']}"
    view.removed = False


def _version(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    view = s.stack(d["stack"], d["repo"])
    view.attempt = Attempt(
        version=d["version"],
        digest=d["digest"],
        commit=d["commit"],
        action=d["action"],
        started_at=r.time,
        parameters=dict(d.get("parameters", {})),
        tags=dict(d.get("tags", {})),
    )
    view.latest_version = max(view.latest_version, d["version"])
    view.deployment_file = d.get("deployment_file") or view.deployment_file
    view.state = StackState.APPLYING
    view.message = f"version {d['version']}: making its change set"
    view.invalid_file = None
    view.removed = False
    row = HistoryRow(
        stack=d["stack"],
        version=d["version"],
        commit=d["commit"],
        action=d["action"],
        result=Result.IN_PROGRESS,
        change_set=None,
        started_at=r.time,
        rollback_of=rollback if isinstance(rollback := d.get("rollback_of"), int) else None,
    )
    s.history.append(row)
    s._open_rows[d["stack"]] = row
    s.trim_history()


def _change_set(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    view = s.stack(d["stack"])
    if view.attempt is not None:
        view.attempt.change_set = d["arn"]
        view.attempt.awaiting_approval = bool(d.get("awaiting_approval"))
    row = s._open_rows.get(d["stack"])
    if row is not None:
        row.change_set = d["arn"]
    if d.get("awaiting_approval"):
        view.state = StackState.AWAITING_APPROVAL
        view.message = f"change set {d.get('name') or d['arn']} waits for syncd approve"
        if row is not None:
            row.result = Result.AWAITING_APPROVAL


def _approved(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    view = s.stack(d["stack"])
    if view.attempt is not None:
        view.attempt.awaiting_approval = False
    view.state = StackState.APPLYING
    view.message = f"approved by {d.get('by') or 'someone'}"
    row = s._open_rows.get(d["stack"])
    if row is not None:
        row.result = Result.IN_PROGRESS


def _approval_refused(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    pass  # an audit entry: the waiting change set (if any) still waits


def _executing(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    view = s.stack(d["stack"])
    if view.attempt is not None:
        view.attempt.executing = True
        view.attempt.executing_at = r.time
    view.state = StackState.APPLYING
    what = "its change set" if d.get("change_set") else "the delete"
    view.message = f"executing {what} since {r.time}: waiting for CloudFormation"
    row = s._open_rows.get(d["stack"])
    if row is not None:
        row.result = Result.IN_PROGRESS


def _outcome_unknown(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    view = s.stack(d["stack"])
    if view.attempt is not None:
        view.attempt.unknown_tries = d["tries"]
        view.attempt.look_again_at = d["look_again_at"]
    view.state = StackState.APPLYING
    view.message = f"outcome unknown: {d['reason']}; looking again by {d['look_again_at']}"


def _result(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    view = s.stack(d["stack"])
    result = Result(d["result"])
    row = s._open_rows.pop(d["stack"], None)
    if row is not None:
        row.result = result
        row.finished_at = r.time
        row.message = d.get("message", "")
    attempt = view.attempt
    view.attempt = None
    view.stack_status = d.get("stack_status")
    if attempt is not None and attempt.executing:
        view.drift_detection = None  # it may have looked at the stack from before the change
        if result is Result.SUCCEEDED:
            view.drift = None  # CloudFormation wrote the template's state over any drift
    if result in (Result.SUCCEEDED, Result.NO_CHANGES) and attempt is not None:
        if attempt.action == "delete":
            del s.stacks[d["stack"]]
            return
        view.version = attempt.version
        view.applied_by = view.repo
        view.stack_id = d.get("stack_id") or view.stack_id
        view.commit = attempt.commit
        view.digest = attempt.digest
        view.parameters = attempt.parameters
        view.tags = attempt.tags
        view.outputs = dict(d.get("outputs") or {})
        view.state = StackState.IN_SYNC
        view.last_sync = r.time
        view.message = ""
        view.failed_digest = None
        view.retryable = False
    else:
        view.state = StackState.FAILED
        view.message = d.get("message", "")
        view.failed_digest = attempt.digest if attempt else None
        view.failed_executed = attempt.executing if attempt else False
        view.retryable = bool(d.get("retryable"))


def _blocked(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    # A stack another repo applied stays that repo's in the journal when this one is refused.
    view = s.stacks.get(d["stack"]) or s.stack(d["stack"], d.get("repo", ""))
    view.state = StackState.BLOCKED
    view.message = d["reason"]
    if d.get("stack_status") is not None:
        view.stack_status = d["stack_status"]


def _recreating(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    view = s.stack(d["stack"])
    view.stack_status = d.get("stack_status")
    view.message = "deleting the stack its failed first create left behind, to create it again"


def _observed(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    view = s.stack(d["stack"])
    view.stack_status = d.get("stack_status")
    if d.get("outputs") is not None:
        view.outputs = dict(d["outputs"])
    drift = d.get("drift")
    if drift:
        view.state = StackState.DRIFTED
        view.message = drift


def _removed(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    view = s.stack(d["stack"], d["repo"])
    if view.version is None:  # never deployed: nothing is left to show
        del s.stacks[d["stack"]]
        return
    view.removed = True
    view.state = StackState.IN_SYNC if view.state is not StackState.DRIFTED else view.state
    view.message = d.get("reason") or (
        "deployment file removed; prune is off, so the stack is left alone"
    )


def _back_in_sync(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    view = s.stack(d["stack"], d.get("repo", ""))
    view.state = StackState.IN_SYNC
    view.message = ""
    view.failed_digest = None
    view.retryable = False
    view.invalid_file = None
    view.last_sync = r.time
    if d.get("stack_status") is not None:
        view.stack_status = d["stack_status"]


def _suspended(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    mark = Suspension(d["reason"], d["by"], r.time)
    if not d["stack"]:
        s.repos.setdefault(d["repo"], RepoView(d["repo"])).suspended = mark
    elif d["stack"] in s.stacks:  # syncd journals it only for a stack it knows
        s.stacks[d["stack"]].suspended = mark


def _resumed(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    if not d["stack"]:
        s.repos.setdefault(d["repo"], RepoView(d["repo"])).suspended = None
    elif d["stack"] in s.stacks:
        s.stacks[d["stack"]].suspended = None


def _drift_detecting(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    view = s.stacks.get(d["stack"])  # syncd checks only stacks it deployed
    if view is not None:
        view.drift_detection = d["detection"]
        view.drift_asked_at = r.time


def _drift_checked(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    result = DriftResult(d["result"])
    counts = s.drift_checks.setdefault(d["repo"], {})
    counts[result.value] = counts.get(result.value, 0) + 1
    view = s.stacks.get(d["stack"])
    if view is None:
        return
    if d.get("detection") is None:  # DetectStackDrift itself failed: that was the ask
        view.drift_asked_at = r.time
    view.drift_detection = None
    view.drift_checked_at = r.time
    before = view.drift
    if result is DriftResult.UNKNOWN:
        kept = before if before is not None and before.found else None
        view.drift = Drift(
            result,
            r.time,
            str(d.get("reason") or "the check could not say"),
            kept.resources if kept else [],
            kept.more_resources if kept else 0,
            kept.found_at if kept else None,
            kept.accepted if kept else None,
        )
        return
    resources = [dict(x) for x in d.get("resources") or []] if result is DriftResult.DRIFTED else []
    more = int(d.get("more_resources") or 0) if result is DriftResult.DRIFTED else 0
    same = before is not None and (before.resources, before.more_resources) == (resources, more)
    view.drift = Drift(
        result,
        r.time,
        "",
        resources,
        more,
        (before.found_at if same and before else r.time) if resources or more else None,
        # An acceptance holds for the drift accepted: drift found since is held again.
        before.accepted if same and before else None,
    )


def _drift_accepted(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    view = s.stacks.get(d["stack"])
    if view is not None and view.drift is not None and view.drift.found:
        mark = Acceptance(str(d.get("reason") or ""), d["by"], r.time)
        view.drift = replace(view.drift, accepted=mark)


def _asked(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    s.repos.setdefault(d["repo"], RepoView(d["repo"])).asked[d["request"]] = dict(d)


def _target(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    s.targets[d["target"]] = {"account": d["account"], "region": d["region"]}


def _answered(s: JournalState, r: Record, d: Mapping[str, Any]) -> None:
    repo = s.repos.get(d["repo"])
    if repo is not None:
        repo.asked.pop(d["request"], None)


_HANDLERS = {
    Kind.COMMIT: _commit,
    Kind.SOURCE_ERROR: _source_error,
    Kind.SOURCE_OK: _source_ok,
    Kind.PASS_FAILED: _pass_failed,
    Kind.PASS_OK: _pass_ok,
    Kind.INVALID: _invalid,
    Kind.VERSION: _version,
    Kind.CHANGE_SET: _change_set,
    Kind.APPROVED: _approved,
    Kind.APPROVAL_REFUSED: _approval_refused,
    Kind.EXECUTING: _executing,
    Kind.OUTCOME_UNKNOWN: _outcome_unknown,
    Kind.RESULT: _result,
    Kind.BLOCKED: _blocked,
    Kind.RECREATING: _recreating,
    Kind.OBSERVED: _observed,
    Kind.REMOVED: _removed,
    Kind.BACK_IN_SYNC: _back_in_sync,
    Kind.SUSPENDED: _suspended,
    Kind.RESUMED: _resumed,
    Kind.DRIFT_DETECTING: _drift_detecting,
    Kind.DRIFT_CHECKED: _drift_checked,
    Kind.DRIFT_ACCEPTED: _drift_accepted,
    Kind.ASKED: _asked,
    Kind.ANSWERED: _answered,
    Kind.TARGET: _target,
    Kind.UNTRUSTED: _untrusted,
    Kind.BACKUP_FAILING: _backup_failing,
    Kind.BACKUP_OK: _backup_ok,
}


def suspension(state: JournalState, stack: str, repo: str) -> Suspension | None:
    """Why `stack` of `repo` is suspended (itself first, else through its repo), or None. A
    stack the journal does not know yet is suspended when its repo is."""
    view = state.stacks.get(stack)
    if view is not None and view.suspended is not None:
        return view.suspended
    repo_view = state.repos.get(repo)
    return repo_view.suspended if repo_view is not None else None


def status_rows(state: JournalState) -> list[dict[str, Any]]:
    """What `status` shows, stack by stack: a suspended stack (itself or through its repo) is
    shown `suspended`, whatever its state; a stack that looks in sync in a repo whose last pass
    failed is shown `stale`, with the pass's error, never `in_sync`; one that is in sync with
    Git but in which a drift check found drift is shown `drifted` (a check that could not say
    is only mentioned)."""
    rows = []
    for view in sorted(state.stacks.values(), key=lambda v: (v.repo, v.stack)):
        row = view.as_status()
        repo = state.repos.get(view.repo)
        held = suspension(state, view.stack, view.repo)
        if held is not None:
            row["state"] = StackState.SUSPENDED.value
            row["message"] = held.describe()
        elif repo is not None and repo.pass_error and view.state is StackState.IN_SYNC:
            row["state"] = STALE
            row["message"] = f"the repo's last pass failed: {repo.pass_error}"
        elif view.state is StackState.IN_SYNC and (drift := drift_message(view.drift)):
            if view.drift is not None and view.drift.found:
                row["state"] = StackState.DRIFTED.value
            row["message"] = "; ".join(m for m in (row["message"], drift) if m)
        row["drift"] = drift_row(view)
        row["last_drift_check"] = view.drift_checked_at
        row["name"], row["account"], row["region"] = place_of(state, view.stack)
        rows.append(row)
    return rows


def place_of(state: JournalState, stack: str) -> tuple[str, str | None, str | None]:
    """A stack key's CloudFormation name, account and region: as AWS answered for its target
    (Kind.TARGET), else as far as the key itself says (None: not known)."""
    target, _, name = stack.rpartition("/")
    known = state.targets.get(target, {})
    parts = target.split("/") if target else []
    account = known.get("account") or (parts[0] if len(parts) == 2 else None)
    region = known.get("region") or (parts[-1] if parts else None)
    if account is None and len(parts) == 1:  # another region of the default account
        account = state.targets.get("", {}).get("account")
    return name, account, region
