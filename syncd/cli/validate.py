"""`syncd validate`: config, deployment files and templates checked with no AWS call.

Two ways (docs/commands.md#checking-before-a-push):

- plain `syncd validate`: the branch of every followed repo, each fetched into a scratch mirror;
- one tree of one repo: `--path DIR`, a working tree with its uncommitted and untracked files
  (what a developer is about to commit), or `--ref REF`, one commit (fetched, or with `--path`
  found in DIR's repository). The repo's settings come from the config, or are the repo
  defaults when there is no config file at all (a developer's checkout, a pre-commit hook).

Plain validate with `--secrets` also reads the config's secret files, as `syncd run` and a
reload do (left out by default: CI jobs that validate a config seldom hold its secrets).

Both report what a pass would refuse (every problem `load_stacks` finds, dependency cycles) and
lint each template with cfn-lint. They differ on a `stack-output` naming a stack that no
followed repo describes: plain validate only notes it (it may exist in the account, and configs
that validate today must keep validating), while a one-tree check fails it unless something
syncd can see knows the stack (the tree itself, another followed repo, the journal) or
`--external` names it: before a push is where a misspelt stack name is cheapest to fix.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Set
from pathlib import Path
from typing import Any

from syncd.cli.common import EXIT_FAILED, EXIT_OK, config_of
from syncd.core.text import printable
from syncd.errors import SyncdError, UsageError

_STACK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,127}")  # CloudFormation's


def cmd_validate(args: argparse.Namespace) -> int:
    if args.path is None and args.ref is None:
        if args.repo is not None or args.external:
            raise UsageError(
                "--repo and --external go with --path or --ref (plain validate checks every "
                "followed repo)"
            )
        config = config_of(args)
        if args.secrets:
            _read_secrets(config)
        return _validate_followed(config)
    if args.secrets:
        raise UsageError("--secrets goes with plain validate (it reads the config's files)")
    return _validate_one(args)


def _read_secrets(config: Any) -> None:
    """Read every secret file as `syncd run` and a reload would (webhook secrets, forge tokens,
    receivers' URLs and secrets, the dashboard's access files, the backup key): a ConfigError
    names each file that cannot be used, never what it holds."""
    from syncd.app import read_secrets, secret_files

    read_secrets(config, list)
    if secret_files(config):
        print(printable(f"{config.source}: every secret file can be read and used"))
    else:
        print(printable(f"{config.source}: names no secret file"))


def _validate_followed(config: Any) -> int:
    """Every followed repo's branch, as a pass would read it."""
    from syncd.core.deployments import load_stacks
    from syncd.core.targets import parse_key
    from syncd.sources.git import GitSource

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
            failed = _report(f"{repo.name} @ {commit[:12]}", loaded, region, {}) or failed
    # Not an error: a stack-output may name any stack of an account and region syncd deploys
    # to, which validate (no AWS call) cannot see; a pass waits for it, then holds its readers
    # if it is not there. One at a place no target reaches can never be read: that is one.
    places = set(config.targets())
    for upstream in sorted(set(needed) - described):
        readers = ", ".join(sorted(needed[upstream])[:5])
        place, _ = parse_key(upstream, config.aws.target.place)
        if place not in places:
            print(
                printable(
                    f"error: {upstream} (read by {readers}) is in an account and region no repo "
                    "or stack deploys to: syncd cannot read it (give a repo or stack that aws)"
                )
            )
            failed = True
            continue
        print(
            printable(
                f"note: {upstream} (read by {readers}) is described by no followed repo: "
                "it must already exist in the account"
            )
        )
    return EXIT_FAILED if failed else EXIT_OK


