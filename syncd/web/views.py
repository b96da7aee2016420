"""What each page of the dashboard shows, as plain data for its template.

Pure: built from the journal's state (and what the shell read beside it: the backup's cursor,
the receivers' progress, commit messages), never from AWS or Git directly. Every value here may
come from a repo, from AWS or from the journal: the templates escape each one (Jinja2's
autoescape); nothing here marks anything safe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from syncd.core.journal_state import JournalState, StackState, status_rows
from syncd.core.show import Apply
from syncd.core.text import bounded

# The states `status` shows, in the order the overview counts them, and what each means.
STATES = (
    ("failed", "the last version failed"),
    ("blocked", "cannot be applied now"),
    ("awaiting_approval", "a change set waits for syncd approve"),
    ("applying", "a version is being applied"),
    ("drifted", "the stack differs from what syncd applied"),
    ("stale", "its repo's last pass failed"),
    ("suspended", "syncd leaves it alone until resumed"),
    ("pending", "not applied yet"),
    ("in_sync", "as Git says"),
)
STATE_NAMES = frozenset(name for name, _ in STATES)
# The results of a version (history), coloured as the states they lead to.
RESULTS = frozenset({"succeeded", "no_changes", "in_progress"})
MESSAGE_LIMIT = 300  # characters of a message in a table cell (the stack page has it whole)


@dataclass(frozen=True)
class Filters:
    repo: str = ""
    state: str = ""
    name: str = ""  # a part of the stack's key

    @classmethod
    def of(cls, query: Mapping[str, Sequence[str]]) -> Filters:
        def one(key: str) -> str:
            values = query.get(key) or [""]
            return values[0][:200]

        state = one("state")
        return cls(one("repo"), state if state in STATE_NAMES else "", one("name"))

    def keeps(self, row: Mapping[str, Any]) -> bool:
        return (
            (not self.repo or row["repo"] == self.repo)
            and (not self.state or row["state"] == self.state)
            and (not self.name or self.name.lower() in str(row["stack"]).lower())
        )


@dataclass
class Overview:
    rows: list[dict[str, Any]]
    total: int
    counts: list[tuple[str, str, int]]  # (state, what it means, stacks)
    repos: list[dict[str, Any]]
    backup: dict[str, Any] | None
    receivers: list[dict[str, Any]]
    filters: Filters
    repo_names: list[str] = field(default_factory=list)
    seq: int = 0


def overview(
    state: JournalState,
    repo_names: Iterable[str],
    filters: Filters,
    *,
    backup: dict[str, Any] | None = None,
    receivers: Sequence[dict[str, Any]] = (),
    last_pass: Mapping[str, float] | None = None,
) -> Overview:
    """The overview: every repo, every stack the filters keep, counts by state."""
    rows = status_rows(state)
    counted: dict[str, int] = {}
    for row in rows:
        counted[row["state"]] = counted.get(row["state"], 0) + 1
    kept = []
    for row in rows:
        if filters.keeps(row):
            kept.append({**row, "short_message": bounded(row["message"] or "", MESSAGE_LIMIT)})
    names = sorted(set(repo_names) | set(state.repos))
    repos = []
    for name in names:
        view = state.repos.get(name)
        repos.append(
            {
                "name": name,
                "commit": view.commit if view else None,
                "error": view.error if view else None,
                "pass_error": view.pass_error if view else None,
                "suspended": view.suspended.describe() if view and view.suspended else None,
                "untrusted": dict(view.untrusted) if view and view.untrusted else None,
                "last_pass": (last_pass or {}).get(name),
                "stacks": sum(1 for r in rows if r["repo"] == name),
            }
        )
    counts = [(name, meaning, counted.get(name, 0)) for name, meaning in STATES]
    return Overview(
        kept,
        len(rows),
        counts,
        repos,
        backup,
        list(receivers),
        filters,
        names,
        state.last_seq,
    )


@dataclass
class StackPage:
    stack: str
    status: dict[str, Any] | None  # its `status` row; None: syncd deleted it
    applies: list[dict[str, Any]]  # newest first
    version: dict[str, Any] | None  # the version shown in full (syncd.core.show.as_json)
    waiting: dict[str, Any] | None  # the apply that waits for approval, if any
    seq: int = 0
    older: int = 0  # versions not listed (the page lists the latest few hundred)


def stack_page(
    state: JournalState,
    stack: str,
    found: Sequence[Apply],
    version: dict[str, Any] | None,
    commits: Mapping[str, Mapping[str, str]],
) -> StackPage:
    """A stack: its row, every apply (newest first, each with its commit's message and author
    when the mirror has it), and one version in full."""
    row = next((r for r in status_rows(state) if r["stack"] == stack), None)
    applies = []
    for a in reversed(found):
        info = commits.get(a.commit, {})
        applies.append(
            {
                "version": a.version,
                "commit": a.commit,
                "subject": info.get("subject", ""),
                "author": info.get("author", ""),
                "action": a.action,
                "result": a.result.value,
                "started_at": a.started_at,
                "finished_at": a.finished_at,
                "change_set": a.change_set_name,
                "changes": len(a.changes),
                "message": bounded(a.message, MESSAGE_LIMIT),
                "rollback_of": a.rollback_of,
            }
        )
    waiting = next(
        (
            {"version": a.version, "approve": a.approve_command, "changes": len(a.changes)}
            for a in reversed(found)
            if a.awaiting_approval and a.approve_command
        ),
        None,
    )
    return StackPage(stack, row, applies, version, waiting, state.last_seq)


def state_class(state: str) -> str:
    """The CSS class of a state or a version's result (else `unknown`)."""
    return state if state in STATE_NAMES or state in RESULTS else "unknown"


def is_bad(state: str) -> bool:
    return state in (StackState.FAILED, StackState.BLOCKED, "stale")
