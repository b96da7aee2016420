"""What one version of a stack did (`syncd show`): its applies folded from the journal, the
version asked for beside the one deployed before it, and the view's two renderings.

Pure. The shell (`syncd.cli.show`) reads the stack's records, the two templates from the repo's
Git mirror and the stack's events from CloudFormation; this module folds the records into the
stack's applies (`applies`), picks the version asked for (`choose`) and the one it replaced
(`replaced`), compares them (`value_rows`, `template_diff`), and says how the view reads:
`as_json` (docs/commands.md) and `as_text` for a terminal.

Hazards: every name and value here came from a repo, from AWS or from a journal that anyone
with the state_dir could have written. Text output escapes each one (`printable`) and bounds
the long ones; the template diff stops at DIFF_LIMIT lines, each cut at LINE_LIMIT characters.
Secrets never appear: the journal keeps NoEcho values as `****` only, and a parameter masked in
either version shows masked in both (a value made NoEcho later is not shown from before).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from syncd.core.journal_state import Kind, Record, Result
from syncd.core.text import PATH_LIMIT, bounded, printable

DIFF_LIMIT = 400  # lines of the template diff shown; the rest are counted
LINE_LIMIT = 500  # characters of one diff line
COMPARE_LIMIT = 8000  # lines that differ that are compared line by line (see template_diff)
ROW_LIMIT = 1000  # resource changes or events listed; the rest are counted
CELL_LIMIT = 200  # characters of one value in a text table (JSON carries it whole)
MASK = "****"

# What a parameter or tag did from the version before to this one.
ADDED, REMOVED, CHANGED, UNCHANGED = "added", "removed", "changed", "unchanged"
NOT_COMPARED = "not_compared"  # NoEcho: the journal keeps no value to compare


@dataclass(frozen=True)
class Change:
    """One resource change of a change set, as its CHANGE_SET record keeps it."""

    action: str  # Add | Modify | Remove | Import | Dynamic
    logical_id: str
    type: str
    replacement: str | None  # True | False | Conditional; None: not said
    scope: tuple[str, ...] = ()  # Properties, Metadata, Tags, ... (older records: none)

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "logical_id": self.logical_id,
            "type": self.type,
            "replacement": self.replacement,
            "scope": list(self.scope),
        }


@dataclass
class Apply:
    """One apply of one version of a stack, from its VERSION record to its RESULT (a retry of
    a version, or the same desired state applied again, is an apply of its own)."""

    stack: str
    repo: str
    version: int
    commit: str
    action: str  # create | update | delete
    started_at: str
    deployment_file: str = ""
    template_file: str = ""
    parameters: dict[str, str] = field(default_factory=dict)  # NoEcho values are ****
    tags: dict[str, str] = field(default_factory=dict)
    rollback_of: int | None = None
    change_set_arn: str | None = None
    change_set_name: str | None = None
    changes: tuple[Change, ...] = ()
    awaiting_approval: bool = False
    approved_by: str | None = None
    executing_at: str | None = None
    finished_at: str | None = None
    result: Result = Result.IN_PROGRESS
    stack_status: str | None = None
    message: str = ""
    stack_id: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.result in (Result.SUCCEEDED, Result.NO_CHANGES)

    @property
    def approve_command(self) -> str | None:
        """What to run to execute the change set this apply waits for, or None."""
        if not self.awaiting_approval or not self.change_set_arn:
            return None
        # `syncd approve` takes the ARN or the name in it (…:changeSet/NAME/ID).
        parts = self.change_set_arn.split("/")
        name = parts[-2] if len(parts) >= 3 and parts[-2] else self.change_set_arn
        return f"syncd approve {self.stack} --change-set {name}"


def applies(records: Iterable[Record], stack: str) -> list[Apply]:
    """`stack`'s applies, oldest first, as the journal's records tell them. An apply that a
    later VERSION record cut short without a RESULT stays in progress (as in `history`)."""
    out: list[Apply] = []
    open_: Apply | None = None
    for record in records:
        d = record.data
        if d.get("stack") != stack:
            continue
        if record.kind is Kind.VERSION:
            rollback = d.get("rollback_of")
            open_ = Apply(
                stack=stack,
                repo=_str(d.get("repo")),
                version=int(d["version"]),
                commit=_str(d.get("commit")),
                action=_str(d.get("action")),
                started_at=record.time,
                deployment_file=_str(d.get("deployment_file")),
                template_file=_str(d.get("template_file")),
                parameters=_strings(d.get("parameters")),
                tags=_strings(d.get("tags")),
                rollback_of=rollback if isinstance(rollback, int) else None,
            )
            out.append(open_)
        elif open_ is None:
            continue  # a step of an apply from before the records read (none: they all are)
        elif record.kind is Kind.CHANGE_SET:
            open_.change_set_arn = _str(d.get("arn"))
            open_.change_set_name = _str(d.get("name")) or None
            open_.changes = _changes(d.get("changes"))
            open_.awaiting_approval = bool(d.get("awaiting_approval"))
            if open_.awaiting_approval:
                open_.result = Result.AWAITING_APPROVAL
        elif record.kind is Kind.APPROVED:
            open_.awaiting_approval = False
            open_.approved_by = _str(d.get("by")) or "someone"
            open_.result = Result.IN_PROGRESS
        elif record.kind is Kind.EXECUTING:
            open_.executing_at = record.time
            open_.result = Result.IN_PROGRESS
        elif record.kind is Kind.RESULT:
            open_.result = Result(d["result"])
            open_.finished_at = record.time
            open_.stack_status = _str(d.get("stack_status")) or None
            open_.message = _str(d.get("message"))
            open_.stack_id = _str(d.get("stack_id")) or None
            open_.awaiting_approval = False
            open_ = None
    return out


def choose(found: Sequence[Apply], version: int | None) -> Apply | None:
    """The apply `show` shows: of `version` (its latest apply: version numbers start again
    after a delete, and a retry repeats one), or by default the one waiting for approval,
    else the latest. None: no such version."""
    if version is None:
        waiting = [a for a in found if a.awaiting_approval]
        return waiting[-1] if waiting else (found[-1] if found else None)
    mine = [a for a in found if a.version == version]
    return mine[-1] if mine else None


def replaced(found: Sequence[Apply], chosen: Apply) -> Apply | None:
    """What was deployed when `chosen` started: the latest apply of another version before it
    that succeeded, unless a delete that succeeded came after it (then nothing was)."""
    deployed: Apply | None = None
    for a in found:
        if a is chosen:
            return deployed
        if not a.succeeded or a.version == chosen.version:
            continue
        deployed = None if a.action == "delete" else a
    return deployed


def versions(found: Iterable[Apply]) -> list[int]:
    return sorted({a.version for a in found})


# --- parameters and tags --------------------------------------------------------------------


@dataclass(frozen=True)
class ValueRow:
    key: str
    before: str | None  # None: not there before
    after: str | None  # None: not there after
    change: str  # added | removed | changed | unchanged | not_compared

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "before": self.before, "after": self.after, "change": self.change}


def value_rows(before: Mapping[str, str], after: Mapping[str, str]) -> tuple[ValueRow, ...]:
    """Every key of either side, sorted, with what happened to it. A value masked (NoEcho) on
    either side shows masked on both, and is not compared: the journal keeps no value."""
    rows = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        masked = MASK in (old, new)
        if masked:
            old = None if old is None else MASK
            new = None if new is None else MASK
        if old is None:
            change = ADDED
        elif new is None:
            change = REMOVED
        elif masked:
            change = NOT_COMPARED
        else:
            change = UNCHANGED if old == new else CHANGED
        rows.append(ValueRow(key, old, new, change))
    return tuple(rows)


# --- the template ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateAt:
    """A version's template file, at its commit."""

    version: int
    commit: str
    file: str

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "commit": self.commit, "file": self.file}


