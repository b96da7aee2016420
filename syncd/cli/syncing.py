"""`syncd sync`: one pass of every repo (or some stacks) now, then a table of outcomes."""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from syncd.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    config_of,
    deliver_requests,
)
from syncd.errors import UsageError


def cmd_sync(args: argparse.Namespace) -> int:
    from syncd.app import open_app
    from syncd.reconcile import PassReport, observe_world

    config = config_of(args)
    only = set(args.stack) if args.stack else None
    app = open_app(config)
    try:
        deliver_requests(app)  # a suspension asked for while no daemon ran counts now
        observe_world(app.world, app.journal)
        # One thread per repo, as in the daemon; an unexpected error in any is re-raised here.
        with ThreadPoolExecutor(max_workers=len(app.syncs)) as pool:
            futures = [pool.submit(s.run_pass, only) for s in app.syncs.values()]
            reports: list[PassReport] = [f.result() for f in futures]
        rows = _sync_rows(reports, app)
        if app.mirror is not None and not app.mirror.flush():
            print(
                f"syncd: warning: backup not up to date: {app.mirror.cursor.error}", file=sys.stderr
            )
    finally:
        app.close()
    if only:
        unknown = only - {r["stack"] for r in rows}
        if unknown:
            raise UsageError(f"no such stack: {', '.join(sorted(unknown))}")
    from syncd import render

    if args.format == "json":
        print(render.as_json(rows))
    else:
        print(
            render.table(
                ["stack", "repo", "outcome", "message"],
                [[r["stack"], r["repo"], r["outcome"], r["message"]] for r in rows],
            )
        )
    return EXIT_OK if all(r.ok for r in reports) else EXIT_FAILED


def _sync_rows(reports: list[Any], app: Any) -> list[dict[str, Any]]:
    from syncd.core.journal_state import suspension

    rows = []
    for report in sorted(reports, key=lambda r: r.repo):
        if report.source_error:
            rows.append(
                {
                    "stack": None,
                    "repo": report.repo,
                    "outcome": "source_error",
                    "message": report.source_error,
                }
            )
        for name, reason in sorted(report.invalid.items()):
            rows.append(
                {"stack": name, "repo": report.repo, "outcome": "invalid", "message": reason}
            )
        for name, outcome in sorted(report.outcomes.items()):
            view = app.journal.state.stacks.get(name)
            held = suspension(app.journal.state, name, report.repo)
            message = held.describe() if held and outcome.value == "suspended" else None
            rows.append(
                {
                    "stack": name,
                    "repo": report.repo,
                    "outcome": outcome.value,
                    "version": view.version if view else None,
                    "message": message or (view.message if view else ""),
                }
            )
    return rows
