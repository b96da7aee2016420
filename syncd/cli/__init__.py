"""The `syncd` command line (docs/commands.md): parse arguments, run a command, map errors to
exit codes. Each command lives in a module of this package; this one only dispatches.

Exit codes: 0 done; 1 a stack failed or is blocked (or the journal is damaged); 2 usage or
config error. `--format json` prints data on stdout only; logs always go to stderr.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from syncd import __version__, logs
from syncd.cli import backup, inspect, operate, plan, show, syncing, validate
from syncd.cli.common import EXIT_FAILED, EXIT_USAGE, approver
from syncd.errors import ConfigError, JournalCorrupt, StateLocked, SyncdError, UsageError

__all__ = ["approver", "build_parser", "main"]


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

    def action(
        group: argparse._SubParsersAction[argparse.ArgumentParser],
        path: str,
        help_text: str,
        description: str,
    ) -> argparse.ArgumentParser:
        """A command's action (`syncd drift accept`): `path` is the whole command."""
        p = group.add_parser(
            path.split()[-1],
            parents=[common],
            help=help_text,
            description=description,
            epilog=_EPILOGS.get(path),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(usage_of=p)
        return p

    command("run", "run the daemon in the foreground (SIGTERM stops, SIGHUP reloads)")
    p = command("sync", "one pass now: fetch, plan, apply, wait; then exit")
    p.add_argument("--stack", action="append", metavar="NAME", help="only this stack (repeatable)")
    p.add_argument("--repo", metavar="NAME", help="only this repo's pass")
    _wait(p)
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
    p = command("show", "what one version of a stack does: change set, values, template, events")
    p.add_argument("stack", metavar="STACK", help=_STACK_HELP)
    p.add_argument(
        "--version",
        type=int,
        metavar="N",
        help="from history (default: the one waiting, else the latest)",
    )
    p.add_argument("--no-events", action="store_true", help="do not ask CloudFormation for events")
    _format(p)
    p = command("validate", "check config, deployment files and templates (cfn-lint); no AWS calls")
    p.add_argument("--path", metavar="DIR", help="a working tree, uncommitted files included")
    p.add_argument("--ref", metavar="REF", help="one commit (with --path: found in DIR's repo)")
    p.add_argument("--repo", metavar="NAME", help="whose settings apply (when there are several)")
    p.add_argument(
        "--external",
        action="append",
        default=[],
        metavar="NAME",
        help="a stack outside syncd that stack-output may name (repeatable)",
    )
    p.add_argument(
        "--secrets",
        action="store_true",
        help="also read the config's secret files (tokens, webhook secrets), as run does",
    )
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
    _wait(p)
    _format(p)
    drift = command("drift", "drift checks: accept the drift found, so Git's state goes on")
    drift_sub = drift.add_subparsers(dest="drift_command", metavar="ACTION", required=True)
    p = action(
        drift_sub,
        "drift accept",
        "let the next pass apply Git's state over the drift found (on_drift: block)",
        "let the next pass apply Git's state over the drift a check found "
        "(on_drift: block holds the stack's changes until then)",
    )
    p.add_argument("stacks", nargs="+", metavar="STACK", help=_STACK_HELP)
    p.add_argument(
        "-m", "--message", dest="reason", required=True, metavar="REASON", help="why (journaled)"
    )
    p.set_defaults(repo=None)
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
    p = action(
        journal_sub,
        "journal verify",
        "check every record; name the first bad one",
        "check every record, locally (and in S3 with --remote); name the first bad one",
    )
    p.add_argument("--remote", action="store_true", help="check the S3 backup too")
    _format(p)
    return parser


# Each command's exit codes and an example, at the end of its --help, by the whole command
# (`drift accept` for an action); docs/commands.md has the same, in full.
_EPILOGS = {
    "run": "exit: 0 on SIGTERM; 2 on a config error\nexample: syncd run -c /etc/syncd/syncd.yaml",
    "sync": "exit: 0 all in sync; 1 a stack failed or is blocked, or a repo could not be read"
    " (or the running daemon did not answer); 2 usage or config error\n"
    "With a daemon running, it asks the daemon for the pass and waits for its answer.\n"
    "example: syncd sync --stack app-prod --format json",
    "status": "exit: 0; 1 if a stack is failed, blocked or stale; 2 for a stack the journal "
    "does not know\nexample: syncd status app network --watch 2",
    "history": "exit: 0; 2 for a stack the journal does not know\n"
    "example: syncd history app     (with or without the repo's stack_prefix)",
    "show": "exit: 0 shown (events or a template that cannot be read are said so); 1 the journal"
    " is damaged; 2 for a stack or version the journal does not know\n"
    "example: syncd show app --version 3 --format json",
    "validate": "exit: 0 all valid; 1 on any error; 2 usage or config error\n"
    "example: syncd validate -c syncd.yaml --secrets   (on the host, before a restart)\n"
    "example: syncd validate --path . --external shared-vpc   (before a commit; with no config"
    " file, the repo defaults)",
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
    "rollback": "exit: 0 when the earlier version is applied, or already was (the stack stays"
    " suspended until `syncd resume`); 1 the apply failed or is blocked, an upstream output it"
    " needs is gone, or the running daemon did not answer; 2 refused, with nothing journaled:"
    " a stack or version the journal does not know, a version that deleted the stack, never"
    " applied successfully or came before syncd deleted it, a commit the mirror no longer holds"
    " or that no longer describes the stack, drift that on_drift: block holds (`syncd drift"
    " accept` first), or aws.embedded with no daemon running\n"
    "With a daemon running, the daemon rolls back and this waits for its answer.\n"
    "example: syncd rollback app-prod --to 3",
    "drift": "actions: accept (see `syncd drift accept --help`)\n"
    "exit: that of the action; 2 with no action\n"
    'example: syncd drift accept app-prod -m "the hotfix is in Git now"',
    "drift accept": "exit: 0 when recorded (or queued for a daemon that has not answered yet);"
    " 2 for a stack the journal does not know or in which no drift was found, or no -m\n"
    'example: syncd drift accept app-prod -m "the hotfix is in Git now"',
    "backup": "exit: 0; 1 if S3 refused\nexample: syncd backup",
    "restore": "exit: 0; 1 if the backup is damaged or cannot be authenticated; 2 usage\n"
    "example: syncd restore --at 2026-11-30T12:00:00Z",
    "journal": "actions: verify (see `syncd journal verify --help`)\n"
    "exit: that of the action; 2 with no action\n"
    "example: syncd journal verify --remote",
    "journal verify": "exit: 0 every record checked is sound; 1 on any damage, or if S3 could"
    " not be read; 2 with no journal to check, or --remote without backup.url (or with"
    " aws.embedded)\n"
    "example: syncd journal verify --remote --format json",
}


_STACK_HELP = "a stack syncd knows, with or without its repo's stack_prefix"


def _wait(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wait",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="with a daemon running: how long to wait for its answer (default 3600)",
    )


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
        code = handler(args)
        sys.stdout.flush()  # here, where a reader that went away is handled (below)
        return code
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
    except BrokenPipeError:  # `syncd show app | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the exit's flush does not fail again
        return EXIT_FAILED


def cmd_run(args: argparse.Namespace) -> int:
    from syncd.configfile import config_path
    from syncd.daemon import Daemon

    return Daemon(config_path(getattr(args, "config", None))).run()


_COMMANDS = {
    "run": cmd_run,
    "sync": syncing.cmd_sync,
    "status": inspect.cmd_status,
    "history": inspect.cmd_history,
    "show": show.cmd_show,
    "validate": validate.cmd_validate,
    "plan": plan.cmd_plan,
    "approve": operate.cmd_approve,
    "suspend": operate.cmd_suspend,
    "resume": operate.cmd_resume,
    "rollback": operate.cmd_rollback,
    "drift": operate.cmd_drift,
    "backup": backup.cmd_backup,
    "restore": backup.cmd_restore,
    "journal": backup.cmd_journal,
}