@dataclass(frozen=True)
class TemplateDiff:
    before: TemplateAt | None  # None: no version before (a create)
    after: TemplateAt | None  # None: this version deletes the stack
    lines: tuple[str, ...] = ()
    more_lines: int = 0  # lines of the diff left out past DIFF_LIMIT
    note: str | None = None  # why there is no diff (a commit gone from the mirror, ...)

    def as_dict(self) -> dict[str, Any]:
        return {
            "before": self.before.as_dict() if self.before else None,
            "after": self.after.as_dict() if self.after else None,
            "diff": list(self.lines),
            "more_lines": self.more_lines,
            "note": self.note,
        }


def template_diff(
    before: TemplateAt | None,
    old: str | None,
    after: TemplateAt | None,
    new: str | None,
    limit: int = DIFF_LIMIT,
) -> TemplateDiff:
    """The unified diff from `old` (None: nothing) to `new`, its first `limit` lines each cut at
    LINE_LIMIT characters, and how many more lines there are.

    difflib's cost grows with the square of the lines that differ when they share many lines
    (a rename through a template of thousands of resources took 14 s at 24,000 lines): past
    COMPARE_LIMIT lines between the common start and end, the middle is shown as one block
    removed and one added, and the note says so."""
    a, b = (old or "").splitlines(), (new or "").splitlines()
    names = (
        f"a/{before.file}" if before else "/dev/null",
        f"b/{after.file}" if after else "/dev/null",
    )
    head = 0
    while head < min(len(a), len(b)) and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < min(len(a), len(b)) - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    middle = max(len(a), len(b)) - head - tail
    note = None
    if middle > COMPARE_LIMIT:
        diff: Iterable[str] = _one_block(a, b, head, tail, *names)
        note = (
            f"the templates differ over {middle:,} lines, more than are compared line by line "
            f"({COMPARE_LIMIT:,}): the lines between are shown removed, then added"
        )
    else:
        diff = difflib.unified_diff(a, b, *names, lineterm="")
    lines: list[str] = []
    more = 0
    for line in diff:
        if len(lines) < limit:
            lines.append(_cut(line, LINE_LIMIT))
        else:
            more += 1
    if not lines:
        note = "the template is the same in both versions"
    return TemplateDiff(before, after, tuple(lines), more, note)


