"""Command output: aligned text tables for terminals, JSON for machines (stdout only)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from syncd.core.text import printable


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    lines = ["  ".join(h.upper().ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    for row in cells:
        lines.append("  ".join(v.ljust(widths[i]) for i, v in enumerate(row)).rstrip())
    return "\n".join(lines)


def as_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return printable(str(value))  # a name or reason from a repo cannot forge rows or escapes


def short_sha(sha: str | None) -> str | None:
    return sha[:12] if sha else None


def status_table(rows: list[dict[str, Any]]) -> str:
    return table(
        ["stack", "repo", "version", "state", "stack status", "commit", "last sync", "message"],
        [
            [
                r["stack"],
                r["repo"],
                r["version"],
                r["state"],
                r["stack_status"],
                short_sha(r["commit"]),
                r["last_sync"],
                r["message"],
            ]
            for r in rows
        ],
    )


def history_table(rows: list[dict[str, Any]]) -> str:
    return table(
        ["stack", "version", "action", "result", "commit", "started", "finished", "message"],
        [
            [
                r["stack"],
                r["version"],
                r["action"]
                + (f" (rollback to v{r['rollback_of']})" if r.get("rollback_of") else ""),
                r["result"],
                short_sha(r["commit"]),
                r["started_at"],
                r["finished_at"],
                r["message"],
            ]
            for r in rows
        ],
    )
