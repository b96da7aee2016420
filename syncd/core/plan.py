"""A plan: what merging a ref would do to each stack, and its three renderings.

Pure. `syncd.planner` fills a `Plan` from change sets it creates, describes and deletes; this
module decides nothing about AWS, only how a plan reads: `as_json` (docs/commands.md),
`as_text` for a terminal, and `as_markdown` for a pull-request comment: a summary table first,
the details of each stack folded, and the whole kept under a size limit by summarising the
details of the largest stacks, never by cutting through the table. Secrets never appear: NoEcho
parameters show as `****` on both sides of a change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from syncd.core.text import printable

MARKDOWN_LIMIT = 60_000
ACTIONS = ("create", "update", "delete", "none")


@dataclass(frozen=True)
class ResourceChange:
    action: str  # Add | Modify | Remove | Import | Dynamic
    logical_id: str
    type: str
    replacement: str | None  # True | False | Conditional | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "logical_id": self.logical_id,
            "type": self.type,
            "replacement": self.replacement,
        }


@dataclass(frozen=True)
class ValueChange:
    key: str
    old: str | None  # None: not there before
    new: str | None  # None: not there after


@dataclass(frozen=True)
class StackPlan:
    stack: str
    action: str  # create | update | delete | none
    changes: tuple[ResourceChange, ...] = ()
    parameters: tuple[ValueChange, ...] = ()
    tags: tuple[ValueChange, ...] = ()
    message: str = ""  # why nothing, why blocked, what is left alone
    error: bool = False  # the plan for this stack could not be made

    @property
    def changes_something(self) -> bool:
        return self.action != "none" and not self.error

    def as_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "action": self.action,
            "changes": [c.as_dict() for c in self.changes],
            "parameters": [_value(v) for v in self.parameters],
            "tags": [_value(v) for v in self.tags],
            "message": self.message,
            "error": self.error,
        }


@dataclass(frozen=True)
class Plan:
    repo: str
    ref: str
    commit: str
    stacks: tuple[StackPlan, ...] = field(default_factory=tuple)
    # Why the ref's head would not be applied under the repo's `verify` (None: it would be).
    untrusted: str | None = None

    @property
    def has_changes(self) -> bool:
        return any(s.changes_something for s in self.stacks)

    @property
    def has_errors(self) -> bool:
        return any(s.error for s in self.stacks)

    def as_json(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "ref": self.ref,
            "commit": self.commit,
            "untrusted": self.untrusted,
            "stacks": [s.as_dict() for s in self.stacks],
        }


def value_changes(
    old: Mapping[str, str], new: Mapping[str, str], secret: frozenset[str] = frozenset()
) -> tuple[ValueChange, ...]:
    """The keys whose value differs; `secret` keys show `****` (and are compared as given)."""

    def shown(key: str, value: str | None) -> str | None:
        return "****" if value is not None and key in secret else value

    out = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before != after:
            out.append(ValueChange(key, shown(key, before), shown(key, after)))
    return tuple(out)


def _value(v: ValueChange) -> dict[str, Any]:
    return {"key": v.key, "old": v.old, "new": v.new}


# --- text ----------------------------------------------------------------------------------


def as_text(plan: Plan) -> str:
    """The plan for a terminal: one line per fact, every value from the repo or AWS printable."""
    lines = [f"plan for {plan.repo} at {plan.ref} ({plan.commit[:12]})"]
    if plan.untrusted:
        lines.append(f"  ! not trusted: {plan.untrusted}; syncd will not apply this commit")
    for s in plan.stacks:
        head = f"  {_sign(s)} {s.stack}: {s.action}"
        if s.changes:
            head += f" ({_count(s.changes)})"
        if s.message:
            head += f" - {s.message}"
        lines.append(head)
        for c in s.changes:
            lines.append(f"      {c.action:<7} {c.logical_id} ({c.type}){_replacement(c)}")
        for p in s.parameters:
            lines.append(f"      parameter {p.key}: {_shown(p.old)} -> {_shown(p.new)}")
        for t in s.tags:
            lines.append(f"      tag {t.key}: {_shown(t.old)} -> {_shown(t.new)}")
    lines.append(_summary(plan))
    return "\n".join(printable(line) for line in lines)


# --- markdown ------------------------------------------------------------------------------


def as_markdown(plan: Plan, limit: int = MARKDOWN_LIMIT) -> str:
    """A pull-request comment under `limit` characters: the table always whole; details
    summarised, largest first, until the comment fits."""
    head = [
        f"### syncd plan: `{plan.repo}` at `{_code(plan.ref)}` ({plan.commit[:12]})",
        "",
        _summary(plan),
        "",
        *(
            [f"**Not trusted:** {_cell(plan.untrusted)}; syncd will not apply this commit.", ""]
            if plan.untrusted
            else []
        ),
        "| stack | action | resources | note |",
        "|---|---|---|---|",
    ]
    for s in plan.stacks:
        note = _cell(s.message) if s.message else ""
        counts = _count(s.changes) if s.changes else ""
        head.append(f"| `{_code(s.stack)}` | {_sign(s)} {s.action} | {counts} | {note} |")
    table = "\n".join(head) + "\n"
    details = {s.stack: _details(s) for s in plan.stacks if s.changes or s.parameters or s.tags}
    summarised: set[str] = set()
    while True:
        body = "".join(
            _summary_details(s) if s.stack in summarised else details[s.stack]
            for s in plan.stacks
            if s.stack in details
        )
        text = table + ("\n" + body if body else "")
        if len(text) <= limit or len(summarised) == len(details):
            break
        largest = max(
            (name for name in details if name not in summarised), key=lambda n: len(details[n])
        )
        summarised.add(largest)
    if len(text) > limit:  # even the table alone is too long: say so, keep it whole anyway
        note = f"\n_{len(plan.stacks)} stacks: details left out to keep this comment short._\n"
        return table + note
    if summarised:
        text += (
            f"\n_Details of {len(summarised)} stack(s) summarised to keep this comment under "
            f"{limit:,} characters; `syncd plan --format text` shows them all._\n"
        )
    return text


def _details(s: StackPlan) -> str:
    rows = [f"<details><summary><code>{_cell(s.stack)}</code>: {s.action}</summary>", ""]
    if s.changes:
        rows += ["| action | logical id | type | replacement |", "|---|---|---|---|"]
        for c in s.changes:
            rows.append(
                f"| {_cell(c.action)} | `{_code(c.logical_id)}` | `{_code(c.type)}` "
                f"| {_cell(c.replacement or '')} |"
            )
        rows.append("")
    if s.parameters or s.tags:
        rows += ["| | key | before | after |", "|---|---|---|---|"]
        for kind, values in (("parameter", s.parameters), ("tag", s.tags)):
            for v in values:
                rows.append(
                    f"| {kind} | `{_code(v.key)}` | {_cell(_shown(v.old))} "
                    f"| {_cell(_shown(v.new))} |"
                )
        rows.append("")
    rows += ["</details>", ""]
    return "\n".join(rows) + "\n"


def _summary_details(s: StackPlan) -> str:
    kinds: dict[str, int] = {}
    for c in s.changes:
        kinds[c.action] = kinds.get(c.action, 0) + 1
    parts = [f"{n} {a.lower()}" for a, n in sorted(kinds.items())]
    if s.parameters:
        parts.append(f"{len(s.parameters)} parameter(s)")
    if s.tags:
        parts.append(f"{len(s.tags)} tag(s)")
    replaced = sum(1 for c in s.changes if c.replacement == "True")
    if replaced:
        parts.append(f"**{replaced} replacement(s)**")
    return f"- `{s.stack}` ({s.action}): {', '.join(parts)} (details left out)\n"


def _summary(plan: Plan) -> str:
    counts = {a: 0 for a in ACTIONS}
    for s in plan.stacks:
        if not s.error:  # each stack counted once: one that could not be planned only as such
            counts[s.action] = counts.get(s.action, 0) + 1
    errors = sum(1 for s in plan.stacks if s.error)
    text = (
        f"{counts['create']} to create, {counts['update']} to update, "
        f"{counts['delete']} to delete, {counts['none']} unchanged"
    )
    return text + (f", {errors} could not be planned" if errors else "")


def _count(changes: tuple[ResourceChange, ...]) -> str:
    replaced = sum(1 for c in changes if c.replacement == "True")
    text = f"{len(changes)} resource(s)"
    return text + (f", {replaced} replaced" if replaced else "")


def _sign(s: StackPlan) -> str:
    if s.error:
        return "!"
    return {"create": "+", "update": "~", "delete": "-"}.get(s.action, " ")


def _replacement(c: ResourceChange) -> str:
    return {"True": " REPLACED", "Conditional": " may be replaced"}.get(c.replacement or "", "")


def _shown(value: str | None) -> str:
    return "(none)" if value is None else value


def _cell(text: str) -> str:
    """Text safe in a markdown table cell of a PR comment: no column breaks, no HTML."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return printable(text.replace("|", "\\|").replace("`", "'").replace("\n", " "))


def _code(text: str) -> str:
    """Text safe inside a `code span` in a table cell: no closing backtick, no column break."""
    return printable(text.replace("`", "'").replace("|", "\\|"))
