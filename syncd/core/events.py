"""What happened, for people and other programs: the journal's records as events, and the commit
status each event gives the commit it is about.

Pure. The journal is the outbox: every event is derived from one record, so an event is due as
soon as its record is acknowledged, survives a restart with it, and has a stable id (the
journal's lineage and the record's seq, see syncd.outbox). A record gives at most one event:

    commit         -> commit.detected    a followed branch moved (or was force-pushed)
    version        -> version.started    a new desired state of a stack starts to apply
    change_set     -> awaiting_approval  (only when it waits for `syncd approve`)
    result         -> succeeded | failed
    blocked        -> blocked            a stack cannot be applied now (said once per reason)
    untrusted      -> blocked            a repo's head is not signed by a trusted key
    observed, drift_checked -> drifted   drift newly found (the same drift found again is not)
    backup_failing -> backup.failing     the journal's mirror to S3 stopped working
    backup_ok      -> backup.recovered

`EventFold` keeps what a record's event needs from earlier records (which repo and commit a
stack's open version is from, the drift seen last) for records that do not say it themselves
(those written before syncd said it in each record).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from syncd.core.journal_state import HistoryRow, JournalState, Kind, Record, Result
from syncd.core.text import bounded

COMMIT_DETECTED = "commit.detected"
VERSION_STARTED = "version.started"
AWAITING_APPROVAL = "awaiting_approval"
SUCCEEDED = "succeeded"
FAILED = "failed"
BLOCKED = "blocked"
DRIFTED = "drifted"
BACKUP_FAILING = "backup.failing"
BACKUP_RECOVERED = "backup.recovered"

EVENT_TYPES = (
    COMMIT_DETECTED,
    VERSION_STARTED,
    AWAITING_APPROVAL,
    SUCCEEDED,
    FAILED,
    BLOCKED,
    DRIFTED,
    BACKUP_FAILING,
    BACKUP_RECOVERED,
)

MESSAGE_LIMIT = 500  # characters of an event's message (reasons quote templates and AWS)


@dataclass(frozen=True)
class Event:
    seq: int  # the record it comes from
    type: str  # one of EVENT_TYPES
    time: str  # the record's time (ISO 8601, UTC)
    message: str  # one line, printable, bounded: what a person reads
    repo: str | None = None
    stack: str | None = None
    commit: str | None = None
    version: int | None = None
    data: Mapping[str, Any] = field(default_factory=dict)  # the rest, by type

    def as_data(self) -> dict[str, Any]:
        """The event's fields as a receiver gets them (CloudEvents `data`)."""
        return {
            "repo": self.repo,
            "stack": self.stack,
            "commit": self.commit,
            "version": self.version,
            "message": self.message,
            **self.data,
        }


@dataclass
class EventFold:
    """What events need from records before them: each stack's open version (repo, version,
    commit), each repo's commit, each stack's last drift found."""

    attempts: dict[str, tuple[str, int, str]] = field(default_factory=dict)
    repos: dict[str, str] = field(default_factory=dict)  # stack -> repo
    commits: dict[str, str] = field(default_factory=dict)  # repo -> commit
    drift: dict[str, str] = field(default_factory=dict)  # stack -> the drift last reported

    @classmethod
    def primed(cls, state: JournalState) -> EventFold:
        """A fold that starts where `state` is (a receiver that starts mid-journal): the open
        versions (the records that end them say their repo, version and commit anyway)."""
        fold = cls()
        for view in state.stacks.values():
            fold.repos[view.stack] = view.repo
            if view.attempt is not None:
                a = view.attempt
                fold.attempts[view.stack] = (view.repo, a.version, a.commit)
        # Not the repos' commits: a `blocked` record says no commit, and the commit a repo is at
        # now may be newer than the one a receiver behind is on; such events name none.
        return fold

    def event(self, record: Record) -> Event | None:
        """The event `record` gives (None: none), folding it in."""
        handler = _HANDLERS.get(record.kind)
        return handler(self, record, record.data) if handler is not None else None

    def _attempt(self, d: Mapping[str, Any]) -> tuple[str | None, int | None, str | None]:
        stack = d["stack"]
        known = self.attempts.get(stack)
        repo = _text(d.get("repo")) or (known[0] if known else self.repos.get(stack))
        version = d.get("version") if isinstance(d.get("version"), int) else None
        version = version if version is not None else (known[1] if known else None)
        commit = _text(d.get("commit")) or (known[2] if known else None)
        return repo, version, commit


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _message(text: str) -> str:
    return bounded(text, MESSAGE_LIMIT)