def _one_block(
    a: list[str], b: list[str], head: int, tail: int, old_name: str, new_name: str
) -> Iterable[str]:
    """A unified diff of one hunk: the lines between the common start and end, all removed
    then all added, with three lines of context each side."""
    start = max(0, head - 3)
    old_end, new_end = len(a) - tail, len(b) - tail
    after = min(tail, 3)
    old_n, new_n = old_end + after - start, new_end + after - start
    yield f"--- {old_name}"
    yield f"+++ {new_name}"
    yield f"@@ -{start + 1 if old_n else start},{old_n} +{start + 1 if new_n else start},{new_n} @@"
    yield from (" " + line for line in a[start:head])
    yield from ("-" + line for line in a[head:old_end])
    yield from ("+" + line for line in b[head:new_end])
    yield from (" " + line for line in a[old_end : old_end + after])


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}…[+{len(text) - limit} characters]"


# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    timestamp: str  # ISO 8601, UTC
    logical_id: str
    type: str
    status: str
    reason: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "timestamp": self.timestamp,
            "logical_id": self.logical_id,
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Events:
    since: str | None  # the window read (see `event_window`); None: nothing ran
    until: str | None  # None: up to now (the apply has not ended), or nothing ran
    items: tuple[Event, ...] = ()
    note: str | None = None  # why there are none, or why only some

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "events": [e.as_dict() for e in self.items],
            "note": self.note,
        }


# How far CloudFormation's clock may be from this host's: the window of an apply's events is
# widened by it each way, but never over the apply before it or the one after.
CLOCK_SKEW = timedelta(seconds=1)


def event_window(found: Sequence[Apply], chosen: Apply) -> tuple[datetime, datetime | None]:
    """When `chosen`'s events happened: from its EXECUTING record to its RESULT (None: not
    ended, now), widened by CLOCK_SKEW, and cut at the end of the apply before it and the start
    of the one after. Raises ValueError for a time that is not ISO 8601."""
    assert chosen.executing_at is not None
    i = next(i for i, a in enumerate(found) if a is chosen)
    since = when(chosen.executing_at) - CLOCK_SKEW
    until = when(chosen.finished_at) + CLOCK_SKEW if chosen.finished_at else None
    if i > 0:
        before = found[i - 1]
        since = max(since, when(before.finished_at or before.started_at))
    if i + 1 < len(found):
        start = when(found[i + 1].started_at)
        until = min(until, start) if until else start
    return since, until