def _validate_one(args: argparse.Namespace) -> int:
    """One working tree or one commit of one repo (`--path`, `--ref`)."""
    from syncd.core.deployments import CommitTooLarge, load_stacks

    for name in args.external:
        if not _STACK_NAME.fullmatch(name):
            raise UsageError(printable(f"--external {name!r}: not a stack name"))
    config, repo = _settings(args)
    region = (config.aws.region if config else None) or "us-east-1"
    with tempfile.TemporaryDirectory(prefix="syncd-validate-") as tmp:
        try:
            title, open_tree = _locate(args, repo, Path(tmp))
        except UsageError:
            raise
        except SyncdError as exc:  # the ref cannot be fetched
            print(printable(f"{repo.name}: {exc}"))
            return EXIT_FAILED
        if config is None:
            from syncd.configfile import DEFAULT_CONFIG

            print(
                printable(
                    f"syncd: no config file ({DEFAULT_CONFIG} does not exist): checking with "
                    f"the repo defaults ({', '.join(repo.deployments)}, no stack_prefix)"
                ),
                file=sys.stderr,
            )
        try:
            loaded = load_stacks(repo, open_tree())
        except CommitTooLarge as exc:
            print(printable(f"{title}: refused, nothing of it would be applied: {exc}"))
            return EXIT_FAILED
        except UsageError:
            raise
        except SyncdError as exc:  # the working tree cannot be listed
            print(printable(f"{title}: {exc}"))
            return EXIT_FAILED
        known = set(loaded.stacks) | set(loaded.invalid) | set(args.external)
        looked_in = ["this working tree" if args.ref is None else "this commit"]
        if config is None:
            looked_in.append("no config names other repos or a journal")
        elif any(not spec.dependencies <= known for spec in loaded.stacks.values()):
            looked_in += _known_to_syncd(config, repo, Path(tmp), known)
        dangling = _dangling(loaded.stacks, known, "; ".join(looked_in))
        failed = _report(title, loaded, region, dangling)
    return EXIT_FAILED if failed else EXIT_OK


def _known_to_syncd(config: Any, repo: Any, scratch: Path, known: set[str]) -> list[str]:
    """Add to `known` the stacks the config's other repos describe and the journal knows;
    return where it looked. Only asked when the tree names a stack it does not describe
    (the other repos are fetched)."""
    looked_in = []
    others = [r for r in config.repos if r.name != repo.name]
    if others:
        known |= _described_by(others, scratch)
        looked_in.append("followed repos " + ", ".join(r.name for r in others))
    journal = _journal_stacks(config.state_dir)
    if journal is not None:
        known |= journal
        looked_in.append(f"the journal in {config.state_dir}")
    return looked_in


def _settings(args: argparse.Namespace) -> tuple[Any, Any]:
    """The config (None without one) and the settings of the repo checked."""
    from syncd.configfile import DEFAULT_CONFIG, config_path, load_config
    from syncd.core.config import RepoConfig

    named = getattr(args, "config", None) or os.environ.get("SYNCD_CONFIG")
    if not named and not DEFAULT_CONFIG.exists():
        if args.repo is not None:
            raise UsageError(f"--repo needs a config file; {DEFAULT_CONFIG} does not exist")
        if args.path is None:
            raise UsageError(
                "--ref needs the repo from a config file (-c), or --path DIR to find REF in "
                f"a local repository; {DEFAULT_CONFIG} does not exist"
            )
        root = Path(args.path).resolve()
        return None, RepoConfig(name=root.name or "repo", url=str(root))
    config = load_config(config_path(named))
    names = [r.name for r in config.repos]
    if args.repo is None and len(names) > 1:
        raise UsageError(
            f"--repo is needed: this config has {len(names)} repos ({', '.join(names)})"
        )
    chosen = next((r for r in config.repos if r.name == (args.repo or names[0])), None)
    if chosen is None:
        raise UsageError(
            printable(f"no repo {args.repo!r} in the config; there are: {', '.join(names)}")
        )
    return config, chosen


def _locate(args: argparse.Namespace, repo: Any, scratch: Path) -> tuple[str, Any]:
    """The title of the report, and how to open the tree it checks (a tree is listed as it
    is opened, which may raise CommitTooLarge). Raises SourceError and UsageError."""
    from syncd.sources.git import GitSource
    from syncd.sources.worktree import WorkTree, commit_tree, local_commit, open_local

    if args.path is None:  # a commit of the configured repo, fetched as plain validate does
        source = GitSource(repo, scratch)
        commit = source.resolve(args.ref)
        return f"{repo.name} @ {commit[:12]} ({args.ref})", lambda: source.tree(commit)
    local = open_local(Path(args.path))
    if args.ref is not None:  # found in the local repository, no fetch
        commit = local_commit(local, args.ref)
        return f"{repo.name} @ {commit[:12]} ({args.ref})", lambda: commit_tree(local, commit)
    return f"{repo.name} @ working tree {args.path}", lambda: WorkTree(local)


