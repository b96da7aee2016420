"""`syncd show`: what one version of a stack did, read without the state_dir lock.

The journal says what the version was and what its change set would change; the repo's Git
mirror in state_dir gives the two templates and CloudFormation the events of the apply
(syncd.versions). Only the journal is needed: a template or the
events that cannot be read are said so in their part, and the rest is still shown.
"""

from __future__ import annotations

import argparse
from typing import Any

from syncd import versions
from syncd.cli.common import EXIT_OK, read_journal, stack_name
from syncd.core import show
from syncd.core.text import printable
from syncd.errors import UsageError


def cmd_show(args: argparse.Namespace) -> int:
    from syncd import render
    from syncd.core.journal_state import drift_row

    config, journal = read_journal(args)
    try:
        stack = _known_stack(config, journal.state, args.stack)
        records = [r for r in journal.records() if r.data.get("stack") == stack]
        current = journal.state.stacks.get(stack)
    finally:
        journal.close()
    found = show.applies(records, stack)
    chosen = show.choose(found, args.version)
    if chosen is None:
        if args.version is None:
            raise UsageError(printable(f"{stack} has no version yet (see syncd status)"))
        known = ", ".join(map(str, show.versions(found)))
        raise UsageError(printable(f"{stack} has no version {args.version}; its versions: {known}"))
    before = show.replaced(found, chosen)
    view = show.ShowView(
        chosen,
        before,
        versions.template_diff(config, chosen, before),
        versions.events(_gateways(args, config), found, chosen, before),
        drift_row(current) if current is not None and current.version == chosen.version else None,
    )
    if args.format == "json":
        print(render.as_json(show.as_json(view)))
    else:
        print(show.as_text(view))
    return EXIT_OK


def _known_stack(config: Any, state: Any, name: str) -> str:
    """The stack as `status` names it; else one that only `history` still shows (syncd
    deleted it), named the same way."""
    try:
        return stack_name(config, state, name)
    except UsageError:
        gone = {h.stack for h in state.history} - set(state.stacks)
        prefixed = {r.stack_prefix + name for r in config.repos if r.stack_prefix}
        found = {name} & gone or prefixed & gone
        if len(found) == 1:
            return str(found.pop())
        raise


def _gateways(args: argparse.Namespace, config: Any) -> Any:
    """What the events are read from: a callable that makes the gateways (they are made only
    when the events are read), or why they are not read."""
    if args.no_events:
        return "not read (--no-events)"
    endpoint = config.aws.endpoint_url
    if config.aws.embedded:
        from syncd.cli.plan import embedded_url

        try:
            endpoint = embedded_url(config)
        except UsageError:
            return (
                "not read: with aws.embedded the stacks live in the emulator inside "
                "`syncd run`, which is not running"
            )
    return lambda: _gateway(config, endpoint)


def _gateway(config: Any, endpoint: str | None) -> Any:
    """The CloudFormation of every target of `config`, for a few reads (botocore's failures
    as AwsError)."""
    from syncd.app import open_gateways
    from syncd.cloudformation import call

    return call("CloudFormation", open_gateways, config=config, endpoint=endpoint)
