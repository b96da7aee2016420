"""Which stacks a repo may change or delete: the ownership tag syncd puts on every stack.

Every change set syncd makes carries the tag `syncd:repo` naming the repo whose deployment file
describes the stack. Before changing a stack that exists, syncd reads the tags CloudFormation
shows for it (not only its own journal, which a restored backup could have brought):

- a stack tagged for this repo is this repo's;
- a stack tagged for another repo is never touched;
- an untagged stack is one syncd did not create: it is taken over only when the config says
  so (`adopt: true` for that stack), or when this repo's journal records syncd applying it
  (stacks syncd deployed before it tagged them; they get the tag with their next change).

A stack is deleted (prune) only when CloudFormation shows it tagged for this repo.
"""

from __future__ import annotations

from collections.abc import Mapping

from syncd.core.deployments import StackSpec
from syncd.core.journal_state import StackView

OWNER_TAG = "syncd:repo"


def owner_tags(repo: str) -> dict[str, str]:
    """The tag every change set of `repo` carries."""
    return {OWNER_TAG: repo}


def change_refused(
    repo: str, tags: Mapping[str, str], *, adopt: bool, applied_before: bool
) -> str | None:
    """Why `repo` may not change the existing stack that CloudFormation shows with `tags`, or
    None when it may. `applied_before`: this repo's journal records syncd applying it."""
    owner = tags.get(OWNER_TAG)
    if owner == repo:
        return None
    if owner is not None:
        return f"the stack belongs to repo {owner!r} (its {OWNER_TAG} tag); it is left alone"
    if adopt or applied_before:
        return None
    return (
        f"the stack exists and syncd did not create it (no {OWNER_TAG} tag); "
        "to let this repo take it over, set adopt: true for it in the config"
    )


def refused_for(
    spec: StackSpec,
    tags: Mapping[str, str],
    stack_id: str,
    *,
    view: StackView | None,
) -> str | None:
    """`change_refused` for the stack `spec` describes, as CloudFormation shows it (`tags` and
    its StackId) and as the journal knows it (`view`). A stack only in review (a CREATE change
    set not yet executed) is no different: it may be someone else's stack about to be made."""
    return change_refused(
        spec.repo,
        tags,
        adopt=spec.options.adopt,
        applied_before=applied_here(spec.repo, stack_id, view),
    )


def applied_here(repo: str, stack_id: str, view: StackView | None) -> bool:
    """Whether the journal shows `repo` applying this very stack (by its StackId, when the
    journal has it: journals from before it was recorded do not)."""
    if view is None or view.version is None:
        return False
    if (view.applied_by or view.repo) != repo:
        return False
    return view.stack_id is None or view.stack_id == stack_id


def delete_refused(repo: str, tags: Mapping[str, str]) -> str | None:
    """Why prune may not delete the stack CloudFormation shows with `tags`, or None."""
    owner = tags.get(OWNER_TAG)
    if owner == repo:
        return None
    if owner is not None:
        return f"the stack belongs to repo {owner!r} (its {OWNER_TAG} tag); it is left alone"
    return (
        f"CloudFormation does not show the stack as this repo's (no {OWNER_TAG} tag: created "
        "outside syncd, or by syncd before it tagged its stacks and not changed since); "
        "delete it by hand if it should go"
    )
