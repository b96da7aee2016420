"""The operator's commands: `approve`, `suspend`, `resume`, `drift accept` and `rollback`."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

from syncd.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    approver,
    config_of,
    deliver_requests,
    read_journal,
    stack_name,
)
from syncd.core.text import printable
from syncd.errors import SyncdError, UsageError


def cmd_approve(args: argparse.Namespace) -> int:
    import os
    import time

    from syncd.approvals import Approval, Approvals
    from syncd.journal.store import Journal, lock_holder

    config = config_of(args)
    journal = Journal.open(config.state_dir, writer=False, warn=lambda m: None)
    try:
        args.stack = stack_name(config, journal.state, args.stack)  # prefix optional
        view = journal.state.stacks[args.stack]
    finally:
        journal.close()
    attempt = view.attempt
    if attempt is None or not attempt.awaiting_approval or not attempt.change_set:
        state = view.state.value
        raise UsageError(f"{args.stack} has no change set waiting for approval ({state})")
    waiting = attempt.change_set
    if args.change_set and args.change_set not in (waiting, waiting.split("/")[-2]):
        print(
            f"syncd: refused: {args.change_set} is not the change set waiting for "
            f"{args.stack}; that is {waiting} (version {attempt.version})",
            file=sys.stderr,
        )
        return EXIT_FAILED
    by = approver()
    Approvals(config.state_dir).request(Approval(args.stack, waiting, by))
    print(f"approving {args.stack} version {attempt.version}: {waiting}", file=sys.stderr)
    holder = lock_holder(config.state_dir)  # a daemon (its pid when the kernel confirms it)
    if holder.held:
        if holder.pid is not None:
            with contextlib.suppress(OSError):  # else the daemon finds it within its loop period
                os.kill(holder.pid, signal.SIGUSR1)
        outcome = _follow(config.state_dir, args.stack, waiting, time.monotonic() + args.wait)
    else:  # no daemon: this process answers its own request, as the daemon would
        from syncd.app import open_app

        if config.aws.embedded:
            Approvals(config.state_dir).done(Approval(args.stack, waiting, by))
            raise UsageError(
                "the change set is in the embedded emulator of a syncd that is no longer "
                "running; start `syncd run` and approve again"
            )
        app = open_app(config)
        try:
            deliver_requests(app)  # a suspension waiting counts before the approval
            report = app.syncs[view.repo].run_pass({args.stack})
        finally:
            app.close()
        result = report.outcomes.get(args.stack)
        outcome = result.value if result else "unknown"
    print(f"{args.stack}: {outcome}")
    return EXIT_OK if outcome in ("succeeded", "no_changes") else EXIT_FAILED


def _follow(state_dir: Path, stack: str, change_set: str, deadline: float) -> str:
    """Read the journal until the approval is answered and its execution has ended."""
    import time

    from syncd.core.journal_state import Kind
    from syncd.journal.store import Journal

    answered = False
    while time.monotonic() < deadline:
        journal = Journal.open(state_dir, writer=False, warn=lambda m: None)
        records = [r for r in journal.records() if r.data.get("stack") == stack]
        journal.close()
        for i, record in enumerate(records):
            if record.data.get("change_set") != change_set:
                continue
            if record.kind is Kind.APPROVAL_REFUSED:
                return f"refused: {record.data.get('reason')}"
            if record.kind is Kind.APPROVED:
                answered = True
                result = next((r for r in records[i:] if r.kind is Kind.RESULT), None)
                if result is not None:
                    return str(result.data.get("result"))
        time.sleep(0.2)
    return "executing (still running; see syncd status)" if answered else "not answered yet"


FOLLOW_SECONDS = 6.0  # how long suspend/resume wait for a daemon (it reads requests every 5 s)


def cmd_suspend(args: argparse.Namespace) -> int:
    return _suspend_or_resume(args, "suspend")


def cmd_resume(args: argparse.Namespace) -> int:
    return _suspend_or_resume(args, "resume")


def cmd_drift(args: argparse.Namespace) -> int:
    """`syncd drift accept`: Git's state may be applied over the drift a check found (with
    `on_drift: block`, the next pass applies what was held). A request, as `suspend` is."""
    return _suspend_or_resume(args, "drift_accept")


def _suspend_or_resume(args: argparse.Namespace, action: str) -> int:
    """With a daemon running, leave it a request and follow the journal until it is recorded;
    without one, take the lock and record it here (and, for a resume, run the pass)."""
    from syncd import render
    from syncd.journal.store import lock_holder

    config, journal = read_journal(args)
    state = journal.state
    journal.close()
    asked = _requests(args, config, state, action)
    holder = lock_holder(config.state_dir)
    if holder.held:
        rows = _ask_daemon(config.state_dir, asked, holder.pid, state.last_seq)
    else:
        rows = _record_here(config, asked)
    if args.format == "json":
        print(render.as_json(rows))
    else:
        headers = ["stack", "repo", "result", "outcome", "message"]
        print(render.table(headers, [[r[h] for h in headers] for r in rows]))
    bad = any(r["result"] == "refused" or r["outcome"] not in _FINE for r in rows)
    return EXIT_FAILED if bad else EXIT_OK


# What a resumed stack's pass may end in for `resume` to succeed (None: no pass ran here).
_FINE = {None, "in_sync", "succeeded", "no_changes", "suspended", "awaiting_approval"}


def _requests(args: argparse.Namespace, config: Any, state: Any, action: str) -> list[Any]:
    """The requests the command line asks for: one per repo concerned."""
    from syncd.core.text import bounded
    from syncd.requests import Request

    if bool(args.stacks) == bool(args.repo):
        args.usage_of.error("name the stacks (STACK...) or --repo NAME, one or the other")
    names = [r.name for r in config.repos]
    reason, by = bounded(getattr(args, "reason", "")), approver()
    if args.repo:
        if args.repo not in names:
            raise UsageError(f"no repo {args.repo!r} in the config; there are: {', '.join(names)}")
        return [Request(action, args.repo, (), reason, by)]
    grouped: dict[str, dict[str, None]] = {}
    for name in args.stacks:
        stack = stack_name(config, state, name)
        repo = state.stacks[stack].repo
        if action == "drift_accept":
            _has_drift(stack, state.stacks[stack])
        if repo not in names:
            raise UsageError(printable(f"{stack} is a stack of repo {repo!r}, not in the config"))
        grouped.setdefault(repo, {})[stack] = None
    return [Request(action, repo, tuple(s), reason, by) for repo, s in sorted(grouped.items())]


def _ask_daemon(state_dir: Path, asked: list[Any], pid: int | None, seen: int) -> list[Any]:
    """Leave the requests for the daemon, wake it, and follow the journal for their records
    (a few seconds: a daemon that has not answered by then records them when it reads them)."""
    import time

    from syncd.journal.store import Journal
    from syncd.requests import Requests

    box = Requests(state_dir)
    sent = [box.send(r) for r in asked]
    if pid is not None:
        with contextlib.suppress(OSError):  # else the daemon finds them within its loop period
            os.kill(pid, signal.SIGUSR1)
    deadline, answers = time.monotonic() + FOLLOW_SECONDS, {}
    while True:
        gone = {r.id for r in sent if not box.path(r).exists()}  # before the journal is read
        journal = Journal.open(state_dir, writer=False, warn=lambda m: None)
        try:
            state = journal.state
            # Only what `state` holds: the daemon may append after it was read, and a request
            # seen recorded must show its effect (not "still suspended" beside "resumed").
            recorded = {
                rec.data.get("request")
                for rec in journal.records_after(seen)
                if rec.seq <= state.last_seq
            }
        finally:
            journal.close()
        for r in sent:
            answers[r.id] = "recorded" if r.id in recorded else "refused" if r.id in gone else ""
        if all(answers.values()) or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    rows = []
    for r in sent:
        answer = answers[r.id]
        result = _done(r.action) if answer == "recorded" else answer or "queued"
        why = {
            "refused": "the daemon refused it (see its log)",
            "queued": f"the daemon has not recorded it yet; it will, from {box.path(r)}",
        }
        rows += _rows(r, state, result, why.get(result), {})
    return rows


def _record_here(config: Any, asked: list[Any]) -> list[Any]:
    """No daemon: record the requests under the lock; a resume then runs the pass of each repo
    concerned, as the daemon would at once (so stacks that read a resumed stack's outputs, and
    a resumed stack whose file is gone, are seen to as well)."""
    import structlog

    from syncd.app import open_app, open_journal
    from syncd.requests import deliver, record

    resume = asked[0].action == "resume"
    if resume and config.aws.embedded:
        raise UsageError(
            "the stacks are in the embedded emulator, which lives only inside `syncd run`: "
            "start it, then resume (with a daemon running, resume applies Git's state at once)"
        )
    app = open_app(config) if resume else None
    journal = app.journal if app is not None else open_journal(config)
    log = structlog.get_logger("syncd.requests")
    try:
        deliver(config.state_dir, journal, [r.name for r in config.repos], log)  # older first
        rows = []
        for r in asked:
            record(journal, r)
            outcomes: dict[str, str] = {}
            if app is not None:
                report = app.syncs[r.repo].run_pass()
                if report.source_error:
                    outcomes = dict.fromkeys([*r.stacks, ""], "source_error")
                outcomes |= {n: "invalid" for n in report.invalid}
                outcomes |= {n: o.value for n, o in report.outcomes.items()}
            rows += _rows(r, journal.state, _done(r.action), None, outcomes)
    finally:
        if app is not None:
            app.close()
        else:
            journal.close()
    return rows


def _done(action: str) -> str:
    return {"suspend": "suspended", "drift_accept": "accepted"}.get(action, "resumed")


def _has_drift(stack: str, view: Any) -> None:
    """Refuse to accept drift where no check has found any (since the last version)."""
    from syncd.core.journal_state import DriftResult

    drift = view.drift
    if drift is not None and drift.found:
        return
    if drift is None:
        why = "no drift check since its last version" if view.drift_checked_at else "never checked"
    elif drift.result is DriftResult.UNKNOWN:
        why = f"the last check could not say: {drift.reason}"
    else:
        why = f"in sync at the last check, at {drift.checked_at}"
    raise UsageError(printable(f"{stack} has no drift to accept ({why})"))


def _rows(
    request: Any, state: Any, result: str, message: str | None, outcomes: dict[str, str]
) -> list[dict[str, Any]]:
    """One row per stack named (or for the repo), then one per other stack the pass run for a
    resume did something to (every stack of a repo resumed whole)."""
    from syncd.core.journal_state import drift_message, suspension

    names = list(request.stacks) or [""]
    others = [n for n in sorted(outcomes) if n and n not in names]
    if request.stacks:
        others = [n for n in others if outcomes[n] not in ("in_sync", "suspended")]
    rows = []
    for name in names + others:
        repo = state.repos.get(request.repo)
        view = state.stacks.get(name)
        held = suspension(state, name, request.repo) if name else repo and repo.suspended
        text = message or (held.describe() if held else view.message if view else "")
        if request.action == "drift_accept" and not message and view is not None:
            text = drift_message(view.drift)
        if not message and held and result == "resumed":
            own = view is not None and view.suspended is held
            text = f"still {text}" + ("" if own else f" (its repo: resume --repo {request.repo})")
        rows.append(
            {
                "stack": name or None,
                "repo": request.repo,
                "result": result if name in names or not request.stacks else None,
                "outcome": outcomes.get(name),
                "message": text,
            }
        )
    return rows


def cmd_rollback(args: argparse.Namespace) -> int:
    """Apply a version's desired state again, here, under the state_dir lock; the stack is
    suspended first (see RepoSync.rollback), so no pass undoes it until `syncd resume`."""
    from syncd import render
    from syncd.journal.store import lock_holder

    config, journal = read_journal(args)
    try:
        state = journal.state
        stack = stack_name(config, state, args.stack)
        history = journal.full_history()
    finally:
        journal.close()
    repo = state.stacks[stack].repo
    if repo not in {r.name for r in config.repos}:
        raise UsageError(printable(f"{stack} is a stack of repo {repo!r}, not in the config"))
    target = _rollback_target(history, stack, args.version)
    holder = lock_holder(config.state_dir)
    if holder.held:
        outcome, result = _rollback_by_daemon(args, config, state, stack, repo, target, holder.pid)
    else:
        outcome, result = _rollback_here(args, config, stack, repo, target)
    if args.format == "json":
        print(render.as_json(result))
    else:
        new = f"version {result['version']}" if result["version"] else "no new version"
        print(
            printable(
                f"{stack}: {outcome.value}: {new}, the desired state of version {args.version} "
                f"(commit {target.commit[:12]}); {result['message']}"
            )
        )
        if outcome.value in _ROLLED_BACK:
            print(f"{stack} stays suspended until `syncd resume {stack}` applies Git's state")
    return EXIT_OK if outcome.value in _ROLLED_BACK else EXIT_FAILED


_ROLLED_BACK = {"succeeded", "no_changes", "in_sync"}


def _rollback_here(
    args: argparse.Namespace, config: Any, stack: str, repo: str, target: Any
) -> tuple[Any, dict[str, Any]]:
    from syncd.app import open_app

    if config.aws.embedded:
        raise UsageError(
            "the stacks are in the embedded emulator, which lives only inside `syncd run`: "
            "start it, and roll back while it runs"
        )
    app = open_app(config)
    try:
        deliver_requests(app)  # suspensions asked for earlier count first
        outcome = app.syncs[repo].rollback(stack, args.version, target.commit, approver())
        row = next((h for h in reversed(app.journal.state.history) if h.stack == stack), None)
        version = row.version if row and row.rollback_of == args.version else None
        result = _rollback_result(app.journal.state, stack, repo, args.version, target, version)
    finally:
        app.close()
    return outcome, result | {"outcome": outcome.value}


def _rollback_by_daemon(
    args: argparse.Namespace,
    config: Any,
    state: Any,
    stack: str,
    repo: str,
    target: Any,
    pid: int | None,
) -> tuple[Any, dict[str, Any]]:
    """The running daemon rolls back (syncd.asks); this waits for its answer."""
    from syncd.apply import Outcome
    from syncd.asks import Ask, ask_daemon, deadline_in
    from syncd.journal.store import Journal

    ask = Ask(
        "rollback", repo, (stack,), approver(), deadline_in(args.wait), args.version, target.commit
    )
    who = f" (pid {pid})" if pid is not None else ""
    print(f"syncd: asking the running daemon{who} to roll back {stack}", file=sys.stderr)
    [answer] = ask_daemon(config.state_dir, [ask], pid, state.last_seq)
    record = answer.record or {}
    if record.get("error"):
        if record.get("refused"):
            raise UsageError(str(record["error"]))
        raise SyncdError(str(record["error"]))
    outcome = answer.report().outcomes.get(stack, Outcome.FAILED)
    journal = Journal.open(config.state_dir, writer=False, warn=lambda m: None)
    try:
        result = _rollback_result(
            journal.state, stack, repo, args.version, target, record.get("version")
        )
    finally:
        journal.close()
    return outcome, result | {"outcome": outcome.value}


def _rollback_result(
    state: Any, stack: str, repo: str, rollback_of: int, target: Any, version: int | None
) -> dict[str, Any]:
    view = state.stacks.get(stack)
    held = view.suspended if view else None
    return {
        "stack": stack,
        "repo": repo,
        "rollback_of": rollback_of,
        "version": version,
        "commit": target.commit,
        "message": (view.message if view and view.message else "")
        or (held.describe() if held else ""),
    }


def _rollback_target(history: Any, stack: str, version: int) -> Any:
    """The history row of `stack`'s `version` that a rollback applies again (the latest, when
    a retry repeated it). Only versions since syncd last deleted the stack count (version
    numbers start again after a delete); a delete, or a version never applied successfully,
    is refused."""
    from syncd.core.journal_state import Result

    done = (Result.SUCCEEDED, Result.NO_CHANGES)
    rows = [h for h in history if h.stack == stack]
    deletes = [i for i, h in enumerate(rows) if h.action == "delete" and h.result in done]
    current = rows[deletes[-1] + 1 :] if deletes else rows
    applied = sorted({h.version for h in current if h.action != "delete" and h.result in done})
    known = ", ".join(map(str, applied)) or "none"
    mine = [h for h in current if h.version == version]
    if not mine:
        if any(h.version == version and h.action == "delete" for h in rows):
            why = f"version {version} of {stack} deleted the stack: there is nothing to apply"
        elif any(h.version == version for h in rows):
            why = f"version {version} of {stack} came before syncd deleted the stack"
        else:
            why = f"{stack} has no version {version}"
        raise UsageError(printable(f"{why}; the versions it can roll back to: {known}"))
    if mine[-1].action == "delete":
        raise UsageError(
            printable(f"version {version} of {stack} deleted the stack: there is nothing to apply")
        )
    good = [h for h in mine if h.result in done]
    if not good:
        raise UsageError(
            printable(
                f"version {version} of {stack} was never applied successfully "
                f"({mine[-1].result.value}); the versions it can roll back to: {known}"
            )
        )
    return good[-1]