def _described_by(repos: list[Any], scratch: Path) -> set[str]:
    """The stacks other followed repos describe on their branch (fetched into `scratch`); a
    repo that cannot be read is noted, and its stacks are not known."""
    from syncd.core.deployments import load_stacks
    from syncd.sources.git import GitSource

    described: set[str] = set()
    for repo in repos:
        source = GitSource(repo, scratch)
        try:
            loaded = load_stacks(repo, source.tree(source.fetch().commit))
        except SyncdError as exc:
            print(printable(f"note: {repo.name}: {exc}; the stacks it describes are not known"))
            continue
        described |= set(loaded.stacks) | set(loaded.invalid)
    return described


def _journal_stacks(state_dir: Path) -> set[str] | None:
    """The stacks the journal knows (read only: a running daemon may hold it), or None when
    there is no journal, or it cannot be read (noted)."""
    from syncd.journal.store import Journal

    try:
        if not (state_dir / "journal").is_dir():
            return None
        journal = Journal.open(state_dir, writer=False, warn=lambda m: None)
    except (OSError, SyncdError) as exc:
        print(printable(f"note: the journal in {state_dir} cannot be read: {exc}"))
        return None
    try:
        return set(journal.state.stacks)
    finally:
        journal.close()


def _dangling(stacks: Mapping[str, Any], known: Set[str], looked_in: str) -> dict[str, str]:
    """The stacks with a `stack-output` naming a stack nothing known describes, and why."""
    from syncd.core.deployments import OutputRef

    out: dict[str, str] = {}
    for name, spec in stacks.items():
        reasons = [
            f"parameters.{key}: stack-output {value} names stack {value.stack!r}, which nothing "
            f"syncd can see describes ({looked_in}); if it lives in the account outside syncd, "
            f"say so with --external {value.stack}"
            for key, value in spec.parameters
            if isinstance(value, OutputRef) and value.stack not in known
        ]
        if reasons:
            out[name] = "; ".join(reasons)
    return out


def _report(title: str, loaded: Any, region: str, dangling: Mapping[str, str]) -> bool:
    """Print one tree's stacks, one line each with its problems indented under it; whether
    any is invalid or fails cfn-lint. Stacks on a dependency cycle, or in `dangling`, are
    invalid (not linted)."""
    from syncd.core.order import dependency_cycles
    from syncd.lint import lint_template

    # What a pass would refuse too: the stacks on a dependency cycle.
    cycles = dependency_cycles({n: s.dependencies for n, s in loaded.stacks.items()})
    held = set(cycles) | set(dangling)
    invalid = [(b.name, b.file, b.reason) for b in loaded.invalid.values()]
    invalid += [
        (n, loaded.stacks[n].deployment_file, f"dependency cycle: {cycle}")
        for n, cycle in cycles.items()
    ]
    invalid += [
        (n, loaded.stacks[n].deployment_file, reason)
        for n, reason in dangling.items()
        if n not in cycles
    ]
    lines = [f"  {name}: INVALID {file}: {reason}" for name, file, reason in sorted(invalid)]
    linted: dict[str, list[Any]] = {}  # a template shared by many stacks, linted once
    ok = failing = 0
    for name, spec in sorted(loaded.stacks.items()):
        if name in held:
            continue
        if spec.template_body not in linted:
            linted[spec.template_body] = lint_template(spec.template_body, region)
        findings = linted[spec.template_body]
        errors = [f for f in findings if f.is_error]
        if errors:
            failing += 1
        else:
            ok += 1
        where = f"{spec.deployment_file} (template {spec.template_file})"
        lines.append(f"  {name}: {'FAIL' if errors else 'ok'} {where}")
        for f in findings:
            lines.append(f"    {spec.template_file}:{f.line}: {f.severity} {f.rule} {f.message}")
    # Every stack counted once, as listed under it.
    counts = f"{ok} ok, {len(invalid)} invalid, {failing} failing cfn-lint"
    print(printable(f"{title}: {ok + len(invalid) + failing} stack(s): {counts}"))
    for line in lines:
        print(printable(line))
    return bool(invalid) or failing > 0
