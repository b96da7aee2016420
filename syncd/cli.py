"""The `syncd` command line (docs/commands.md): parse arguments, run a command, map errors to
exit codes.

Exit codes: 0 done; 1 a stack failed or is blocked (or the journal is damaged); 2 usage or
config error. `--format json` prints data on stdout only; logs always go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from syncd import __version__, logs
from syncd.core.text import printable
from syncd.errors import ConfigError, JournalCorrupt, StateLocked, SyncdError, UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        default=argparse.SUPPRESS,
        help="config file (default: $SYNCD_CONFIG, else /etc/syncd/syncd.yaml)",
    )
    common.add_argument(
        "--log-level", default=argparse.SUPPRESS, choices=["debug", "info", "warning", "error"]
    )
    parser = argparse.ArgumentParser(
        prog="syncd",
        parents=[common],
        description="GitOps sync daemon for AWS CloudFormation.",
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            parents=[common],
            help=help_text,
            description=help_text,
            epilog=_EPILOGS.get(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(usage_of=p)  # a bad option is reported with this command's usage
        return p

    command("run", "run the daemon in the foreground (SIGTERM stops, SIGHUP reloads)")
    p = command("sync", "one pass now: fetch, plan, apply, wait; then exit")
    p.add_argument("--stack", action="append", metavar="NAME", help="only this stack (repeatable)")
    _format(p)
    p = command("status", "one row per stack")
    p.add_argument("stack", nargs="*", metavar="STACK", help="only these (prefix optional)")
    p.add_argument(
        "--watch", type=float, metavar="SECONDS", help="show it again every SECONDS (Ctrl-C ends)"
    )
    _format(p)
    p = command("history", "every version of every (or one) stack")
    p.add_argument("stack", nargs="?", metavar="STACK")
    _format(p)
    command("validate", "check config, deployment files and templates (cfn-lint); no AWS calls")
    p = command("plan", "what merging a ref would do: change sets made, shown, deleted")
    p.add_argument("--repo", metavar="NAME", help="the repo (needed when there are several)")
    p.add_argument("--ref", metavar="REF", help="a branch, tag, SHA or refs/pull/N/head")
    p.add_argument("--format", choices=["text", "markdown", "json"], default="text")
    p.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 0 when nothing would change, 2 when something would, 1 on an error",
    )
    p = command("approve", "execute the change set waiting for manual approval")
    p.add_argument("stack", metavar="STACK")
    p.add_argument(
        "--change-set",
        metavar="NAME_OR_ARN",
        help="approve only if this is the change set waiting (from status or history)",
    )
    p.add_argument(
        "--wait", type=float, default=600.0, metavar="SECONDS", help="how long to follow it"
    )
    p = command("suspend", "apply (and prune) nothing of these stacks until `syncd resume`")
    p.add_argument("stacks", nargs="*", metavar="STACK", help=_STACK_HELP)
    p.add_argument("--repo", metavar="NAME", help="the whole repo, stacks added later included")
    p.add_argument(
        "-m", "--message", dest="reason", default="", metavar="REASON", help="why (status shows it)"
    )
    _format(p)
    p = command("resume", "apply Git's state to suspended stacks again, at once")
    p.add_argument("stacks", nargs="*", metavar="STACK", help=_STACK_HELP)
    p.add_argument("--repo", metavar="NAME", help="the repo suspended with --repo")
    _format(p)
    p = command("rollback", "apply a stack's earlier version again, then suspend the stack")
    p.add_argument("stack", metavar="STACK", help=_STACK_HELP)
    p.add_argument(
        "--to", dest="version", type=int, required=True, metavar="VERSION", help="from history"
    )
    _format(p)
    _format(command("backup", "mirror the journal to S3 now (backup.url)"))
    p = command("restore", "rebuild the journal from S3 (backup.url)")
    p.add_argument("--at", metavar="TIME", help="as it was at TIME (ISO 8601), not the latest")
    p.add_argument("--force", action="store_true", help="replace a journal (kept beside it)")
    p.add_argument(
        "--partial", action="store_true", help="restore a damaged backup up to the damage"
    )
    p.add_argument("--lineage", metavar="ID", help="a lineage other than the newest")
    p.add_argument(
        "--unauthenticated",
        action="store_true",
        help="without backup.key_file: restore what the bucket holds, unauthenticated",
    )
    _format(p)
    journal = command("journal", "the journal itself")
    journal_sub = journal.add_subparsers(dest="journal_command", metavar="ACTION", required=True)
    p = journal_sub.add_parser(
        "verify",
        parents=[common],
        help="check every record; name the first bad one",
        description="check every record, locally (and in S3 with --remote); name the first bad one",
    )
    p.add_argument("--remote", action="store_true", help="check the S3 backup too")
    p.set_defaults(usage_of=p)
    _format(p)
    return parser


# Each command's exit codes and an example, at the end of its --help (docs/commands.md has
# the same, in full).
_EPILOGS = {
    "run": "exit: 0 on SIGTERM; 2 on a config error\nexample: syncd run -c /etc/syncd/syncd.yaml",
    "sync": "exit: 0 all in sync; 1 a stack failed or is blocked, or a repo could not be read;"
    " 2 usage or config error\nexample: syncd sync --stack app-prod --format json",
    "status": "exit: 0; 1 if a stack is failed, blocked or stale; 2 for a stack the journal "
    "does not know\nexample: syncd status app network --watch 2",
    "history": "exit: 0; 2 for a stack the journal does not know\n"
    "example: syncd history app     (with or without the repo's stack_prefix)",
    "validate": "exit: 0 all valid; 1 on any error\nexample: syncd validate -c syncd.yaml",
    "plan": "exit: 0; 1 on an error; with --detailed-exitcode 2 when something would change\n"
    "example: syncd plan --repo app --ref refs/pull/42/head --format markdown",
    "approve": "exit: 0 when the change set ran and succeeded; 1 otherwise\n"
    "example: syncd approve app-prod --change-set syncd-v7-1a2b3c4d5e6f7a8b",
    "suspend": "exit: 0 when recorded (or queued for a daemon that has not answered yet); 2 for"
    " a stack the journal does not know or a repo not in the config\n"
    'example: syncd suspend app-prod -m "freeze during the audit"',
    "resume": "exit: 0 when recorded and, with no daemon running, the pass it runs succeeded;"
    " 1 a resumed stack failed or is blocked; 2 usage, or aws.embedded with no daemon\n"
    "example: syncd resume --repo platform",
    "rollback": "exit: 0 when the earlier version is applied (the stack stays suspended until"
    " `syncd resume`); 1 the apply failed or is blocked; 2 an unknown version, a delete, a"
    " commit gone from the mirror, a daemon running, or aws.embedded\n"
    "example: syncd rollback app-prod --to 3",
    "backup": "exit: 0; 1 if S3 refused\nexample: syncd backup",
    "restore": "exit: 0; 1 if the backup is damaged or cannot be authenticated; 2 usage\n"
    "example: syncd restore --at 2026-11-30T12:00:00Z",
    "journal": "exit: 0; 1 on any damage; 2 with no journal to check\n"
    "example: syncd journal verify --remote",
}


_STACK_HELP = "a stack syncd knows, with or without its repo's stack_prefix"


def _format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["text", "json"], default="text")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would show the top-level usage; show the command's own
        getattr(args, "usage_of", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    # `syncd approve` wakes whatever holds the state with SIGUSR1: only the daemon listens;
    # any other command (a `sync`, say) must not die of it.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    # What syncd writes (journal, snapshots, Git mirrors, approval requests) is the service's
    # alone, whatever the caller's umask (the unit sets UMask=0077 as well).
    os.umask(0o077)
    logs.configure(level=getattr(args, "log_level", "info"))
    handler = _COMMANDS[args.command]
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"syncd: config error in {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, StateLocked) as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except JournalCorrupt as exc:
        print(f"syncd: the journal is damaged: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except SyncdError as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _config(args: argparse.Namespace) -> Any:
    from syncd.configfile import config_path, load_config

    return load_config(config_path(getattr(args, "config", None)))


def cmd_run(args: argparse.Namespace) -> int:
    from syncd.configfile import config_path
    from syncd.daemon import Daemon

    return Daemon(config_path(getattr(args, "config", None))).run()


def cmd_sync(args: argparse.Namespace) -> int:
    from syncd.app import open_app
    from syncd.reconcile import PassReport, observe_world

    config = _config(args)
    only = set(args.stack) if args.stack else None
    app = open_app(config)
    try:
        _deliver_requests(app)  # a suspension asked for while no daemon ran counts now
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


def _deliver_requests(app: Any) -> None:
    """Record the suspend/resume requests left for a daemon (see syncd.requests)."""
    import structlog

    from syncd.requests import deliver

    repos = [r.name for r in app.config.repos]
    deliver(app.config.state_dir, app.journal, repos, structlog.get_logger("syncd.requests"))


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


def _read_journal(args: argparse.Namespace) -> Any:
    from syncd.journal.store import Journal

    config = _config(args)
    return config, Journal.open(config.state_dir, writer=False, warn=lambda m: None)


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
    config, journal = _read_journal(args)
    try:
        return _show_status(args, config, journal)
    finally:
        journal.close()


def _show_status(args: argparse.Namespace, config: Any, journal: Any) -> int:
    from syncd import render
    from syncd.core.journal_state import STALE, status_rows

    rows = status_rows(journal.state)
    if args.stack:
        wanted = {_stack_name(config, journal.state, name) for name in args.stack}
        rows = [r for r in rows if r["stack"] in wanted]
    shown_repos = {r["repo"] for r in rows} if args.stack else set(journal.state.repos)
    if args.format == "json":
        print(render.as_json(rows))
    else:
        print(render.status_table(rows) if rows else "no stacks yet")
        for repo in sorted(journal.state.repos.values(), key=lambda r: r.repo):
            if repo.repo not in shown_repos:
                continue
            if repo.error:
                print(printable(f"repo {repo.repo}: {repo.error}"))
            if repo.pass_error:
                print(printable(f"repo {repo.repo}: its last pass failed: {repo.pass_error}"))
            if repo.suspended:
                print(printable(f"repo {repo.repo}: {repo.suspended.describe()}"))
        if config.backup.url:
            print(_backup_line(config, journal))
    bad = {"failed", "blocked", STALE}
    failing = any(
        journal.state.repos[r].pass_error for r in shown_repos if r in journal.state.repos
    )
    return EXIT_FAILED if failing or any(r["state"] in bad for r in rows) else EXIT_OK


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


def cmd_history(args: argparse.Namespace) -> int:
    from syncd import render

    config, journal = _read_journal(args)
    stack = _stack_name(config, journal.state, args.stack) if args.stack else None
    rows = [h.as_dict() for h in journal.state.history if stack in (None, h.stack)]
    if args.format == "json":
        print(render.as_json(rows))
    else:
        print(render.history_table(rows) if rows else "no history yet")
    return EXIT_OK


def _stack_name(config: Any, state: Any, name: str) -> str:
    """A stack as the user named it, with or without its repo's stack_prefix."""
    if name in state.stacks:
        return name
    prefixed = {r.stack_prefix + name for r in config.repos if r.stack_prefix} & set(state.stacks)
    if len(prefixed) == 1:
        return str(prefixed.pop())
    if prefixed:
        raise UsageError(f"{name!r} is ambiguous: say which of {sorted(prefixed)}")
    raise UsageError(printable(f"no stack {name[:200]!r} in the journal"))


