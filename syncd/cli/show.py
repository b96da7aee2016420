"""`syncd show`: what one version of a stack did, read without the state_dir lock.

The journal says what the version was and what its change set would change; the repo's Git
mirror in state_dir gives the two templates (read only: a running daemon may be fetching into
it); CloudFormation gives the events of the apply. Only the journal is needed: a template or the
events that cannot be read are said so in their part, and the rest is still shown.
"""

from __future__ import annotations

import argparse
from typing import Any

from syncd.cli.common import EXIT_OK, read_journal, stack_name
from syncd.core import show
from syncd.core.text import bounded, printable
from syncd.errors import SyncdError, UsageError


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
        _template_diff(config, chosen, before),
        _events(args, config, found, chosen, before),
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


# --- the templates, from the Git mirror -----------------------------------------------------


def _template_diff(config: Any, chosen: show.Apply, before: show.Apply | None) -> show.TemplateDiff:
    def at(a: show.Apply | None) -> show.TemplateAt | None:
        if a is None or a.action == "delete" or not a.template_file:
            return None
        return show.TemplateAt(a.version, a.commit, a.template_file)

    old_at, new_at = at(before), at(chosen)
    if chosen.action == "delete":
        return show.TemplateDiff(old_at, None, note="this version deletes the stack")
    if new_at is None:
        return show.TemplateDiff(old_at, None, note="the journal names no template file")
    texts: list[str | None] = []
    for a, where in ((before, old_at), (chosen, new_at)):
        if where is None:
            texts.append(None)
            continue
        assert a is not None
        text, why = _read_template(config, a.repo, where)
        if why is not None:
            return show.TemplateDiff(old_at, new_at, note=why)
        texts.append(text)
    return show.template_diff(old_at, texts[0], new_at, texts[1])


def _read_template(config: Any, repo: str, where: show.TemplateAt) -> tuple[str, str | None]:
    """A version's template from the repo's mirror, or why it cannot be read. Read only: no
    fetch, no lock, and a mirror that is not there is not made."""
    from syncd.sources.git import GitSource

    repo_config = next((r for r in config.repos if r.name == repo), None)
    if repo_config is None:
        return "", printable(f"repo {repo!r} is not in the config: its Git mirror is not read")
    source = GitSource(repo_config, config.state_dir)
    if not (source.path / "HEAD").exists():
        return "", printable(f"there is no Git mirror of repo {repo!r} in {config.state_dir}")
    if not source.has_commit(where.commit):
        return "", printable(
            f"commit {where.commit[:12]} of version {where.version} is gone from the mirror of "
            f"repo {repo!r} (a force-push?)"
        )
    try:
        blob = source.tree(where.commit).read(where.file)
    except (SyncdError, ValueError, OSError) as exc:
        return "", bounded(f"version {where.version}'s template cannot be read: {exc}")
    return blob.decode("utf-8", "replace"), None


# --- the events, from CloudFormation --------------------------------------------------------


def _events(
    args: argparse.Namespace,
    config: Any,
    found: list[show.Apply],
    chosen: show.Apply,
    before: show.Apply | None,
) -> show.Events:
    why = show.why_no_events(chosen)
    if why is not None:
        return show.Events(None, None, note=why)
    try:
        since, until = show.event_window(found, chosen)
    except ValueError:
        return show.Events(None, None, note="not read: the journal's times are not ISO 8601")
    window = show.iso(since), show.iso(until) if until else None
    if args.no_events:
        return show.Events(*window, note="not read (--no-events)")
    endpoint = config.aws.endpoint_url
    if config.aws.embedded:
        from syncd.cli.plan import embedded_url

        try:
            endpoint = embedded_url(config)
        except UsageError:
            return show.Events(
                *window,
                note="not read: with aws.embedded the stacks live in the emulator inside "
                "`syncd run`, which is not running",
            )
    from syncd.cloudformation import NotFound
    from syncd.errors import AwsError

    # By the StackId where syncd recorded one: a deleted stack's events are found only so.
    deleted = before.stack_id if before is not None and chosen.action == "delete" else None
    name = chosen.stack_id or deleted or chosen.stack
    try:
        found_events, complete = _gateway(config, endpoint).events_between(name, since, until)
    except NotFound:
        return show.Events(*window, note=f"CloudFormation does not know stack {name}")
    except AwsError as exc:
        return show.Events(*window, note=bounded(f"CloudFormation could not be read: {exc}"))
    items = tuple(
        show.Event(show.iso(e.timestamp), e.logical_id, e.resource_type, e.status, e.reason)
        for e in found_events
    )
    note = None if complete else "only the newest events were read: older ones may be missing"
    return show.Events(*window, items, note)


def _gateway(config: Any, endpoint: str | None) -> Any:
    """The CloudFormation of every target of `config`, for a few reads (botocore's failures
    as AwsError)."""
    from syncd.app import open_gateways
    from syncd.cloudformation import call

    return call("CloudFormation", open_gateways, config=config, endpoint=endpoint)
