"""Which stack gets the next free apply slot: the critical path first, then fairness between repos.

Pure. Every repo's stacks share `concurrency` slots (one per stack being applied). When more
stacks are ready than slots are free, the one with the most stacks waiting behind it in a chain
goes first (its `height`), because a deploy ends no sooner than its longest chain; among equal
heights, the repo that holds the fewest slots goes first, so one large repo cannot starve the
others; then whoever asked first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    """A stack asking for a slot."""

    repo: str
    stack: str
    height: int  # 1 + the longest chain of stacks that wait for this one
    seq: int  # order of asking


def heights(deps: Mapping[str, Set[str]]) -> dict[str, int]:
    """For each stack in `deps`, 1 + the length of the longest chain of stacks (within `deps`)
    that wait for it: a stack nothing waits for has height 1. Heights on a cycle (whose stacks
    are never applied) mean nothing; the walk is iterative, so a long chain cannot overflow."""
    waiting_on: dict[str, set[str]] = {name: set() for name in deps}
    for name, needs in deps.items():
        for dep in needs:
            if dep in waiting_on and dep != name:
                waiting_on[dep].add(name)
    # Kahn's order from the stacks nothing waits for, up to their dependencies.
    remaining = {name: len(waiters) for name, waiters in waiting_on.items()}
    height = {name: 1 for name in deps}
    todo = [name for name, count in remaining.items() if count == 0]
    while todo:
        name = todo.pop()
        for dep in deps[name]:
            if dep not in remaining or dep == name:
                continue
            height[dep] = max(height[dep], height[name] + 1)
            remaining[dep] -= 1
            if remaining[dep] == 0:
                todo.append(dep)
    return height


def pick(waiting: Sequence[Request], held: Mapping[str, int]) -> int:
    """The index in `waiting` (not empty) of the request to grant next."""
    return min(
        range(len(waiting)),
        key=lambda i: (-waiting[i].height, held.get(waiting[i].repo, 0), waiting[i].seq),
    )