def cmd_validate(args: argparse.Namespace) -> int:
    from syncd.core.deployments import load_stacks
    from syncd.core.order import dependency_cycles
    from syncd.lint import lint_template
    from syncd.sources.git import GitSource

    config = _config(args)
    region = config.aws.region or "us-east-1"
    failed = False
    described: set[str] = set()  # every stack a followed repo describes
    needed: dict[str, set[str]] = {}  # stack-output stack -> the stacks that read it
    with tempfile.TemporaryDirectory(prefix="syncd-validate-") as tmp:
        for repo in config.repos:
            # A scratch mirror, so validate never races a running daemon's fetches.
            source = GitSource(repo, Path(tmp))
            try:
                commit = source.fetch().commit
            except SyncdError as exc:
                print(printable(f"{repo.name}: {exc}"))
                failed = True
                continue
            loaded = load_stacks(repo, source.tree(commit))
            described |= set(loaded.stacks) | set(loaded.invalid)
            for name, spec in loaded.stacks.items():
                for upstream in spec.dependencies:
                    needed.setdefault(upstream, set()).add(name)
            # What a pass would refuse too: the stacks on a dependency cycle.
            cycles = dependency_cycles({n: s.dependencies for n, s in loaded.stacks.items()})
            invalid = [(b.name, b.file, b.reason) for b in loaded.invalid.values()]
            invalid += [
                (n, loaded.stacks[n].deployment_file, f"dependency cycle: {cycle}")
                for n, cycle in cycles.items()
            ]
            print(
                f"{repo.name} @ {commit[:12]}: {len(loaded.stacks) - len(cycles)} stack(s), "
                f"{len(invalid)} invalid"
            )
            for name, file, reason in sorted(invalid):
                print(printable(f"  {name}: INVALID {file}: {reason}"))
                failed = True
            linted: dict[str, list[Any]] = {}  # a template shared by many stacks, linted once
            for name, spec in sorted(loaded.stacks.items()):
                if name in cycles:
                    continue
                if spec.template_body not in linted:
                    linted[spec.template_body] = lint_template(spec.template_body, region)
                findings = linted[spec.template_body]
                errors = [f for f in findings if f.is_error]
                print(printable(f"  {name}: {'FAIL' if errors else 'ok'} ({spec.template_file})"))
                for f in findings:
                    where = f"{spec.template_file}:{f.line}"
                    print(printable(f"    {where}: {f.severity} {f.rule} {f.message}"))
                failed = failed or bool(errors)
    # Not an error: a stack-output may name any stack of the account, which validate (no AWS
    # call) cannot see; a pass waits for it, then holds its readers if it is not there.
    for upstream in sorted(set(needed) - described):
        readers = ", ".join(sorted(needed[upstream])[:5])
        print(
            printable(
                f"note: {upstream} (read by {readers}) is described by no followed repo: "
                "it must already exist in the account"
            )
        )
    return EXIT_FAILED if failed else EXIT_OK


