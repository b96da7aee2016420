"""What one version of a stack did, read from outside the journal: its template from the repo's
Git mirror (read only: a running daemon may be fetching into it), and the stack's events from
CloudFormation. Used by `syncd show` and the dashboard; the journal's part is syncd.core.show.
"""

from __future__ import annotations

from typing import Any

from syncd.core import show
from syncd.core.text import bounded, printable
from syncd.errors import SyncdError


def template_diff(config: Any, chosen: show.Apply, before: show.Apply | None) -> show.TemplateDiff:
    """The template of `chosen` against that of the version before it, from the mirror."""

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
        text, why = read_template(config, a.repo, where)
        if why is not None:
            return show.TemplateDiff(old_at, new_at, note=why)
        texts.append(text)
    return show.template_diff(old_at, texts[0], new_at, texts[1])


def read_template(config: Any, repo: str, where: show.TemplateAt) -> tuple[str, str | None]:
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


def events(
    gateways: Any, found: list[show.Apply], chosen: show.Apply, before: show.Apply | None
) -> show.Events:
    """The stack's events during `chosen`'s apply, from CloudFormation (`gateways`: a
    Gateways, or a callable that makes one, or a note why they are not read)."""
    why = show.why_no_events(chosen)
    if why is not None:
        return show.Events(None, None, note=why)
    try:
        since, until = show.event_window(found, chosen)
    except ValueError:
        return show.Events(None, None, note="not read: the journal's times are not ISO 8601")
    window = show.iso(since), show.iso(until) if until else None
    if isinstance(gateways, str):
        return show.Events(*window, note=gateways)
    from syncd.cloudformation import NotFound
    from syncd.errors import AwsError

    # By the StackId where syncd recorded one: a deleted stack's events are found only so.
    deleted = before.stack_id if before is not None and chosen.action == "delete" else None
    name = chosen.stack_id or deleted or chosen.stack
    try:
        cfn = gateways() if callable(gateways) else gateways
        found_events, complete = cfn.events_between(name, since, until)
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
