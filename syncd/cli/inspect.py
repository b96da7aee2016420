"""`syncd status` and `syncd history`: what the journal says, read without the lock."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import structlog

from syncd.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    read_journal,
    stack_name,
)
from syncd.core.text import printable
from syncd.errors import UsageError


def cmd_status(args: argparse.Namespace) -> int:
    import time

    if args.watch is None:
        return _status_once(args)
    if args.format == "json" or args.watch <= 0:
        raise UsageError("--watch takes a number of seconds over 0, and text output")
    # Ctrl-C (or SIGTERM) ends it, even where SIGINT came in ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    code = EXIT_OK
    try:
        while True:
            if sys.stdout.isatty():
                print("\x1b[2J\x1b[H", end="")  # a fresh screen each time
            code = _status_once(args)
            print(f"(every {args.watch:g} s; Ctrl-C ends)", flush=True)
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return code


def _status_once(args: argparse.Namespace) -> int:
    config, journal = read_journal(args)
    try:
        return _show_status(args, config, journal)
    finally:
        journal.close()


def _show_status(args: argparse.Namespace, config: Any, journal: Any) -> int:
    from syncd import render
    from syncd.core.journal_state import STALE, status_rows

    rows = status_rows(journal.state)
    if args.stack:
        wanted = {stack_name(config, journal.state, name) for name in args.stack}
        rows = [r for r in rows if r["stack"] in wanted]
    shown_repos = {r["repo"] for r in rows} if args.stack else set(journal.state.repos)
    problems = _repo_problems(journal, shown_repos)
    if args.format == "json":
        print(render.as_json(rows))
        # stdout stays the documented list of stacks; what is wrong with a repo (the reason
        # `status` exits 1 with every stack fine) goes to the log, on stderr.
        log = structlog.get_logger("syncd.status")
        for repo, problem in problems:
            log.warning("status.repo_problem", repo=repo, problem=problem)
    else:
        print(render.status_table(rows) if rows else "no stacks yet")
        for repo, problem in problems:
            print(printable(f"repo {repo}: {problem}"))
        if config.backup.url:
            print(_backup_line(config, journal))
        for line in _notify_lines(config, journal):
            print(printable(line))
    bad = {"failed", "blocked", STALE}
    failing = any(
        journal.state.repos[r].pass_error or journal.state.repos[r].untrusted
        for r in shown_repos
        if r in journal.state.repos
    )
    return EXIT_FAILED if failing or any(r["state"] in bad for r in rows) else EXIT_OK


def _repo_problems(journal: Any, shown_repos: set[str]) -> list[tuple[str, str]]:
    """What is wrong with each repo shown, beside its stacks: (repo, problem), sorted."""
    found = []
    for repo in sorted(journal.state.repos.values(), key=lambda r: r.repo):
        if repo.repo not in shown_repos:
            continue
        if repo.error:
            found.append((repo.repo, repo.error))
        if repo.pass_error:
            found.append((repo.repo, f"its last pass failed: {repo.pass_error}"))
        if repo.suspended:
            found.append((repo.repo, repo.suspended.describe()))
        if repo.untrusted:
            u = repo.untrusted
            found.append(
                (
                    repo.repo,
                    f"blocked since {u['since']}: commit {u['commit'][:12]} is not applied: "
                    f"{u['reason']}",
                )
            )
    return found


def _backup_line(config: Any, journal: Any) -> str:
    from syncd.journal.mirror import Cursor, backlog

    cursor = Cursor.load(config.state_dir / "mirror.json")
    waiting, oldest = backlog(journal, cursor)
    if not waiting:
        return f"backup: all {cursor.seq} record(s) in {config.backup.url}"
    line = f"backup: {waiting} record(s) not yet in {config.backup.url}"
    line += f", the oldest from {oldest}" if oldest else ""
    if cursor.error:
        line += f"; failing since {cursor.error_since}: {cursor.error}"
    return line


def _notify_lines(config: Any, journal: Any) -> list[str]:
    """A line for each receiver of events or commit statuses that is failing or behind."""
    from syncd.outbox import Progress, progress_path

    names = [w.name for w in config.receivers()]
    names += [f"commit-status-{r.name}" for r in config.repos if r.commit_status is not None]
    lines = []
    for name in names:
        progress = Progress.load(progress_path(config.state_dir, name))
        if progress is None:
            continue
        behind = journal.state.last_seq - progress.seq
        if progress.error:
            lines.append(
                f"notify {name}: failing since {progress.failing_since}: {progress.error}; "
                f"the event it is on is from {progress.waiting_since}, {behind} record(s) behind"
            )
        elif progress.dropped:
            lines.append(f"notify {name}: {progress.dropped} event(s) refused by the receiver")
    return lines


def cmd_history(args: argparse.Namespace) -> int:
    from syncd import render

    config, journal = read_journal(args)
    try:
        stack = stack_name(config, journal.state, args.stack) if args.stack else None
        history = journal.full_history()
    finally:
        journal.close()
    rows = [h.as_dict() for h in history if stack in (None, h.stack)]
    if args.format == "json":
        print(render.as_json(rows))
    else:
        print(render.history_table(rows) if rows else "no history yet")
    return EXIT_OK
