"""Dependency order: `stack-output` parameters make one stack wait for another.

Pure. `dependency_cycles` finds the stacks that can never be ordered; the scheduler in
`syncd.apply_order` uses `ready` to start each stack once everything it needs has settled.
"""

from __future__ import annotations

from collections.abc import Mapping, Set


def dependency_cycles(deps: Mapping[str, Set[str]]) -> dict[str, str]:
    """Stacks that sit on a dependency cycle (within `deps`), each with a readable cycle."""
    cyclic: dict[str, str] = {}
    state: dict[str, int] = {}  # 1 visiting, 2 done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(deps.get(node, ())):
            if dep not in deps:
                continue
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                text = " -> ".join(cycle)
                for member in cycle:
                    cyclic.setdefault(member, text)
            elif dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for node in sorted(deps):
        if node not in state:
            visit(node)
    return cyclic


def topological(deps: Mapping[str, Set[str]]) -> list[str]:
    """A stable order in which every stack comes after those it depends on (cycles left out)."""
    cyclic = dependency_cycles(deps)
    done: set[str] = set()
    order: list[str] = []
    remaining = sorted(n for n in deps if n not in cyclic)
    while remaining:
        progressed = False
        for node in list(remaining):
            needs = {d for d in deps[node] if d in deps}
            if needs <= done:
                order.append(node)
                done.add(node)
                remaining.remove(node)
                progressed = True
        if not progressed:  # depends on a cyclic stack: it can never run
            break
    return order


def ready(deps: Mapping[str, Set[str]], finished: Set[str], started: Set[str]) -> list[str]:
    """Stacks not yet started whose in-set dependencies have all finished."""
    return sorted(
        node
        for node, needs in deps.items()
        if node not in started and all(d in finished or d not in deps for d in needs)
    )
