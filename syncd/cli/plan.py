"""`syncd plan`: what merging a ref would do, from change sets made and deleted again."""

from __future__ import annotations

import argparse
import os
import signal
from typing import Any

from syncd.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    config_of,
)
from syncd.errors import UsageError


def embedded_url(config: Any) -> str:
    """Where the embedded emulator of a `syncd run` on this config answers: its stacks live
    only inside that process. UsageError if it is not running."""
    from syncd.app import running_emulator
    from syncd.emulator import EMULATOR_CREDENTIALS

    url = running_emulator(config.state_dir)
    if url is None:
        raise UsageError(
            "plan needs the CloudFormation that holds the stacks: with aws.embedded, that is "
            "the emulator inside `syncd run`; start it (same config) and plan while it runs"
        )
    for key, value in EMULATOR_CREDENTIALS.items():  # botocore signs; the emulator takes any
        os.environ.setdefault(key, value)
    return url


def cmd_plan(args: argparse.Namespace) -> int:
    from syncd.app import open_app
    from syncd.core import plan as render_plan
    from syncd.journal.store import Journal
    from syncd.planner import Planner

    config = config_of(args)
    emulator_url = embedded_url(config) if config.aws.embedded else None
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
    app = open_app(config, journal=journal, read_only=True, emulator_url=emulator_url)
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
