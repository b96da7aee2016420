"""`syncd sync`: one pass of every repo (or some stacks) now, then a table of outcomes."""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from syncd.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    approver,
    config_of,
    deliver_requests,
)
from syncd.core.text import printable
from syncd.errors import UsageError


def cmd_sync(args: argparse.Namespace) -> int:
    """One pass here, under the state_dir lock; or, while a daemon holds it, asked of the
    daemon (syncd.asks), with the same output and exit code."""
    from syncd.journal.store import lock_holder

    config = config_of(args)
    names = [r.name for r in config.repos]
    if args.repo is not None and args.repo not in names:
        raise UsageError(f"no repo {args.repo!r} in the config; there are: {', '.join(names)}")
    repos = [args.repo] if args.repo else names
    only = set(args.stack) if args.stack else None
    holder = lock_holder(config.state_dir)
    if holder.held:
        reports, state, errors = _ask_daemon(args, config, repos, holder.pid)
    else:
        (reports, state), errors = _sync_here(config, repos, only), []
    rows = _sync_rows(reports, state)
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
    for error in errors:
        print(printable(f"syncd: {error}"), file=sys.stderr)
    return EXIT_OK if all(r.ok for r in reports) and not errors else EXIT_FAILED


def _sync_here(config: Any, repos: list[str], only: set[str] | None) -> tuple[list[Any], Any]:
    from syncd.app import open_app
    from syncd.reconcile import PassReport, observe_world

    app = open_app(config)
    try:
        deliver_requests(app)  # a suspension asked for while no daemon ran counts now
        observe_world(app.world, app.journal)
        # One thread per repo, as in the daemon; an unexpected error in any is re-raised here.
        syncs = [app.syncs[name] for name in repos]
        with ThreadPoolExecutor(max_workers=len(syncs)) as pool:
            futures = [pool.submit(s.run_pass, only) for s in syncs]
            reports: list[PassReport] = [f.result() for f in futures]
        if app.mirror is not None and not app.mirror.flush():
            print(
                f"syncd: warning: backup not up to date: {app.mirror.cursor.error}", file=sys.stderr
            )
    finally:
        app.close()
    return reports, app.journal.state


def _ask_daemon(
    args: argparse.Namespace, config: Any, repos: list[str], pid: int | None
) -> tuple[list[Any], Any, list[str]]:
    """Ask the running daemon for the pass of each repo and wait for its answers: the reports
    it journaled, the journal's state after them, and the errors it answered with."""
    from syncd.asks import Ask, ask_daemon, deadline_in
    from syncd.journal.store import Journal

    journal = Journal.open(config.state_dir, writer=False, warn=lambda m: None)
    state = journal.state
    journal.close()
    stacks = tuple(dict.fromkeys(args.stack or ()))
    if stacks and not args.repo and all(s in state.stacks for s in stacks):
        repos = sorted({state.stacks[s].repo for s in stacks} & set(repos)) or repos  # theirs
    deadline = deadline_in(args.wait)
    asks = [Ask("sync", repo, stacks, approver(), deadline) for repo in repos]
    who = f" (pid {pid})" if pid is not None else ""
    print(f"syncd: asking the running daemon{who} for the pass", file=sys.stderr)
    answered = ask_daemon(config.state_dir, asks, pid, state.last_seq)
    journal = Journal.open(config.state_dir, writer=False, warn=lambda m: None)
    state = journal.state
    journal.close()
    errors = [
        f"repo {a.ask.repo}: {a.record['error']}"
        for a in answered
        if a.record and a.record["error"]
    ]
    return [a.report() for a in answered], state, errors


def _sync_rows(reports: list[Any], state: Any) -> list[dict[str, Any]]:
    """One row per stack the passes did something to; `state`: the journal's, after them."""
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
            view = state.stacks.get(name)
            held = suspension(state, name, report.repo)
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
