"""`syncd validate`: config, deployment files and templates checked with no AWS call."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from syncd.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    config_of,
)
from syncd.core.text import printable
from syncd.errors import SyncdError


def cmd_validate(args: argparse.Namespace) -> int:
    from syncd.core.deployments import load_stacks
    from syncd.core.order import dependency_cycles
    from syncd.lint import lint_template
    from syncd.sources.git import GitSource

    config = config_of(args)
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