def _commit(f: EventFold, r: Record, d: Mapping[str, Any]) -> Event:
    repo, commit = d["repo"], d["commit"]
    f.commits[repo] = commit
    forced = bool(d.get("forced"))
    previous = _text(d.get("previous"))
    changes = _list(d.get("changes"))
    what = "force-pushed to" if forced else "moved to"
    return Event(
        r.seq,
        COMMIT_DETECTED,
        r.time,
        _message(f"repo {repo} {what} commit {commit[:12]}"),
        repo=repo,
        commit=commit,
        data={"previous": previous, "forced": forced, "changed_files": len(changes)},
    )


def _version(f: EventFold, r: Record, d: Mapping[str, Any]) -> Event:
    stack, repo, version, commit = d["stack"], d["repo"], d["version"], d["commit"]
    f.attempts[stack] = (repo, version, commit)
    f.repos[stack] = repo
    action = str(d.get("action") or "update")
    rollback = d.get("rollback_of")
    why = f" (rolls back to version {rollback})" if isinstance(rollback, int) else ""
    return Event(
        r.seq,
        VERSION_STARTED,
        r.time,
        _message(f"{stack}: version {version} ({action}) started from {commit[:12]}{why}"),
        repo=repo,
        stack=stack,
        commit=commit,
        version=version,
        data={"action": action, "rollback_of": rollback if isinstance(rollback, int) else None},
    )


def _change_set(f: EventFold, r: Record, d: Mapping[str, Any]) -> Event | None:
    if not d.get("awaiting_approval"):
        return None
    stack = d["stack"]
    repo, version, commit = f._attempt(d)
    name = _text(d.get("name")) or d["arn"]
    changes = _list(d.get("changes"))
    return Event(
        r.seq,
        AWAITING_APPROVAL,
        r.time,
        _message(
            f"{stack}: version {version} waits for approval: change set {name} "
            f"({len(changes)} changes); run: syncd approve {stack}"
        ),
        repo=repo,
        stack=stack,
        commit=commit,
        version=version,
        data={"change_set": d["arn"], "changes": len(changes)},
    )


def _result(f: EventFold, r: Record, d: Mapping[str, Any]) -> Event | None:
    stack = d["stack"]
    repo, version, commit = f._attempt(d)
    f.attempts.pop(stack, None)
    result = d["result"]
    status = _text(d.get("stack_status"))
    extra = {"result": result, "stack_status": status}
    if result in (Result.SUCCEEDED, Result.NO_CHANGES):
        what = "applied" if result == Result.SUCCEEDED else "applied (no changes)"
        text = f"{stack}: version {version} {what}" + (f", {status}" if status else "")
        kind = SUCCEEDED
    elif result == Result.FAILED:
        reason = _text(d.get("message")) or "no reason given"
        text = f"{stack}: version {version} failed: {reason}"
        kind = FAILED
    else:
        return None
    return Event(
        r.seq,
        kind,
        r.time,
        _message(text),
        repo=repo,
        stack=stack,
        commit=commit,
        version=version,
        data=extra,
    )


def _blocked(f: EventFold, r: Record, d: Mapping[str, Any]) -> Event:
    stack = d["stack"]
    repo = _text(d.get("repo")) or f.repos.get(stack)
    commit = f.attempts[stack][2] if stack in f.attempts else f.commits.get(repo or "")
    return Event(
        r.seq,
        BLOCKED,
        r.time,
        _message(f"{stack}: blocked: {d['reason']}"),
        repo=repo,
        stack=stack,
        commit=commit,
        data={"reason": d["reason"], "stack_status": _text(d.get("stack_status"))},
    )


def _untrusted(f: EventFold, r: Record, d: Mapping[str, Any]) -> Event:
    repo, commit = d["repo"], d["commit"]
    return Event(
        r.seq,
        BLOCKED,
        r.time,
        _message(f"repo {repo}: commit {commit[:12]} is not applied: {d['reason']}"),
        repo=repo,
        commit=commit,
        data={"reason": d["reason"]},
    )


def _drifted(f: EventFold, r: Record, stack: str, summary: str, key: str) -> Event | None:
    """A drift event when `key` (what was found) is new for `stack`."""
    if f.drift.get(stack) == key:
        return None
    f.drift[stack] = key
    repo = f.repos.get(stack)
    return Event(
        r.seq,
        DRIFTED,
        r.time,
        _message(f"{stack}: drifted: {summary}"),
        repo=repo,
        stack=stack,
        commit=f.commits.get(repo or ""),
    )


def _observed(f: EventFold, r: Record, d: Mapping[str, Any]) -> Event | None:
    drift = _text(d.get("drift"))
    if drift is None:
        return None
    return _drifted(f, r, d["stack"], drift, drift)