def _beside_embedded(config: Any) -> Any:
    """The config of a `syncd run` on the embedded emulator, pointed at that emulator: its
    stacks live only inside that process."""
    import dataclasses
    import os

    from syncd.app import EMBEDDED_TEMPLATE_BUCKET, running_emulator
    from syncd.emulator import EMULATOR_CREDENTIALS

    url = running_emulator(config.state_dir)
    if url is None:
        raise UsageError(
            "plan needs the CloudFormation that holds the stacks: with aws.embedded, that is "
            "the emulator inside `syncd run`; start it (same config) and plan while it runs"
        )
    for key, value in EMULATOR_CREDENTIALS.items():  # botocore signs; the emulator takes any
        os.environ.setdefault(key, value)
    aws = dataclasses.replace(
        config.aws,
        embedded=False,
        endpoint_url=url,
        region=config.aws.region or "us-east-1",
        template_bucket=config.aws.template_bucket or EMBEDDED_TEMPLATE_BUCKET,
        calls_per_second=config.aws.calls_per_second or 1000.0,  # it throttles nothing
    )
    return dataclasses.replace(config, aws=aws)


def cmd_plan(args: argparse.Namespace) -> int:
    from syncd.app import open_app
    from syncd.core import plan as render_plan
    from syncd.journal.store import Journal
    from syncd.planner import Planner

    config = _config(args)
    if config.aws.embedded:
        config = _beside_embedded(config)
    names = [r.name for r in config.repos]
    if args.repo is None and len(names) > 1:
        raise UsageError(
            f"--repo is needed: this config has {len(names)} repos ({', '.join(names)})"
        )
    repo = next((r for r in config.repos if r.name == (args.repo or names[0])), None)
    if repo is None:
        raise UsageError(f"no repo {args.repo!r} in the config; there are: {', '.join(names)}")
    ref = args.ref or f"refs/heads/{repo.branch}"

    def stopped(signum: int, _: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds: the plan's change sets are still deleted

    signal.signal(signal.SIGTERM, stopped)
    # The journal is only read (a running daemon may hold it): it says what is deployed.
    journal = Journal.open(config.state_dir, writer=False, warn=lambda m: None)
    app = open_app(config, journal=journal, read_only=True)
    try:
        plan = Planner(app.cfn, journal.state).plan(repo, app.syncs[repo.name].source, ref)
    finally:
        app.close()
        journal.close()
    if args.format == "json":
        from syncd import render

        print(render.as_json(plan.as_json()))
    elif args.format == "markdown":
        print(render_plan.as_markdown(plan), end="")
    else:
        print(render_plan.as_text(plan))
    if plan.has_errors:
        return EXIT_FAILED
    if args.detailed_exitcode and plan.has_changes:
        return 2
    return EXIT_OK


def approver() -> str:
    """Who approves: the OS user this process runs as (not $USER, which anyone can set), with
    the user `sudo` ran it for when there is one, and the host."""
    import os
    import pwd

    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry (a container)
        user = f"uid {os.getuid()}"
    sudo = os.environ.get("SUDO_USER")
    via = f" (sudo by {sudo})" if sudo and sudo != user else ""
    return f"{user}{via}@{os.uname().nodename}"


def cmd_approve(args: argparse.Namespace) -> int:
    import os
    import time

    from syncd.approvals import Approval, Approvals
    from syncd.journal.store import Journal, lock_holder

    config = _config(args)
    journal = Journal.open(config.state_dir, writer=False, warn=lambda m: None)
    view = journal.state.stacks.get(args.stack)
    journal.close()
    attempt = view.attempt if view else None
    if view is None or attempt is None or not attempt.awaiting_approval or not attempt.change_set:
        state = view.state.value if view else "unknown to syncd"
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
            _deliver_requests(app)  # a suspension waiting counts before the approval
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


def _suspend_or_resume(args: argparse.Namespace, action: str) -> int:
    """With a daemon running, leave it a request and follow the journal until it is recorded;
    without one, take the lock and record it here (and, for a resume, run the pass)."""
    from syncd import render
    from syncd.journal.store import lock_holder

    config, journal = _read_journal(args)
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
        stack = _stack_name(config, state, name)
        repo = state.stacks[stack].repo
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
            recorded = {rec.data.get("request") for rec in journal.records(after=seen)}
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
    return "suspended" if action == "suspend" else "resumed"


def _rows(
    request: Any, state: Any, result: str, message: str | None, outcomes: dict[str, str]
) -> list[dict[str, Any]]:
    """One row per stack named (or for the repo), then one per other stack the pass run for a
    resume did something to (every stack of a repo resumed whole)."""
    from syncd.core.journal_state import suspension

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
    from syncd.app import open_app
    from syncd.journal.store import lock_holder

    config, journal = _read_journal(args)
    state = journal.state
    journal.close()
    stack = _stack_name(config, state, args.stack)
    repo = state.stacks[stack].repo
    if repo not in {r.name for r in config.repos}:
        raise UsageError(printable(f"{stack} is a stack of repo {repo!r}, not in the config"))
    target = _rollback_target(state, stack, args.version)
    holder = lock_holder(config.state_dir)
    if holder.held:
        pid = f" (pid {holder.pid})" if holder.pid is not None else ""
        raise UsageError(
            f"a syncd daemon{pid} is using {config.state_dir}: rollback applies the stack "
            "itself and cannot while the daemon runs. Stop the daemon, roll back, and start it "
            f"again (the stack stays suspended until `syncd resume`); or `syncd suspend {stack}`"
            " to freeze it meanwhile"
        )
    if config.aws.embedded:
        raise UsageError(
            "the stacks are in the embedded emulator, which lives only inside `syncd run`: "
            "there is no stack here to roll back"
        )
    app = open_app(config)
    try:
        _deliver_requests(app)  # suspensions asked for earlier count first
        outcome = app.syncs[repo].rollback(stack, args.version, target.commit, approver())
        view = app.journal.state.stacks.get(stack)
        row = next((h for h in reversed(app.journal.state.history) if h.stack == stack), None)
        held = app.journal.state.stacks[stack].suspended if view else None
        result = {
            "stack": stack,
            "repo": repo,
            "rollback_of": args.version,
            "version": row.version if row and row.rollback_of == args.version else None,
            "commit": target.commit,
            "outcome": outcome.value,
            "message": (view.message if view and view.message else "")
            or (held.describe() if held else ""),
        }
    finally:
        app.close()
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


def _rollback_target(state: Any, stack: str, version: int) -> Any:
    """The history row of `stack`'s `version` that a rollback applies again (the latest, when
    a retry repeated it). Only versions since syncd last deleted the stack count (version
    numbers start again after a delete); a delete, or a version never applied successfully,
    is refused."""
    from syncd.core.journal_state import Result

    done = (Result.SUCCEEDED, Result.NO_CHANGES)
    rows = [h for h in state.history if h.stack == stack]
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


def _mirror_store(config: Any) -> Any:
    from syncd.cloudformation import make_session
    from syncd.s3 import S3Store

    if not config.backup.url:
        raise UsageError("backup.url is not set in the config: there is no S3 backup")
    endpoint = config.aws.endpoint_url
    if config.aws.embedded:
        raise UsageError(
            "the embedded emulator lives only while syncd runs: its S3 cannot hold a backup "
            "to restore or verify from another process"
        )
    session = make_session(config.aws, endpoint)
    return S3Store(
        session,
        config.backup.url,
        endpoint_url=endpoint,
        sse=config.backup.sse,
        kms_key_id=config.backup.kms_key_id,
    )


def cmd_backup(args: argparse.Namespace) -> int:
    from syncd import render
    from syncd.app import backup_key, open_journal
    from syncd.journal.mirror import Mirror

    config = _config(args)
    store = _mirror_store(config)
    journal = open_journal(config)
    try:
        mirror = Mirror(
            journal, store, config.state_dir, config.backup.interval, key=backup_key(config)
        )
        sent = mirror.cycle()
        cursor = mirror.cursor
    finally:
        journal.close()
    result = {
        "url": store.url,
        "lineage": cursor.lineage,
        "uploaded_records": sent,
        "last_seq": cursor.seq,
        "last_hash": cursor.hash,
    }
    if args.format == "json":
        print(render.as_json(result))
    else:
        print(
            f"backup: {sent} new record(s) uploaded; {store.url}lineages/{cursor.lineage}/ "
            f"holds records 1..{cursor.seq}"
        )
    return EXIT_OK


def cmd_restore(args: argparse.Namespace) -> int:
    from syncd import render
    from syncd.app import backup_key
    from syncd.journal.restore import normalise_time, restore

    config = _config(args)
    key = backup_key(config)
    if key is None and not args.unauthenticated:
        raise UsageError(
            "backup.key_file is not set, so syncd cannot tell this backup from one forged by "
            "whoever can write to the bucket. Set it to the key the backup was written with, "
            "or pass --unauthenticated to restore it as it is"
        )
    store = _mirror_store(config)
    at = normalise_time(args.at) if args.at else None
    read = restore(
        store,
        config.state_dir,
        at=at,
        force=args.force,
        partial=args.partial,
        lineage_id=args.lineage,
        key=key,
    )
    result = {
        "url": store.url,
        "lineage": read.lineage.id,
        "records": read.last_seq,
        "last_time": read.last_time,
        "damage": read.damage,
        "authenticated": read.authenticated,
        "skipped": read.skipped,
        "unsigned_tail": read.unsigned_tail,
    }
    if args.format == "json":
        print(render.as_json(result))
    else:
        print(
            f"restored {read.last_seq} record(s) from {store.url}lineages/{read.lineage.id}/"
            + (f", up to {read.last_time}" if read.last_time else "")
        )
        if read.damage:
            print(f"stopped before damage: {read.damage}")
        for why in read.skipped:
            print(printable(f"skipped, not authenticated: {why}"))
        if read.unsigned_tail:
            print(f"left out {read.unsigned_tail} record(s) after the newest signed checkpoint")
        if not read.authenticated:
            print("warning: restored without authentication (no backup.key_file)")
    return EXIT_OK


def cmd_journal(args: argparse.Namespace) -> int:
    from syncd import render
    from syncd.journal.store import Journal, verify_journal

    config = _config(args)
    warnings: list[str] = []
    result: dict[str, Any] = {"ok": True, "local": None, "remote": None}
    has_local = (config.state_dir / "journal").is_dir()
    if not has_local and not args.remote:
        raise UsageError(
            f"there is no journal in {config.state_dir} to verify (a new host: "
            "`syncd restore`, or `journal verify --remote` to check the backup alone)"
        )
    try:
        if has_local:
            checked = verify_journal(config.state_dir, warnings.append)
            result["local"] = {
                "records": checked.last_seq,
                "last_hash": checked.last_hash,
                "torn_tail_bytes": checked.torn,
                "problem": None,
            }
    except JournalCorrupt as exc:
        result["ok"] = False
        result["local"] = {"problem": str(exc)}
    if args.remote:
        from syncd.journal.restore import verify_remote

        store = _mirror_store(config)
        local = None
        if result["ok"] and has_local:
            local = Journal.open(config.state_dir, writer=False, warn=warnings.append)
        from syncd.app import backup_key

        read = verify_remote(store, local, backup_key(config))
        result["remote"] = {
            "url": store.url,
            "lineage": read.lineage.id,
            "records": read.last_seq,
            "last_hash": read.last_hash,
            "deletions_visible": read.deleted is not None,
            "authenticated": read.authenticated,
            "skipped": read.skipped,
            "problem": read.damage,
        }
        if not read.authenticated:
            warnings.append("the backup was not authenticated (no backup.key_file)")
        warnings.extend(f"skipped, not authenticated: {why}" for why in read.skipped)
        result["ok"] = result["ok"] and not read.damage
    if args.format == "json":
        print(render.as_json(result))
    else:
        for where in ("local", "remote"):
            part = result[where]
            if part is None:
                continue
            if part["problem"]:
                print(f"{where}: DAMAGED: {part['problem']}")
            else:
                print(f"{where}: ok, {part['records']} record(s), last hash {part['last_hash']}")
        for warning in warnings:
            print(f"warning: {warning}")
    return EXIT_OK if result["ok"] else EXIT_FAILED


_COMMANDS = {
    "run": cmd_run,
    "sync": cmd_sync,
    "status": cmd_status,
    "history": cmd_history,
    "validate": cmd_validate,
    "plan": cmd_plan,
    "approve": cmd_approve,
    "suspend": cmd_suspend,
    "resume": cmd_resume,
    "rollback": cmd_rollback,
    "backup": cmd_backup,
    "restore": cmd_restore,
    "journal": cmd_journal,
}
