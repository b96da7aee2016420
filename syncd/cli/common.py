"""What the commands share: exit codes, reading the config and the journal, naming stacks."""

from __future__ import annotations

import argparse
import os
from typing import Any

from syncd.core.text import printable
from syncd.errors import UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def config_of(args: argparse.Namespace) -> Any:
    from syncd.configfile import config_path, load_config

    return load_config(config_path(getattr(args, "config", None)))


def read_journal(args: argparse.Namespace) -> Any:
    from syncd.journal.store import Journal

    config = config_of(args)
    return config, Journal.open(config.state_dir, writer=False, warn=lambda m: None)


def stack_name(config: Any, state: Any, name: str) -> str:
    """A stack as the user named it: its key, with or without its repo's stack_prefix, or a
    bare name that only one account and region has (`network` for `eu-west-1/network`)."""
    from syncd.core.targets import name_of

    if name in state.stacks:
        return name
    where, _, bare = name.rpartition("/")
    names = {bare} | {r.stack_prefix + bare for r in config.repos if r.stack_prefix}
    found = {f"{where}/{n}" if where else n for n in names} & set(state.stacks)
    if not found and not where:  # elsewhere than the default account and region
        found = {key for key in state.stacks if "/" in key and name_of(key) in names}
    if len(found) == 1:
        return str(found.pop())
    if found:
        raise UsageError(printable(f"{name[:200]!r} is ambiguous: say which of {sorted(found)}"))
    raise UsageError(
        printable(f"no stack {name[:200]!r} in the journal{_known(config, state, bare)}")
    )


def _known(config: Any, state: Any, bare: str) -> str:
    """What to say after "no stack X": the closest name syncd knows, else the ones it knows."""
    from syncd.core.targets import name_of
    from syncd.core.text import did_you_mean, listed

    if not state.stacks:
        return " (it has no stack yet)"
    short = {name_of(key) for key in state.stacks}
    for repo in config.repos:
        if repo.stack_prefix:
            short |= {n.removeprefix(repo.stack_prefix) for n in short}
    hint = did_you_mean(bare, short | set(state.stacks))
    return hint or f" (it knows {listed(sorted(state.stacks))})"


def approver() -> str:
    """Who approves: the OS user this process runs as (not $USER, which anyone can set), with
    the user `sudo` ran it for when there is one, and the host."""
    import pwd

    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry (a container)
        user = f"uid {os.getuid()}"
    sudo = os.environ.get("SUDO_USER")
    via = f" (sudo by {sudo})" if sudo and sudo != user else ""
    return f"{user}{via}@{os.uname().nodename}"


def deliver_requests(app: Any) -> None:
    """Record the suspend/resume requests left for a daemon (see syncd.requests)."""
    import structlog

    from syncd.requests import deliver

    repos = [r.name for r in app.config.repos]
    deliver(app.config.state_dir, app.journal, repos, structlog.get_logger("syncd.requests"))
