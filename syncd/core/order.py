"""Dependency order: `stack-output` parameters make one stack wait for another.

Pure. `dependency_cycles` finds the stacks that can never be ordered; a repo's pass
(`syncd.reconcile`) uses `ready` to start each stack once everything it needs has settled.
"""

from __future__ import annotations

from collections.abc import Mapping, Set


def dependency_cycles(deps: Mapping[str, Set[str]]) -> dict[str, str]:
    """Every stack on a dependency cycle (within `deps`), each with a readable cycle.

    A stack is on a cycle when it shares a strongly connected component with another stack,
    or depends on itself (Tarjan's algorithm; iterative, so deep chains cannot overflow)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cyclic: dict[str, str] = {}
    counter = 0

    def edges(node: str) -> list[str]:
        return sorted(d for d in deps.get(node, ()) if d in deps)

    for root in sorted(deps):
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            succ = edges(node)
            if i < len(succ):
                work.append((node, i + 1))
                nxt = succ[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in deps.get(node, ()):
                    _describe(sorted(component), deps, cyclic)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return cyclic


def _describe(component: list[str], deps: Mapping[str, Set[str]], out: dict[str, str]) -> None:
    """Name a concrete cycle for each member: one description for all members on it."""
    members = set(component)
    for start in component:
        if start in out:
            continue
        path = [start]
        seen = {start}
        node = start
        while True:
            nexts = sorted(d for d in deps.get(node, ()) if d in members)
            if start in nexts:
                path.append(start)
                break
            node = next((n for n in nexts if n not in seen), nexts[0])
            if node in seen:  # cannot happen in an SCC walk that prefers unseen nodes
                path.append(node)
                break
            path.append(node)
            seen.add(node)
        # A ring of 2,000 stacks is one reason per stack: name a few links, count the rest.
        text = " -> ".join(path) if len(path) <= _SHOWN else _shortened(path)
        for member in path:
            out.setdefault(member, text)


_SHOWN = 8  # stacks of a cycle named in its description


def _shortened(path: list[str]) -> str:
    head = " -> ".join(path[: _SHOWN - 1])
    return f"{head} -> ... ({len(path) - _SHOWN} more) -> {path[-1]}"


def ready(deps: Mapping[str, Set[str]], finished: Set[str], started: Set[str]) -> list[str]:
    """Stacks not yet started whose in-set dependencies have all finished."""
    return sorted(
        node
        for node, needs in deps.items()
        if node not in started and all(d in finished or d not in deps for d in needs)
    )