def when(iso: str) -> datetime:
    """A record's time (ISO 8601, UTC) as an aware datetime."""
    t = datetime.fromisoformat(iso)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def why_no_events(chosen: Apply) -> str | None:
    """Why `chosen` has no events to read (nothing of it ran), or None."""
    if chosen.executing_at is not None:
        return None
    if chosen.awaiting_approval:
        return "nothing ran yet: the change set waits for approval"
    if chosen.result is Result.IN_PROGRESS:
        return "nothing ran yet: the change set is not executed"
    return f"nothing ran: version {chosen.version} was not executed ({chosen.result.value})"


# --- the view -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShowView:
    apply: Apply
    before: Apply | None  # what was deployed when it started (see `replaced`)
    template: TemplateDiff
    events: Events
    # The stack's drift checks (journal_state.drift_row), shown with its deployed version only:
    # they are about the stack as it is now.
    drift: Mapping[str, Any] | None = None

    @property
    def parameters(self) -> tuple[ValueRow, ...]:
        return value_rows(self.before.parameters if self.before else {}, self.apply.parameters)

    @property
    def tags(self) -> tuple[ValueRow, ...]:
        return value_rows(self.before.tags if self.before else {}, self.apply.tags)


def as_json(view: ShowView) -> dict[str, Any]:
    a, b = view.apply, view.before
    return {
        "stack": a.stack,
        "repo": a.repo,
        "version": a.version,
        "commit": a.commit,
        "action": a.action,
        "deployment_file": a.deployment_file,
        "template_file": a.template_file,
        "result": a.result.value,
        "stack_status": a.stack_status,
        "message": a.message,
        "started_at": a.started_at,
        "executing_at": a.executing_at,
        "finished_at": a.finished_at,
        "rollback_of": a.rollback_of,
        "change_set": (
            {"name": a.change_set_name, "arn": a.change_set_arn} if a.change_set_arn else None
        ),
        "awaiting_approval": a.awaiting_approval,
        "approve": a.approve_command,
        "approved_by": a.approved_by,
        "changes": [c.as_dict() for c in a.changes],
        "before": {"version": b.version, "commit": b.commit} if b else None,
        "parameters": [r.as_dict() for r in view.parameters],
        "tags": [r.as_dict() for r in view.tags],
        "template": view.template.as_dict(),
        "events": view.events.as_dict(),
        "drift": view.drift,
    }


def as_text(view: ShowView) -> str:
    """The view for a terminal: every value from a repo, AWS or the journal printable."""
    a, b = view.apply, view.before
    head = [
        ("action", a.action),
        ("commit", a.commit),
        ("deployment file", a.deployment_file or "-"),
        ("template file", a.template_file or "-"),
        ("result", a.result.value + (f" ({a.stack_status})" if a.stack_status else "")),
        ("started", a.started_at),
        ("executed", a.executing_at or "-"),
        ("finished", a.finished_at or "-"),
    ]
    if a.rollback_of is not None:
        head.append(("rollback of", f"version {a.rollback_of}"))
    if a.change_set_arn:
        head += [("change set", a.change_set_name or "-"), ("", a.change_set_arn)]
    if a.approved_by:
        head.append(("approved by", a.approved_by))
    if a.message:
        head.append(("message", bounded(a.message)))
    lines = [printable(f"{a.stack} version {a.version} (repo {a.repo})")]
    lines += [f"  {k:<16} {bounded(v)}".rstrip() for k, v in head]
    if a.approve_command:
        lines.append(printable(f"  awaiting approval: run `{a.approve_command}`"))

    lines += ["", f"resource changes ({len(a.changes)})"]
    rows = [
        [c.action, c.logical_id, c.type, c.replacement, ", ".join(c.scope) or None]
        for c in a.changes
    ]
    lines += _table(["action", "logical id", "type", "replacement", "scope"], rows) or [
        "  none recorded" if a.change_set_arn else "  no change set"
    ]

    compared = f"version {b.version} -> version {a.version}" if b else "nothing deployed before"
    for name, values in (("parameters", view.parameters), ("tags", view.tags)):
        lines += ["", f"{name} ({compared})"]
        table = [
            [r.key, _shown(r.before), _shown(r.after), _change_words(r.change)] for r in values
        ]
        lines += _table(["key", "before", "after", "change"], table) or ["  none"]

    t = view.template
    lines += ["", f"template diff ({_template_span(t)})"]
    if t.note:
        lines.append(printable(f"  {t.note}"))
    lines += [printable(line) for line in t.lines]
    if t.more_lines:
        lines.append(f"... {t.more_lines} more lines")

    e = view.events
    span = f" ({len(e.items)}, from {e.since} to {e.until or 'now'})" if e.since else ""
    lines += ["", printable(f"events{span}")]
    if e.note:
        lines.append(printable(f"  {e.note}"))
    lines += _table(
        ["time", "logical id", "type", "status", "reason"],
        [[ev.timestamp, ev.logical_id, ev.type, ev.status, ev.reason] for ev in e.items],
    )
    if view.drift is not None:
        lines += ["", *_drift_lines(view.drift)]
    return "\n".join(lines)