def _drift_checked(f: EventFold, r: Record, d: Mapping[str, Any]) -> Event | None:
    stack = d["stack"]
    f.repos.setdefault(stack, d["repo"])
    if d["result"] == "in_sync":
        f.drift.pop(stack, None)
        return None
    if d["result"] != "drifted":
        return None  # a check that could not say changes nothing
    resources = [x for x in d.get("resources") or [] if isinstance(x, Mapping)]
    ids = sorted(str(x.get("logical_id")) for x in resources)
    more = d["more_resources"] if isinstance(d.get("more_resources"), int) else 0
    count = len(ids) + int(more)
    named = ", ".join(ids[:5]) + (f" and {count - 5} more" if count > 5 else "")
    return _drifted(f, r, stack, f"{count} resources differ: {named}", repr((ids, more)))


def _removed_or_deleted(f: EventFold, r: Record, d: Mapping[str, Any]) -> None:
    f.drift.pop(d["stack"], None)


def _backup_failing(f: EventFold, r: Record, d: Mapping[str, Any]) -> Event:
    error = str(d.get("error") or "")
    return Event(
        r.seq,
        BACKUP_FAILING,
        r.time,
        _message(f"the journal's backup is failing: {error}"),
        data={"since": _text(d.get("since"))},
    )


def _backup_ok(f: EventFold, r: Record, d: Mapping[str, Any]) -> Event:
    return Event(r.seq, BACKUP_RECOVERED, r.time, "the journal's backup works again")


_HANDLERS: dict[Kind, Any] = {
    Kind.COMMIT: _commit,
    Kind.VERSION: _version,
    Kind.CHANGE_SET: _change_set,
    Kind.RESULT: _result,
    Kind.BLOCKED: _blocked,
    Kind.UNTRUSTED: _untrusted,
    Kind.OBSERVED: _observed,
    Kind.DRIFT_CHECKED: _drift_checked,
    Kind.REMOVED: _removed_or_deleted,
    Kind.BACKUP_FAILING: _backup_failing,
    Kind.BACKUP_OK: _backup_ok,
}


# --- commit statuses -----------------------------------------------------------------------------

PENDING, SUCCESS, FAILURE, ERROR = "pending", "success", "failure", "error"


@dataclass(frozen=True)
class CommitStatus:
    """One status on one commit: `context` is what a later status of the same thing replaces
    (one per stack, or one for the whole commit)."""

    commit: str
    context: str
    state: str  # pending | success | failure | error
    description: str


def stack_status(event: Event, prefix: str) -> CommitStatus | None:
    """The status `event` gives its stack (context `<prefix>/<stack>`) or, for a repo's
    untrusted head, the commit (context `<prefix>`); None when it gives none."""
    if event.commit is None:
        return None
    state = _STATUS_OF.get(event.type)
    if state is None:
        return None
    if event.type == BLOCKED and event.stack is None:
        state = FAILURE  # the commit itself is refused
    context = f"{prefix}/{event.stack}" if event.stack else prefix
    return CommitStatus(event.commit, context, state, event.message)


_STATUS_OF = {
    VERSION_STARTED: PENDING,
    AWAITING_APPROVAL: PENDING,
    SUCCEEDED: SUCCESS,
    FAILED: FAILURE,
    BLOCKED: ERROR,
}


def commit_status(event: Event, prefix: str, history: Iterable[HistoryRow]) -> CommitStatus | None:
    """The one status of the commit `event` is about (context `<prefix>`), from every stack's
    latest version from that commit in `history`: failure when one failed, pending while one
    is applying or waits for approval, else success."""
    own = stack_status(event, prefix)
    if own is None:
        return None
    if event.stack is None:
        return own
    commit = own.commit
    latest: dict[str, HistoryRow] = {}
    for row in history:
        if row.commit == commit:
            latest[row.stack] = row
    failed = sorted(s for s, row in latest.items() if row.result is Result.FAILED)
    busy = sorted(
        s
        for s, row in latest.items()
        if row.result in (Result.IN_PROGRESS, Result.AWAITING_APPROVAL)
    )
    done = len(latest) - len(failed) - len(busy)
    if own.state == ERROR:
        return CommitStatus(commit, prefix, ERROR, event.message)
    if failed:
        return CommitStatus(
            commit, prefix, FAILURE, _message(f"failed: {', '.join(failed)}; {done} applied")
        )
    if busy:
        return CommitStatus(
            commit,
            prefix,
            PENDING,
            _message(f"applying: {', '.join(busy)}; {done} applied"),
        )
    return CommitStatus(commit, prefix, SUCCESS, _message(f"{done} stacks applied"))