def _drift_lines(d: Mapping[str, Any]) -> list[str]:
    """The drift section: the last check, and the resources the drift found differ in (their
    property paths and how; never a value: syncd keeps none)."""
    found = f", drift found at {d.get('found_at')}" if d.get("found_at") else ""
    lines = [printable(f"drift (last checked at {d.get('checked_at')}: {d.get('result')}{found})")]
    if d.get("reason"):
        lines.append(printable(f"  the last check could not say: {d['reason']}"))
    accepted = d.get("accepted")
    if isinstance(accepted, Mapping):
        why = f": {accepted.get('reason')}" if accepted.get("reason") else ""
        lines.append(printable(f"  accepted by {accepted.get('by')} at {accepted.get('at')}{why}"))
    rows = []
    for r in d.get("resources") or []:
        paths = [f"{p.get('path')} ({p.get('difference')})" for p in r.get("properties") or []]
        more = int(r.get("more_properties") or 0)
        rows.append(
            [
                r.get("logical_id"),
                r.get("type"),
                r.get("status"),
                "; ".join(paths) + (f"; and {more} more" if more else ""),
            ]
        )
    lines += _table(["logical id", "type", "status", "properties"], rows)
    if d.get("more_resources"):
        lines.append(f"... and {d['more_resources']} more resource(s)")
    return lines


def _template_span(t: TemplateDiff) -> str:
    def at(x: TemplateAt | None, missing: str) -> str:
        return (
            f"version {x.version} at {x.commit[:12]}: {bounded(x.file, PATH_LIMIT)}"
            if x
            else missing
        )

    return printable(f"{at(t.before, 'nothing before')} -> {at(t.after, 'deleted')}")


def _change_words(change: str) -> str:
    return "not compared (NoEcho)" if change == NOT_COMPARED else change


def _shown(value: str | None) -> str:
    return "(none)" if value is None else value


def _table(headers: Sequence[str], rows: Sequence[Sequence[str | None]]) -> list[str]:
    """Aligned rows under upper-case headers, each cell printable and bounded; at most
    ROW_LIMIT rows, the rest counted. No rows: no table."""
    if not rows:
        return []
    cells = [[bounded(v, CELL_LIMIT) if v is not None else "-" for v in r] for r in rows]
    shown = cells[:ROW_LIMIT]
    widths = [max([len(h), *(len(r[i]) for r in shown)]) for i, h in enumerate(headers)]
    out = ["  " + "  ".join(h.upper().ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    out += ["  " + "  ".join(v.ljust(widths[i]) for i, v in enumerate(r)).rstrip() for r in shown]
    if len(cells) > ROW_LIMIT:
        out.append(f"  ... {len(cells) - ROW_LIMIT} more")
    return out


# --- reading records that anyone with the state_dir could have written ---------------------


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v if isinstance(v, str) else str(v) for k, v in value.items()}


def _changes(value: Any) -> tuple[Change, ...]:
    if not isinstance(value, list):
        return ()
    out = []
    for c in value:
        if not isinstance(c, Mapping):
            continue
        scope = c.get("scope")
        out.append(
            Change(
                action=_str(c.get("action")),
                logical_id=_str(c.get("logical_id")),
                type=_str(c.get("type")),
                replacement=_str(c.get("replacement")) or None,
                scope=tuple(s for s in scope if isinstance(s, str))
                if isinstance(scope, list)
                else (),
            )
        )
    return tuple(out)
